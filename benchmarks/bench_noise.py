"""How steady is this machine? The noise floor under every speed figure in this folder.

Times one fixed piece of pure-Python work (no I/O, no allocation to speak of, one thread)
over and over, with the machine otherwise as it is, and reports how much the same work's
wall time varies: slice to slice, and between the 2,000-step rounds that
``bench_overhead.py`` compares. A slowdown much smaller than that spread cannot be seen
in a few dozen rounds; this prints how many rounds a given resolution needs.

    python benchmarks/bench_noise.py            # 300 slices of ~50 ms, then 20 pairs of ~3 s "rounds"
    python benchmarks/bench_noise.py --quick
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def work(n: int) -> float:
    """Seconds to run a fixed loop of ``n`` iterations."""
    start = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - start


def bootstrap_median_halfwidth(values: list[float], n: int = 2000, seed: int = 0) -> float:
    """Half the 90 % bootstrap interval of the median of ``values``."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return (medians[int(0.95 * n) - 1] - medians[int(0.05 * n)]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.slices, args.rounds = 40, 4

    n = 100_000
    n = max(n, int(n * 0.05 / min(work(n) for _ in range(5))))  # one slice: ~50 ms at the fastest
    slices = [work(n) for _ in range(args.slices)]
    fastest = min(slices)
    ratios = sorted(s / fastest for s in slices)
    print(f"{args.slices} slices of the same work (~{1000 * fastest:.0f} ms at the fastest):")
    for q in (0.1, 0.5, 0.9, 0.99):
        print(f"  p{int(100 * q):<2} {ratios[int(q * (len(ratios) - 1))]:.3f} x the fastest")
    slow = sum(r > 1.2 for r in ratios)
    print(
        f"  {slow} of {len(ratios)} slices ({100 * slow / len(ratios):.0f} %) ran more than 1.2 x slower than the fastest"
    )

    # Rounds the length of bench_overhead's (2,000 steps of ~1.6 ms), compared in adjacent pairs: the
    # same work on both sides, so every difference between them is the machine's.
    per_round = max(1, round(3.0 / fastest))
    rounds = [sum(work(n) for _ in range(per_round)) for _ in range(2 * args.rounds)]
    diffs = [100 * (b / a - 1) for a, b in zip(rounds[::2], rounds[1::2], strict=True)]
    spread = statistics.pstdev(diffs)
    half = bootstrap_median_halfwidth(diffs)
    print(f"\n{args.rounds} pairs of ~3 s rounds of identical work (what bench_overhead compares):")
    print(f"  difference within a pair: median {statistics.median(diffs):+.2f} %, standard deviation {spread:.1f} %")
    print(f"  90 % interval of the median of {args.rounds} pairs: +/- {half:.2f} %")
    for target in (3.0, 1.0, 0.5):
        needed = args.rounds * (half / target) ** 2  # the interval shrinks as 1/sqrt(rounds)
        print(f"  rounds for +/- {target:g} %: ~{needed:,.0f}")


if __name__ == "__main__":
    main()
