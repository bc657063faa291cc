"""How fast can the scalars of a TensorBoard logdir be read? lightning-stream vs TensorBoard's readers.

Generates once (cached in benchmarks/data/) a logdir of 10 runs x 10 tags x 10,000 steps = 1,000,000
scalars written by torch's ``SummaryWriter``, then reads all of it with each contender, each in a fresh
subprocess so that peak RSS is per contender:

* ``lightning-stream (C)``       ``LogdirWatcher(logdir).scan()`` with the C decoder (``_speedups``)
* ``lightning-stream (Python)``  the same with ``LIGHTNING_STREAM_PURE_PYTHON=1``
* ``EventFileLoader``            tensorboard's per-file event iterator (protobuf objects)
* ``EventAccumulator``           tensorboard's in-memory accumulator, ``size_guidance={"scalars": 0}``
* ``tbparse``                    ``SummaryReader(logdir).scalars`` (a pandas DataFrame)

``--end-to-end`` measures instead the time from starting a ``StreamServer`` watching the logdir until
``/api/runs`` reports the last step of every run (files appear -> queryable over HTTP).

``--vs-tensorboard`` measures bulk speed over HTTP, both servers started by this script in the same run:
``lightning-stream serve LOGDIR`` (a fresh process; time from its start until every point has been
fetched with ``GET /api/series`` and parsed) beside ``tensorboard --load_fast=true`` (TensorBoard's Rust
data server, ``--samples_per_plugin scalars=STEPS`` so it keeps every point; time from its start until
its HTTP API, ``/data/plugin/scalars/scalars_multirun``, returns every point of every series). Both
bodies are parsed with ``orjson``; peak RSS is the server process's VmHWM (TensorBoard: the Python
front end plus its data server).

    .venv/bin/python benchmarks/bench_ingest.py            # full: 1M scalars
    .venv/bin/python benchmarks/bench_ingest.py --quick    # smoke run: 2 x 5 x 1,000
    .venv/bin/python benchmarks/bench_ingest.py --vs-tensorboard [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
CONTENDERS = ["lightning-stream (C)", "lightning-stream (Python)", "EventFileLoader", "EventAccumulator", "tbparse"]


def generate(logdir: Path, runs: int, tags: int, steps: int) -> None:
    """Write the logdir with torch's SummaryWriter (once; a marker file says it is complete)."""
    marker = logdir / "COMPLETE"
    if marker.exists():
        return
    from torch.utils.tensorboard import SummaryWriter

    shutil.rmtree(logdir, ignore_errors=True)
    started = time.perf_counter()
    print(f"generating {runs} runs x {tags} tags x {steps} steps in {logdir} ...", file=sys.stderr, flush=True)
    for r in range(runs):
        writer = SummaryWriter(str(logdir / f"run_{r:02d}"), max_queue=10_000, flush_secs=3600)
        for step in range(steps):
            for t in range(tags):
                writer.add_scalar(f"metric/tag_{t:02d}", (r + 1) * 0.001 * step + t, step)
        writer.close()
    marker.write_text(json.dumps({"runs": runs, "tags": tags, "steps": steps}))
    print(f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's peak: Linux keeps it across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(name: str, logdir: Path) -> dict[str, Any]:
    """Read the whole logdir with one contender (imports excluded from the time, included in peak RSS)."""
    if name.startswith("lightning-stream"):
        from lightning_stream.reader import has_speedups
        from lightning_stream.watcher import LogdirWatcher

        if name.endswith("(C)") and not has_speedups():
            return {"error": "C decoder not built"}
        before = rss_mib()
        cpu_started = time.process_time()
        started = time.perf_counter()
        batches = LogdirWatcher(logdir).scan()
        count = sum(len(b) for b in batches)
    elif name == "EventFileLoader":
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        before = rss_mib()
        cpu_started = time.process_time()
        started = time.perf_counter()
        points: list[tuple[str, int, float, Any]] = []
        for path in sorted(logdir.rglob("*tfevents*")):
            for event in EventFileLoader(str(path)).Load():
                for value in event.summary.value:
                    points.append((value.tag, event.step, event.wall_time, value.tensor))
        count = len(points)
    elif name == "EventAccumulator":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        before = rss_mib()
        cpu_started = time.process_time()
        started = time.perf_counter()
        count = 0
        for run in sorted({p.parent for p in logdir.rglob("*tfevents*")}):
            acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
            acc.Reload()
            count += sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    elif name == "tbparse":
        from tbparse import SummaryReader

        before = rss_mib()
        cpu_started = time.process_time()
        started = time.perf_counter()
        count = len(SummaryReader(str(logdir), pivot=False, extra_columns={"dir_name", "wall_time"}).scalars)
    else:
        raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS!r}")
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return {"scalars": count, "seconds": seconds, "cpu": cpu, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before}


