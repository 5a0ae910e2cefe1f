"""One error-versus-m figure from the recovery rows of several runs (e.g. m = 100 on 100 digits
and the other m on 50), each row keeping its own image count and SEM.

    python -m bench.science_figure OUT.png RUN_DIR... [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from csgm.report import plot_error_vs_m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+", help="run folders with report.json")
    parser.add_argument("--title", default="Gaussian measurements, 95% error bars")
    args = parser.parse_args()
    rows = [row for run in args.runs for row in json.loads((run / "report.json").read_text())["recovery"]]
    plot_error_vs_m(rows, args.out, args.title)
    print(f"wrote {args.out} from {len(rows)} rows")


if __name__ == "__main__":
    main()
