"""The `ncap` entry point: --version, and no abbreviated flags."""
import subprocess
import sys

import pytest

import ncap
from ncap.service.cli import main


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"ncap {ncap.__version__}"
    out = subprocess.run([sys.executable, "-m", "ncap.service.cli", "--version"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip() == f"ncap {ncap.__version__}"


@pytest.mark.parametrize("argv", [["rank", "--epoch", "1"], ["rank", "--trainab", "top"], ["powerlaw", "-", "--boot", "2"]])
def test_an_abbreviated_flag_is_an_error_not_a_guess(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_an_unknown_named_dataset_gets_the_known_ones_first_at_the_cli_and_in_python(capsys):
    """Before this, the memory pre-check read the data first and said `not a dataset this check can read`."""
    from ncap.models.data import DataError

    assert main(["rank", "--data", "digitz"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'digitz'" in err and "did you mean 'digits'?" in err and "mnist5k" in err
    assert "check can read" not in err and "Traceback" not in err
    with pytest.raises(DataError, match="did you mean 'digits'"):
        ncap.rank("digitz", progress=False)


def test_a_misspelt_zoo_name_gets_ncaps_own_names_first(capsys):
    from ncap.models.candidates import CandidateError

    assert main(["rank", "--candidates", "resnet18-mnsit"]) == 2
    err = capsys.readouterr().err
    assert "did you mean resnet18-mnist" in err and err.index("resnet18-mnist") < err.index("timm")
    with pytest.raises(CandidateError, match="did you mean resnet18-mnist"):
        ncap.rank("digits", "resnet18-mnsit", progress=False)


def test_a_timm_name_without_local_weights_is_refused_before_training_with_the_fix(capsys, monkeypatch, tmp_path):
    from ncap.models.candidates import CandidateError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    assert main(["rank", "--candidates", "resnet10t"]) == 2
    err = capsys.readouterr().err
    assert "no cached pretrained weights for 'resnet10t'" in err and "'resnet10t=random'" in err
    assert "resnet10t=path/to/weights.safetensors" in err and "Traceback" not in err
    with pytest.raises(CandidateError, match="resnet10t=random"):
        ncap.rank("digits", "resnet10t", progress=False)


def test_too_few_observations_for_beta_eff_are_refused_for_its_ranker_and_warned_otherwise(capsys, tmp_path):
    from pydantic import ValidationError

    from ncap.models.data import load_dataset
    from ncap.models.recipe import Recipe

    with pytest.raises(ValidationError, match="use epochs >= 2"):
        Recipe(epochs=1, ranker="beta_eff")
    assert Recipe(epochs=1, evals_per_epoch=3, ranker="beta_eff").beta_eff_shortfall is None
    assert main(["rank", "--epochs", "1", "--ranker", "beta_eff"]) == 2
    assert "needs at least 3 observations" in capsys.readouterr().err
    ds = load_dataset("digits")
    np_path = tmp_path / "d.npz"
    import numpy as np

    np.savez(np_path, x=ds.x[::20, 0], y=ds.y[::20])
    assert main(["rank", "--data", str(np_path), "--candidates", "resnet10t=random", "--epochs", "1", "--image-size",
                 "16", "--probe-width", "8", "--beta-batch-size", "8", "--num-workers", "0", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: β_eff's prediction needs at least 3 observations" in err and "use epochs >= 2" in err
    with pytest.warns(UserWarning, match="flagged fallback"):
        ncap.rank(str(np_path), "resnet10t=random", epochs=1, image_size=16, probe_width=8, beta_batch_size=8,
                  num_workers=0, progress=False, make_plots=False)


def test_rank_resumes_finished_candidates_detects_changes_and_prints_json(capsys, tmp_path):
    """A rerun into the same --out reuses exactly the candidates an earlier run finished (same data, same
    recipe) and says so; changed data or recipe, or --restart, retrains them; --json prints the document on
    stdout and everything else on stderr."""
    import json

    import numpy as np

    from ncap.models.data import load_dataset

    ds = load_dataset("digits")
    data = tmp_path / "d.npz"
    np.savez(data, x=ds.x[::20, 0], y=ds.y[::20])
    out = tmp_path / "out"
    tiny = ["--epochs", "2", "--evals-per-epoch", "1", "--image-size", "16", "--probe-width", "8", "--beta-batch-size",
            "8", "--num-workers", "0", "--quiet", "--no-plots", "--out", str(out)]
    argv = ["rank", "--data", str(data), "--candidates", "resnet10t=random,a:resnet10t=random", *tiny]
    assert main(argv) == 0
    records = sorted((out / "candidates").glob("*.json"))
    assert len(records) == 2
    records[1].unlink()  # as if the run had been interrupted after its first candidate
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is the document alone
    reused = {r["candidate"]: r["reused"] for r in doc["candidates"]}
    assert sorted(reused.values()) == [False, True] and "reusing 1 candidates" in captured.err
    assert "rank  candidate" in captured.err  # the table went to stderr
    assert main([*argv, "--restart"]) == 0
    assert "reusing" not in capsys.readouterr().err
    assert main([*argv, "--lr", "0.002"]) == 0  # another recipe: nothing reused
    assert "reusing" not in capsys.readouterr().err
    np.savez(data, x=ds.x[1::20, 0], y=ds.y[1::20])  # other data in the same file
    assert main(argv) == 0
    assert "reusing" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "reusing 2 candidates" in capsys.readouterr().err
