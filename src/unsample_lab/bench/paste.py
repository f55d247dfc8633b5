"""The edit bench's paste-back figures (`unsample.editing.paste`): each edit scored with the input's
own pixels pasted back outside its mask and without (the decoded pixels), on the background and
on the seam band.

- *Background*: the pixels outside the pair's exact mask (what the edit must not change), against
  the source. Paste-back makes exact the part of it outside the edit's own mask; what is left is
  the background the edit mask covers (a mask larger than the change). A background equal to the
  source byte for byte has no finite PSNR: a pair's PSNR is capped at `PSNR_CAP`, and the share of
  pairs whose background is exact is reported beside the mean.
- *Seam band*: the pixels paste-back blends, inside the edit mask and closer than seam + 1 pixels
  to its border (0 < w < 1 in `unsample.editing.paste`), against the exact target (the image the
  edit should give there): does the feather hurt or help where the decoded edit meets the photo?
  Empty (no figure) for seam 0, a hard cut.
- *Target*: the whole image against the exact target, and the detector's verdict, both ways.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unsample.editing.paste import seam_band
from unsample_lab.bench.stats import image_metrics

PSNR_CAP = 100.0
"""A pair's PSNR when its pixels equal the reference (dB): above any inexact 8-bit figure at the
bench's sizes (one level off in one value of a 64 x 64 x 3 image is 89 dB)."""
NAN = float("nan")
PASTE_KEYS = ("bg_psnr_paste", "bg_exact_paste", "seam_psnr", "seam_psnr_decoded", "target_psnr_paste",
              "success_paste", "seam_area")


def _capped(psnr: float) -> float:
    return PSNR_CAP if psnr == float("inf") else psnr


def paste_figures(res: Any, case: Any, decoded: np.ndarray) -> dict[str, Any]:
    """One edit's paste-back figures (`PASTE_KEYS`): ``res`` the `EditSample` (its ``image`` is
    pasted when ``res.paste.applied``), ``case`` the bench's `EditCase`, ``decoded`` its decoded pixels."""
    pasted = np.asarray(res.image) if res.image is not None else decoded
    applied = res.paste is not None and res.paste.applied
    bg = image_metrics(pasted, case.source, ~case.mask)
    row: dict[str, Any] = {
        "bg_psnr_paste": _capped(bg["psnr"]),
        "bg_exact_paste": float(np.array_equal(pasted[~case.mask], case.source[~case.mask])),
        "seam_psnr": NAN, "seam_psnr_decoded": NAN, "seam_area": 0.0,
        "target_psnr_paste": _capped(image_metrics(pasted, case.target)["psnr"]) if case.target is not None else NAN,
        "success_paste": case.judge(pasted) if case.judge else NAN,
    }
    if applied and res.mask is not None:
        band = seam_band(res.mask, decoded.shape[:2], res.paste.seam)
        row["seam_area"] = float(band.mean())
        if case.target is not None and band.any():
            row["seam_psnr"] = _capped(image_metrics(pasted, case.target, band)["psnr"])
            row["seam_psnr_decoded"] = _capped(image_metrics(decoded, case.target, band)["psnr"])
    return row


def _cell(value: float, spec: str, scale: float = 1.0, unit: str = "") -> str:
    return f"{scale * value:{spec}}{unit}" if np.isfinite(value) else "n/a"


def paste_table(summary: list[dict[str, Any]], kind: str = "all", set_: str | None = None) -> str:
    """The summary rows' paste-back figures, decoded | pasted side by side (one markdown table)."""
    header = ("| set | method | control | mask | pairs | background PSNR dB decoded \\| pasted | exact background "
              "(pasted) | seam band PSNR dB decoded \\| pasted | seam band area | PSNR to exact target dB decoded \\| "
              "pasted | edit success decoded \\| pasted |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary:
        if r["kind"] == kind and (set_ is None or r["set"] == set_):
            lines.append(
                f"| {r['set']} | {r['method']} | {r['control']} | {r['mask']} | {r['pairs']} | "
                f"{_cell(r['bg_psnr'], '.2f')} \\| {_cell(r['bg_psnr_paste'], '.2f')} | "
                f"{_cell(r['bg_exact_paste'], '.0f', 100, '%')} | {_cell(r['seam_psnr_decoded'], '.2f')} \\| "
                f"{_cell(r['seam_psnr'], '.2f')} | {_cell(r['seam_area'], '.1f', 100, '%')} | "
                f"{_cell(r['target_psnr'], '.2f')} \\| {_cell(r['target_psnr_paste'], '.2f')} | "
                f"{_cell(r['success'], '.0f', 100, '%')} \\| {_cell(r['success_paste'], '.0f', 100, '%')} |")
    return "\n".join(lines) + "\n"
