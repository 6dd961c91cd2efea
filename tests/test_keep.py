"""`ncap rank --keep K` (issue 23): the top K candidates' fine-tuned models are kept next to ranking.json, and a
kept file loads in plain timm and torch (no ncap class) and gives the validation accuracy the ranking logged."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from timm.data import create_transform
from torch import nn

from ncap.models.data import TransformedImages, load_dataset
from ncap.models.recipe import Recipe
from ncap.service.cli import main
from ncap.service.executors import load_training_data


def load_kept_model(path) -> tuple[nn.Module, dict]:
    """What a user writes: timm's backbone and a torch Sequential probe from the file's tensors and metadata."""
    with safe_open(str(path), "pt") as f:
        meta = {k: (v if k == "ncap_format" or k == "ncap_arch" else json.loads(v)) for k, v in f.metadata().items()}
    tensors = load_file(str(path))
    backbone = timm.create_model(meta["ncap_arch"], pretrained=False, num_classes=0, **meta["ncap_timm_kwargs"])
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
    weights = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("probe.") and k.endswith(".weight"))
    layers: list[nn.Module] = []
    for i, (_idx, w) in enumerate(weights):
        layers += [nn.Linear(w.shape[1], w.shape[0])] + ([nn.ReLU()] if i < len(weights) - 1 else [])
    probe = nn.Sequential(*layers)
    probe.load_state_dict({k[len("probe."):]: v for k, v in tensors.items() if k.startswith("probe.")})
    return nn.Sequential(backbone, probe).eval(), meta


@pytest.mark.parametrize("trainable", ["all", "top"])
def test_kept_models_load_in_plain_timm_and_give_the_logged_accuracy(tmp_path, capsys, trainable):
    ds = load_dataset("digits")
    data = tmp_path / "d.npz"
    np.savez(data, x=ds.x[::6, 0], y=ds.y[::6])
    out = tmp_path / "out"
    args = ["rank", "--data", str(data), "--candidates", "resnet10t=random,mobilenetv3_small_050=random,b:resnet10t=random",
            "--epochs", "2", "--image-size", "32", "--probe-width", "16", "--beta-batch-size", "16", "--num-workers",
            "0", "--quiet", "--no-plots", "--out", str(out), "--trainable", trainable, "--keep", "2",
            "--augmentation", "none"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "ranking.json").read_text())
    kept = [r for r in doc["candidates"] if r["checkpoint"]]
    assert sorted(r["rank"] for r in kept) == [1, 2] and len(list((out / "checkpoints").iterdir())) == 2
    assert all((out / r["checkpoint"]).stat().st_size == r["checkpoint_bytes"] for r in kept)
    assert f"Kept #1 {kept[0]['candidate'] if kept[0]['rank'] == 1 else kept[1]['candidate']}" in printed
    config = Recipe(image_size=32, epochs=2, probe_width=16, beta_batch_size=16, trainable=trainable)
    val = load_training_data(str(data), config)[1].val
    for record in kept:
        model, meta = load_kept_model(out / record["checkpoint"])
        assert meta["ncap_class_names"] == [str(c) for c in val.class_names] or len(meta["ncap_class_names"]) == 10
        cfg = meta["ncap_data_config"]
        transform = create_transform(**{**cfg, "input_size": tuple(cfg["input_size"])}, is_training=False)
        loader = torch.utils.data.DataLoader(TransformedImages(val, transform, cfg["input_size"][0]), batch_size=64)
        with torch.no_grad():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
        logged = record["val_accuracy"][-1]
        # 'all': the same computation; 'top': the logged accuracy read float16 cached activations
        assert correct / len(val.y) == pytest.approx(logged, abs=1e-9 if trainable == "all" else 2.5 / len(val.y))
        assert meta["ncap_val_accuracy"] == pytest.approx(logged)
    assert main([*args, "--keep", "0", "--restart"]) == 0  # keep none: the folder is emptied
    assert not list((out / "checkpoints").glob("*.safetensors"))


def test_the_readme_example_loads_a_kept_model_and_classifies_an_image(tmp_path, capsys):
    """The README's "Use the winner" block, run as written on a kept model and a digits image."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Use the winner"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    ds = load_dataset("digits")
    data = tmp_path / "d.npz"
    np.savez(data, x=ds.x[::6, 0], y=ds.y[::6])
    assert main(["rank", "--data", str(data), "--candidates", "resnet10t=random", "--epochs", "2", "--image-size", "32",
                 "--probe-width", "16", "--beta-batch-size", "16", "--num-workers", "0", "--quiet", "--no-plots",
                 "--out", str(tmp_path / "out")]) == 0
    kept = json.loads((tmp_path / "out" / "ranking.json").read_text())["candidates"][0]["checkpoint"]
    Image.fromarray((ds.x[1, 0] * 255 / ds.x.max()).astype(np.uint8)).save(tmp_path / "cell.png")
    code = code.replace("runs/rank/checkpoints/<the file named in ranking.json>.safetensors", str(tmp_path / "out" / kept))
    (tmp_path / "example.py").write_text(code)
    r = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() in [str(c) for c in range(10)]


def test_finetune_continues_the_kept_model_and_reports_against_the_prediction(tmp_path, capsys):
    """`ncap finetune RUN_DIR` starts from the kept weights (at a vanishing learning rate it keeps the kept
    model's accuracy, far above a fresh start), writes the continued model, and refuses what cannot be done."""
    import ncap

    ds = load_dataset("digits")
    data = tmp_path / "d.npz"
    np.savez(data, x=ds.x[::2, 0], y=ds.y[::2])
    run_dir = tmp_path / "run"
    tiny = ["--image-size", "32", "--probe-width", "64", "--beta-batch-size", "16", "--num-workers", "0", "--quiet",
            "--no-plots", "--augmentation", "none"]
    assert main(["rank", "--data", str(data), "--candidates", "resnet10t=random", "--epochs", "3", *tiny,
                 "--out", str(run_dir)]) == 0
    kept = json.loads((run_dir / "ranking.json").read_text())["candidates"][0]
    capsys.readouterr()
    assert main(["finetune", str(run_dir), "--epochs", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "resnet10t=random: 2 more epochs, last validation accuracy" in printed and "the ranking predicted" in printed
    assert (run_dir / "finetuned" / "finetuned.safetensors").is_file()
    # the continuation starts where the ranking stopped: with lr ~ 0 the accuracy stays the kept model's
    still = ncap.finetune(run_dir, epochs=1, out_dir=tmp_path / "ft", progress=False, lr=1e-12)
    assert kept["val_accuracy"][-1] > 0.3  # far above a fresh start's chance level (0.1)
    assert still.val_accuracy == pytest.approx(kept["val_accuracy"][-1], abs=0.03)
    assert still.predicted_accuracy == kept["predicted_accuracy"]
    # refusals: a ranking without kept models, a name that is not there, other data
    assert main(["rank", "--data", str(data), "--candidates", "resnet10t=random", "--epochs", "2", *tiny, "--out",
                 str(tmp_path / "nokeep"), "--keep", "0"]) == 0
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "nokeep"), "--epochs", "1"]) == 2
    assert "was not kept: rerun `ncap rank` with --keep" in capsys.readouterr().err
    assert main(["finetune", str(run_dir), "--candidate", "nope", "--epochs", "1"]) == 2
    assert "no candidate 'nope'" in capsys.readouterr().err
    np.savez(data, x=ds.x[1::2, 0], y=ds.y[1::2])
    assert main(["finetune", str(run_dir), "--epochs", "1"]) == 2
    assert "not the data" in capsys.readouterr().err
