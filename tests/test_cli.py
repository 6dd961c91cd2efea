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
