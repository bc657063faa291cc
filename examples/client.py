"""Print live points from a lightning-stream server.

Usage::

    python examples/client.py http://127.0.0.1:6007 [--tag 'train/*'] [--count 20] [--timeout 30]

Prints one line per point as it arrives and exits after ``--count`` points or
``--timeout`` seconds, whichever comes first (exit status 0 either way; 1 when
the server cannot be reached). Start a server first, e.g.
``lightning-stream serve lightning_logs`` or ``python examples/train_with_stream.py``.
"""

from __future__ import annotations

import argparse
import sys

from lightning_stream import ClientError, StreamClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print live points from a lightning-stream server.")
    parser.add_argument("url", help="server URL, e.g. http://127.0.0.1:6007")
    parser.add_argument("--run", default="*", help="run glob (default '*')")
    parser.add_argument("--tag", default="*", help="tag glob (default '*')")
    parser.add_argument("--count", type=int, default=20, help="stop after this many points (default 20)")
    parser.add_argument("--timeout", type=float, default=30.0, help="stop after this many seconds (default 30)")
    args = parser.parse_args(argv)

    client = StreamClient(args.url)
    try:
        health = client.health()
        print(f"connected to {args.url}: version {health['version']}, {health['runs']} run(s)", flush=True)
        received = 0
        for point in client.stream(run=args.run, tag=args.tag, duration=args.timeout):
            print(f"{point.run:<24} {point.tag:<24} step {point.step:>7}  {point.value:.6g}", flush=True)
            received += 1
            if received >= args.count:
                break
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"received {received} point(s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
