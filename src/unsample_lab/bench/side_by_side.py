"""``python -m unsample_lab.bench.side_by_side DIR_A DIR_B``: two models' reconstruction runs, row by row.

Each folder is an ``unsample bench reconstruction`` run (of one model each, over the same scenes:
same ``--scenes`` and ``--seed``). The table pairs the rows both runs have (same method, steps and
guidance) and gives each model's MSE over its own autoencoder floor and its seconds per image, so
two models of one world compare at equal network calls (docs/benchmarks.md: the embedded UNet
model against the embedded flow model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from unsample.errors import InputError
from unsample_lab.bench.reconstruction import summarise


def _run(folder: str) -> dict[str, Any]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise InputError(f"{path} does not exist; give folders written by 'unsample bench reconstruction'")
    run = json.loads(path.read_text(encoding="utf-8"))
    if "per_image" not in run:
        raise InputError(f"{folder} is not a reconstruction run; give 'unsample bench reconstruction' folders")
    return run


def side_by_side(folder_a: str, folder_b: str) -> str:
    """The markdown table of the rows two reconstruction runs share, model A beside model B."""
    a, b = _run(folder_a), _run(folder_b)
    images = [sorted({r["image"] for r in run["per_image"]}) for run in (a, b)]
    inputs = [{k: run.get("bench", {}).get(k) for k in ("seed", "images_dir", "prompts_file")} for run in (a, b)]
    if images[0] != images[1] or inputs[0] != inputs[1]:
        raise InputError("the two runs used different scenes; run both with the same --scenes and --seed")
    rows = [{r["row"]: r for r in summarise(run["per_image"]) if r["method"] != "autoencoder"} for run in (a, b)]
    shared = [k for k in rows[0] if k in rows[1]]
    if not shared:
        raise InputError("the two runs share no row (method, steps, guidance); run both with the same settings")
    name_a, name_b = (f"{run.get('model', '?')} ({str(run.get('model_fingerprint', ''))[:8]})" for run in (a, b))
    out = [f"A = {name_a}, B = {name_b}; {len(images[0])} images; x floor = MSE over each model's own autoencoder floor",
           "", "| method | steps | guidance | NFE A / B | A x floor | B x floor | A s / image | B s / image |",
           "|---|---|---|---|---|---|---|---|"]
    order = sorted(shared, key=lambda k: (rows[0][k]["method"], rows[0][k]["guidance"], rows[0][k]["steps"]))
    for k in order:
        ra, rb = rows[0][k], rows[1][k]
        out.append(f"| {ra['method']} | {ra['steps']} | {ra['guidance']:g} | {ra['nfe']:.0f} / {rb['nfe']:.0f} | "
                   f"{ra['mse_over_floor']:.2f} | {rb['mse_over_floor']:.2f} | {ra['seconds']:.2f} | {rb['seconds']:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    if len(args) != 2:
        raise SystemExit("usage: python -m unsample_lab.bench.side_by_side DIR_A DIR_B (two 'unsample bench reconstruction' folders)")
    try:
        print(side_by_side(*args))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
