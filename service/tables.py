"""The ranking table: the cells ``ncap rank`` prints (:func:`format_table`), a notebook shows
(:func:`html_table`) and the web page mirrors, from one function (:func:`table_rows`)."""
from __future__ import annotations

from typing import Any

from ncap.capacitance.ranking_rules import RANKING_RULES

# the document's types are not imported: documents.py imports this module (RankingDocument.table())
RankingDocument = CandidateRecord = Any

__all__ = ["ERROR_WIDTH", "allocation_summary", "format_table", "html_table", "table_rows"]
ERROR_WIDTH = 60  # longer errors are cut in the table and printed in full below it


def _status_cell(r: CandidateRecord) -> tuple[str, str | None]:
    """(table cell, full error or None when the cell holds it whole)."""
    status = r.status + (" (reused)" if r.reused else "")
    if getattr(r, "stopped_at_epoch", None) is not None:
        status += f" (trained {r.stopped_at_epoch:g} epochs: {r.stopped_reason})"
    if r.prediction_method == "fallback_last":
        status += " (fallback: " + "; ".join(r.prediction_flags) + ")"
    if r.status != "failed":
        return status, None
    err = (r.error or "").replace("\n", " ")
    if len(err) <= ERROR_WIDTH:
        return f"{status}: {err}", None
    return f"{status}: {err[:ERROR_WIDTH - 1]}… (see below)", r.error


def _cost_cells(r: CandidateRecord) -> tuple[str, str]:
    params = "—" if r.n_params is None else f"{r.n_params / 1e6:.2f}M"
    lat = r.latency_ms
    ms = "—" if not lat else " / ".join(f"{lat[b]:.2f}" for b in sorted(lat))
    return params, ms


def _score_cell(ranker: str, score: float | None, std: float | None = None) -> str:
    """A score under the rule ``ranker`` as the table shows it: in % with ± its std (a rule that has one), or as
    it is to 3 decimals (a rule whose score is not an accuracy, such as -TSE-EMA); "—" for none."""
    rule = RANKING_RULES[ranker]
    if score is None:
        return "—"
    if not rule.percent:
        return f"{score:.3f}"
    return f"{100 * score:.1f}" + (f" ± {100 * std:.1f}" if rule.has_std and std is not None else "")


def table_rows(doc: RankingDocument, pareto_only: bool = False) -> tuple[list[tuple[str, ...]], list[str]]:
    """(header + one row per candidate, full errors too long for their cell): the ranking table's cells, shared
    by the terminal table and the notebook view. ``pareto_only`` keeps the candidates on the score-latency
    Pareto front, fastest first. The score the candidates are ranked by gets its own column where its rule
    names one (``RankingRule.column``); the β_eff prediction is always shown."""
    ranker = doc.config.ranker
    column = RANKING_RULES[ranker].column
    extra = (f"ranked by: {column}",) if column else ()
    rows = [("rank", "candidate", *extra, "predicted acc (β_eff)", "P(best)", "last acc", "params", "ms/img b1 / b64",
             "status")]
    errors = []
    records = doc.candidates
    if pareto_only:
        records = sorted((r for r in records if r.pareto), key=lambda r: r.latency_ms.get(1, float("inf")))
    for r in records:
        pred = "—" if r.predicted_accuracy is None else f"{100 * r.predicted_accuracy:.1f} ± {100 * (r.predicted_std or 0):.1f}"
        last = "—" if r.observed_accuracy is None else f"{100 * r.observed_accuracy:.1f}"
        status, full_error = _status_cell(r)
        if full_error:
            errors.append(f"{r.candidate}: {full_error}")
        score = (_score_cell(ranker, r.score, r.score_std),) if extra else ()
        rows.append((str(r.rank), r.candidate + (" *" if r.pareto else ""), *score, pred,
                     "—" if r.p_best is None else f"{r.p_best:.2f}", last, *_cost_cells(r), status))
    return rows, errors


def format_table(doc: RankingDocument, pareto_only: bool = False) -> str:
    """Plain-text ranking table for the terminal (:func:`table_rows`); long errors are printed in full below."""
    rows, errors = table_rows(doc, pareto_only)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    shown = doc.candidates if not pareto_only else [r for r in doc.candidates if r.pareto]
    note = ["", "* on the Pareto front of the ranking score against batch-1 latency"] if any(r.pareto for r in shown) else []
    return "\n".join(lines + note + (["", "Errors:", *errors] if errors else []))


def html_table(doc: RankingDocument) -> str:
    """The ranking table as HTML (every cell escaped), for notebooks."""
    import html

    rows, errors = table_rows(doc)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    notes = "".join(f"<li>{html.escape(e)}</li>" for e in errors)
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p>Errors:</p><ul>{notes}</ul>" if notes else ""))


def allocation_summary(doc: RankingDocument) -> str:
    """How training was allocated (``doc.allocation``), in a few lines: the rungs (epoch, candidates compared,
    how many went on, why it stopped) and the time budget's plan against what training took."""
    a = doc.allocation or {}
    lines = []
    if a.get("strategy") == "halving":
        steps = [f"epoch {d['epoch']:g}: {len(d['ranked'])} compared, "
                 + (f"{len(d['continuing'])} went on" if d["reason"] == "halving" else
                    {"p_best": f"P(best) of {d['continuing'][0]} reached {doc.config.stop_p_best:g}",
                     "last rung": "the last rung", "time budget": "the time budget was spent"}.get(d["reason"], d["reason"]))
                 for d in a.get("decisions", [])]
        lines.append("Successive halving (eta " + f"{doc.config.halving_eta}): " + "; ".join(steps) + ".")
    if a.get("time_budget_s") is not None:
        spent = a.get("budget_spent_at")
        lines.append(f"Time budget {a['time_budget_s']:.0f} s: planned {a['planned_epochs']} epochs (estimated "
                     f"{a['estimated_s']:.0f} s of training); training took {a.get('training_s', 0):.0f} s"
                     + (f"; the budget ran out and the candidates were compared at epoch {spent:g}" if spent is not None
                        else "") + ".")
    return "\n".join(lines)
