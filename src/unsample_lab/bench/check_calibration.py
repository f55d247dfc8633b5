"""How well the edit check agrees with the shapes-world detector, over a bench's rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc


def _cell(value: float, fmt: str) -> str:
    return "n/a" if not np.isfinite(value) else format(value, fmt)


def check_calibration(rows: list[dict[str, Any]], threshold: float | None = None) -> dict[str, float]:
    """How well the edit check's score predicts the detector's verdict over the rows that have both:
    ROC AUC of the score (torchmetrics), and the silent failures (detector: failed, check: took) and
    false alarms (detector: took, check: failed) as shares of all those edits, by the check's own
    verdict (``check_took``) or, given ``threshold``, by score > threshold."""
    scored = [r for r in rows if isinstance(r.get("check_score"), float) and np.isfinite(r["check_score"])
              and r.get("success") in (True, False)]
    if not scored:
        return {"edits": 0}
    score = torch.tensor([float(r["check_score"]) for r in scored])
    took = torch.tensor([bool(r["success"]) for r in scored])
    both = bool(took.any()) and bool((~took).any())
    auc = float(binary_auroc(score, took.long())) if both else float("nan")
    passed = score > threshold if threshold is not None else torch.tensor([bool(r["check_took"]) for r in scored])
    warned = torch.tensor([r.get("representable") is False for r in scored])  # the input is beyond the model
    n, failed = len(scored), ~took
    return {"edits": n, "detector_success": float(took.float().mean()), "auc": auc,
            "threshold": threshold if threshold is not None else float("nan"),
            "silent_failures": float((passed & failed).sum()) / n, "false_alarms": float((~passed & took).sum()) / n,
            "failures_flagged": float((failed & (~passed | warned)).sum()) / max(int(failed.sum()), 1)}


def calibration_table(c: dict[str, float]) -> str:
    if not c.get("edits"):
        return "No edit has both a check score and a detector verdict.\n"
    return ("| edits | detector success | ROC AUC | threshold | silent failures | false alarms | failures flagged "
            "(check or representability warning) |\n|---|---|---|---|---|---|---|\n"
            f"| {c['edits']} | {c['detector_success']:.1%} | {_cell(c['auc'], '.3f')} | {_cell(c['threshold'], 'g')} | "
            f"{c['silent_failures']:.1%} | {c['false_alarms']:.1%} | {c['failures_flagged']:.1%} |\n")




def ladder_table(rows: list[dict[str, Any]]) -> str:
    """Per set: the edits, how many rungs they needed, the rung each kept, success and mean cost."""
    out = "| set | edits | success | mean NFE | max NFE | kept rung: edits |\n|---|---|---|---|---|---|\n"
    for set_ in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == set_ and r.get("rung") is not None]
        if not rs:
            continue
        ok = [r["success"] for r in rs if r.get("success") in (True, False)]
        kept: dict[str, int] = {}
        for r in rs:
            kept[str(r["rung"])] = kept.get(str(r["rung"]), 0) + 1
        nfe = [float(r["nfe"]) for r in rs]
        out += (f"| {set_} | {len(rs)} | {_cell(float(np.mean(ok)) if ok else float('nan'), '.1%')} | "
                f"{np.mean(nfe):.0f} | {max(nfe):.0f} | {', '.join(f'{k}: {v}' for k, v in kept.items())} |\n")
    return out