def end_to_end(logdir: Path, expected_last_step: int, runs: int) -> dict[str, Any]:
    """Start a StreamServer watching ``logdir``; time until /api/runs shows every run complete."""
    import urllib.request

    try:
        from lightning_stream.config import ServerConfig
        from lightning_stream.server import StreamServer
    except ImportError as exc:
        return {"error": f"StreamServer not available yet ({exc})"}
    before = rss_mib()
    cpu_started = time.process_time()
    started = time.perf_counter()
    server = StreamServer(ServerConfig())
    server.start()
    try:
        server.watch(str(logdir))
        while True:
            with urllib.request.urlopen(f"{server.url}/api/runs", timeout=10) as response:
                listed = json.load(response)
            done = [r for r in listed if r.get("last_step") == expected_last_step]
            if len(done) >= runs:
                break
            if time.perf_counter() - started > 120:
                return {"error": f"timed out: {len(done)}/{runs} runs complete after 120 s"}
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        server.stop()
    return {"scalars": -1, "seconds": seconds, "cpu": cpu, "peak_rss_mib": peak_rss_mib(), "rss_before_mib": before}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, data: bytes | None = None) -> bytes | None:
    """The body of a 200 answer, else None (not up yet, or an error)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, data=data, timeout=30) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def vm_hwm_mib(pid: int) -> float:
    """Peak RSS of a live process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fetch_ours(base: str, runs: int, tags: int, steps: int) -> tuple[int, float] | None:
    """(points, seconds parsing them) of one ``/api/series`` body once every series is complete, else None."""
    import orjson

    listed = http_get(base + "/api/runs")
    if listed is None:
        return None
    done = [r for r in orjson.loads(listed) if r.get("last_step") == steps - 1 and len(r.get("tags", ())) == tags]
    if len(done) < runs:
        return None
    body = http_get(base + "/api/series?run=*&tag=*")
    if body is None:
        return None
    parsing = time.perf_counter()
    series = orjson.loads(body)["series"]
    parse_s = time.perf_counter() - parsing
    counts = [len(s["steps"]) for s in series]
    if len(counts) < runs * tags or any(len(s["values"]) != len(s["steps"]) for s in series):
        return None
    return sum(counts), parse_s


def fetch_tensorboard(base: str, runs: int, tags: int, steps: int) -> tuple[int, float] | None:
    """(points, seconds parsing them) of every series over TensorBoard's HTTP API (a request per tag), else None."""
    import urllib.parse

    import orjson

    listed = http_get(base + "/data/plugin/scalars/tags")
    if listed is None:
        return None
    by_run = orjson.loads(listed)
    if len(by_run) < runs or any(len(t) < tags for t in by_run.values()):
        return None
    total, parse_s = 0, 0.0
    for tag in sorted({t for ts in by_run.values() for t in ts}):
        form = urllib.parse.urlencode([("tag", tag), *(("runs", r) for r in sorted(by_run))]).encode()
        body = http_get(base + "/data/plugin/scalars/scalars_multirun", data=form)
        if body is None:
            return None
        parsing = time.perf_counter()
        points = orjson.loads(body)
        parse_s += time.perf_counter() - parsing
        if len(points) < runs or any(len(p) < steps for p in points.values()):
            return None
        total += sum(len(p) for p in points.values())
    return total, parse_s


