"""Continue a kept candidate to a full fine-tune: ``ncap finetune RUN_DIR`` and :func:`finetune`.

The kept model (``ncap rank --keep``: ``RUN_DIR/checkpoints/*.safetensors``) is trained further with the
ranking's recipe on the ranking's data and split (checked against the run's data fingerprint), for ``epochs``
epochs: backbone and probe start from the kept weights, with a new schedule over those epochs (the recipe's
warm-up, then cosine decay from its learning rate; the optimiser's state is not kept, so the continuation
restarts AdamW's moment estimates). What it reports: the final validation accuracy next to what the ranking
predicted for the candidate (β_eff's Algorithm 1) and what it observed last. The result is kept the same way,
as ``OUT/finetuned.safetensors``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    """What a continuation gave: the candidate, its epochs, the final validation accuracy, the ranking's
    prediction (± std) and last observation for it, and the file written."""

    candidate: str
    epochs: int
    val_accuracy: float | None
    predicted_accuracy: float | None
    predicted_std: float | None
    ranking_observed_accuracy: float | None
    checkpoint: Path | None


def _pick(doc, candidate: str):
    """The record of ``candidate`` (``"best"``: the top one that succeeded) with a kept model."""
    record = doc.best if candidate == "best" else next((r for r in doc.candidates if r.candidate == candidate), None)
    if record is None:
        names = ", ".join(r.candidate for r in doc.candidates)
        raise ValueError(f"no candidate {candidate!r} in this ranking; its candidates: {names}")
    if not record.checkpoint:
        raise ValueError(f"{record.candidate}'s model was not kept: rerun `ncap rank` with --keep K (K >= its rank, "
                         f"{record.rank})")
    return record


def finetune(run_dir: str | Path, candidate: str = "best", epochs: int = 10, *, data: str | None = None,
             out_dir: str | Path | None = None, progress: bool = True, **recipe_fields) -> FinetuneResult:
    """Continue ``candidate`` of the ranking in ``run_dir`` for ``epochs`` epochs (see the module docstring);
    ``data`` overrides the ranking's data source (it must be the same data); ``recipe_fields`` override fields
    of the ranking's recipe (e.g. ``lr``); the model is written to ``out_dir/finetuned.safetensors`` (default
    ``run_dir/finetuned``). ``ValueError`` names what is wrong."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ncap.models.candidates import CandidateSpec
    from ncap.models.harness import fine_tune_candidate
    from ncap.models.recipe import Recipe
    from ncap.service.documents import RankingDocument
    from ncap.service.executors import load_training_data
    from ncap.service.manifest import run_fingerprint

    run_dir = Path(run_dir)
    if not (run_dir / "ranking.json").is_file():
        raise ValueError(f"{run_dir}: no ranking.json (give the --out folder of an `ncap rank` run)")
    doc = RankingDocument.model_validate_json((run_dir / "ranking.json").read_text())
    record = _pick(doc, candidate)
    path = run_dir / record.checkpoint
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    config = Recipe.model_validate({**json.loads(meta["ncap_recipe"]), **recipe_fields, "epochs": int(epochs)})
    source = data if data is not None else doc.dataset.source
    marker = run_dir / "entry.json"
    if marker.is_file() and json.loads(marker.read_text()).get("data") != run_fingerprint(source, config)["data"]:
        raise ValueError(f"{source}: not the data {run_dir} was ranked on (its fingerprint differs); give that "
                         "data with --data")
    spec = CandidateSpec(record.candidate, meta["ncap_arch"], weights=path, source="file",
                         kwargs=json.loads(meta["ncap_timm_kwargs"]))
    probe = {k[len("probe."):]: v for k, v in load_file(str(path)).items() if k.startswith("probe.")}
    split = load_training_data(source, config)[1]
    out = Path(out_dir) if out_dir is not None else run_dir / "finetuned"
    run = fine_tune_candidate(spec, split.train, split.val, config, progress=progress, probe_state=probe,
                              checkpoint=out / "finetuned.safetensors")
    if run.status != "ok":
        raise ValueError(f"{record.candidate}: the continuation failed: {run.error}")
    return FinetuneResult(record.candidate, int(epochs), run.val_accuracy[-1] if run.val_accuracy else None,
                          record.predicted_accuracy, record.predicted_std, record.observed_accuracy,
                          out / "finetuned.safetensors" if run.checkpoint_bytes else None)
