"""Pool the rounds of several ``bench_overhead.py`` runs: one median slowdown and its 90 % interval.

One run of 240 rounds pins the median slowdown to about ±0.4 % to ±1 % on this machine, by its phase
(single rounds vary 4.5-19 % here), so in a noisy phase a true overhead of a few tenths of a percent
reads anywhere from -1 % to +1.3 %. The rounds are read as the run prints them (one decimal), so a
pooled median can differ from a run's own by 0.05 %.
Runs of the same code are the same experiment: their rounds pooled give the same estimate with
a narrower interval. Each run's output (what ``bench_overhead.py`` prints) is read from a file;
its ``rounds`` line holds every round's slowdown.

    python benchmarks/bench_overhead.py --rounds 240 > run1.txt 2>&1   # ... and again, same code
    python benchmarks/pool_overhead.py run1.txt run2.txt run3.txt
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import _bootstrap_median


def rounds_of(path: Path) -> list[float]:
    """The per-round slowdowns (%) that a ``bench_overhead.py`` run printed."""
    for line in path.read_text().splitlines():
        if line.strip().startswith("rounds "):
            return [float(x) for x in line.split()[1:]]
    raise SystemExit(f"{path}: no 'rounds' line; pass the whole output of a finished bench_overhead.py run")


def summary(label: str, rounds: list[float]) -> str:
    """One line: how many rounds, their median slowdown and its 90 % bootstrap interval."""
    low, high = _bootstrap_median(rounds)
    return (
        f"{label:40} {len(rounds):4} rounds  median {statistics.median(rounds):6.2f} %  [90 %: {low:.2f} .. {high:.2f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path, help="saved outputs of bench_overhead.py runs")
    args = parser.parse_args()
    pooled: list[float] = []
    for path in args.outputs:
        rounds = rounds_of(path)
        print(summary(str(path), rounds))
        pooled += rounds
    print(summary("pooled", pooled))


if __name__ == "__main__":
    main()