def vs_tensorboard(logdir: Path, runs: int, tags: int, steps: int, repeat: int) -> None:
    """Both servers started here, one after the other: time from start until every point was fetched."""
    import tempfile

    tb = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
    registry = tempfile.mkdtemp(prefix="bench-ingest-registry-")
    os.chmod(registry, 0o700)
    env = {**os.environ, "LIGHTNING_STREAM_REGISTRY_DIR": registry}
    expected = runs * tags * steps
    _compile_like_an_install()
    contenders = {
        "lightning-stream serve, GET /api/series": (
            lambda port: [sys.executable, "-m", "lightning_stream", "serve", str(logdir), "--port", str(port)],
            fetch_ours,
        ),
        "tensorboard --load_fast=true (Rust)": (
            lambda port: [
                tb,
                "--logdir",
                str(logdir),
                "--load_fast=true",
                "--samples_per_plugin",
                f"scalars={steps}",  # keep every point (its Rust server reads 0 as "none", not "all")
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            fetch_tensorboard,
        ),
    }
    print(
        f"{'server (started by this script)':<42}{'points':>11}{'s to last byte':>16}{'s parsed':>10}"
        f"{'points/s':>12}{'peak RSS MiB':>14}"
    )
    results: dict[str, float] = {}
    last_bytes: dict[str, float] = {}
    for name, (command, fetch) in contenders.items():
        best, best_parse, peak = float("inf"), 0.0, 0.0
        for _ in range(repeat):
            port = free_port()
            started = time.perf_counter()
            proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            try:
                got: tuple[int, float] | None = None
                while got is None:
                    if proc.poll() is not None:
                        sys.exit(f"{name} exited with {proc.returncode} before serving; run {command(port)!r} by hand")
                    if time.perf_counter() - started > 300:
                        sys.exit(f"{name}: not every point after 300 s")
                    got = fetch(f"http://127.0.0.1:{port}", runs, tags, steps)
                    if got is None:
                        time.sleep(0.005)
                seconds = time.perf_counter() - started
                peak = max(peak, sum(vm_hwm_mib(p) for p in _tree(proc.pid)))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if got[0] != expected:
                sys.exit(f"{name} returned {got[0]:,} points, {expected:,} were written")
            if seconds < best:
                best, best_parse = seconds, got[1]
        results[name] = best
        last_bytes[name] = best - best_parse
        print(f"{name:<42}{expected:>11,}{best - best_parse:>16.3f}{best:>10.3f}{expected / best:>12,.0f}{peak:>14.0f}")
    ours, theirs = results.values()
    ours_fetched, theirs_fetched = last_bytes.values()
    print(
        f"lightning-stream is {theirs_fetched / ours_fetched:.1f}x faster to the last byte (every point fetched), "
        f"{theirs / ours:.1f}x with the client's JSON parsing (orjson) added to both sides "
        "(goal: all points fetched <= 0.6 s after start, >= 10x)"
    )
    shutil.rmtree(registry, ignore_errors=True)


def _compile_like_an_install() -> None:
    """Byte-compile our package, as ``pip install`` does for every wheel (TensorBoard's included).

    An editable checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (as on the CI machines) has no
    ``__pycache__``, so every ``serve`` would compile its ~40 modules from source (~80 ms of CPU) at
    start: a cost no installed user pays, and TensorBoard's side never pays here.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("lightning_stream")
    if spec is None or spec.origin is None:
        sys.exit("lightning_stream is not importable: run 'make setup' first")
    compileall.compile_dir(os.path.dirname(spec.origin), quiet=1)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (TensorBoard runs its data server as a child)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return [pid]


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small logdir (2 runs x 5 tags x 1,000 steps)")
    parser.add_argument("--only", action="append", choices=CONTENDERS, help="measure only this contender")
    parser.add_argument("--end-to-end", action="store_true", help="files appear -> queryable over /api/runs")
    parser.add_argument(
        "--vs-tensorboard",
        action="store_true",
        help="start lightning-stream serve and tensorboard --load_fast=true; time fetching every point over HTTP",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender; the best time and the highest peak RSS are shown"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--logdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        logdir = Path(args.logdir)
        if args.child == "end-to-end":
            shape = json.loads((logdir / "COMPLETE").read_text())
            print(json.dumps(end_to_end(logdir, shape["steps"] - 1, shape["runs"])))
        else:
            print(json.dumps(measure(args.child, logdir)))
        return

    runs, tags, steps = (2, 5, 1_000) if args.quick else (10, 10, 10_000)
    logdir = DATA / f"logdir_{runs}x{tags}x{steps}"
    generate(logdir, runs, tags, steps)
    expected = runs * tags * steps
    if args.vs_tensorboard:
        print(f"{expected:,} scalars ({runs} runs x {tags} tags x {steps} steps, torch SummaryWriter), {logdir}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
        vs_tensorboard(logdir, runs, tags, steps, args.repeat)
        return
    names = ["end-to-end"] if args.end_to_end else (args.only or CONTENDERS)

    print(f"{expected:,} scalars ({runs} runs x {tags} tags x {steps} steps, torch SummaryWriter), {logdir}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    print(
        f"{'contender':<28}{'scalars':>11}{'seconds':>9}{'scalars/s':>13}{'CPU s':>8}{'per CPU s':>13}"
        f"{'peak RSS MiB':>14}{'RSS before':>12}"
    )
    failed = False
    for name in names:
        best: dict[str, Any] | None = None
        worst_peak = 0.0
        for _ in range(args.repeat):
            env = dict(os.environ)
            if name == "lightning-stream (Python)":
                env["LIGHTNING_STREAM_PURE_PYTHON"] = "1"
            result = run_child(["--child", name, "--logdir", str(logdir)], env)
            if "error" in result:
                best = result
                break
            worst_peak = max(worst_peak, result["peak_rss_mib"])
            if best is None or result["seconds"] < best["seconds"]:
                best = result
        assert best is not None
        if "error" in best:
            print(f"{name:<28}  {best['error']}")
            continue
        count = expected if best["scalars"] == -1 else best["scalars"]
        if count != expected:
            failed = True
        rate = count / best["seconds"]
        cpu_rate = count / max(best["cpu"], 1e-9)
        print(
            f"{name:<28}{count:>11,}{best['seconds']:>9.3f}{rate:>13,.0f}{best['cpu']:>8.3f}{cpu_rate:>13,.0f}"
            f"{worst_peak:>14.0f}{best['rss_before_mib']:>12.0f}"
        )
    if failed:
        sys.exit("a contender read a different number of scalars than were written")


if __name__ == "__main__":
    main()
