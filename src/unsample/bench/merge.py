"""``python -m unsample.bench.merge DIR [DIR ...]``: one reconstruction table from several runs.

Concatenates the per-image rows of each run's results.json (e.g. runs over different scene seeds,
run in parallel on separate cores) and prints the summary table over all images.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from unsample.bench.reconstruction import report_table, summarise


def main(argv: list[str] | None = None) -> None:
    dirs = argv if argv is not None else sys.argv[1:]
    if not dirs:
        raise SystemExit("usage: python -m unsample.bench.merge DIR [DIR ...] (folders written by 'unsample bench reconstruction')")
    rows = []
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise SystemExit(f"{path} does not exist; give folders written by 'unsample bench reconstruction'")
        rows += json.loads(path.read_text())["per_image"]
    print(f"{sum(r['method'] == 'autoencoder' for r in rows)} images")
    print(report_table(summarise(rows)))


if __name__ == "__main__":
    main()
