"""``python -m unsample_lab.bench.merge DIR [DIR ...]``: one table from several runs of a bench.

Concatenates the per-item rows of each run's results.json (e.g. runs over different scene seeds
or different methods, run in parallel on separate cores) and prints the summary over all of them:
the reconstruction table for ``unsample bench reconstruction`` folders, the edit tables (all
kinds, then per kind) for ``unsample bench edit`` folders. All folders must come from one bench.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unsample.errors import InputError
from unsample_lab.bench import edit, reconstruction


def merged_tables(dirs: list[str], pairs: int | None = None) -> str:
    """The summary tables over the runs in ``dirs``; ``pairs`` keeps an edit run's first N pairs only
    (the pairs of a shorter run with the same seed, which draws the same pairs first)."""
    runs = []
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise InputError(f"{path} does not exist; give folders written by 'unsample bench'")
        runs.append(json.loads(path.read_text(encoding="utf-8")))
    kinds = {"per_image" if "per_image" in r else "per_pair" if "per_pair" in r else None for r in runs}
    if len(kinds) != 1 or None in kinds:
        raise InputError("give folders of one bench: all reconstruction runs or all edit runs")
    if len({r["model_fingerprint"] for r in runs}) != 1:
        raise InputError("these runs used different models; merge runs of one model only")
    if kinds == {"per_image"}:
        # runs over the same scenes share the autoencoder rows: count each (row, image) once
        seen: set[tuple[str, str]] = set()
        rows = []
        for r in runs:
            for row in r["per_image"]:
                if (row["row"], row["image"]) not in seen:
                    seen.add((row["row"], row["image"]))
                    rows.append(row)
        header = f"{sum(row['method'] == 'autoencoder' for row in rows)} images\n\n"
        return header + reconstruction.report_table(reconstruction.summarise(rows))
    nan = float("nan")
    rows = [{k: (nan if v is None else v) for k, v in row.items()} for r in runs for row in r["per_pair"]
            if pairs is None or int(str(row["pair"]).removeprefix("pair")) < pairs]
    summary = edit.summarise(rows)
    text = f"{len({row['pair'] for row in rows})} edit pairs\n\n" + edit.report_table(summary)
    for kind in sorted({row["kind"] for row in rows}):
        text += f"\n{kind}:\n\n" + edit.report_table(summary, kind)
    return text


def main(argv: list[str] | None = None) -> None:
    args = list(argv if argv is not None else sys.argv[1:])
    pairs = None
    if "--pairs" in args:
        i = args.index("--pairs")
        try:
            pairs = int(args[i + 1])
        except (IndexError, ValueError):
            raise SystemExit("error: --pairs needs a whole number (keep the first N edit pairs)") from None
        del args[i : i + 2]
    dirs = args
    if not dirs:
        raise SystemExit("usage: python -m unsample_lab.bench.merge [--pairs N] DIR [DIR ...] (folders written by 'unsample bench')")
    try:
        print(merged_tables(dirs, pairs))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
