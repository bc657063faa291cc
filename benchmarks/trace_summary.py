"""What a page's main thread spent its time on, from a Chromium trace (``bench_dashboard.py --trace-s``).

A trace recorded with :data:`CATEGORIES` holds, on the renderer's main thread (``CrRendererMain``), one
``toplevel`` event per task and, nested inside it, what ran: script (``FunctionCall`` with the function
and file, ``EventDispatch``, ``FireAnimationFrame``, ``TimerFire``), garbage collection (``MinorGC``,
``MajorGC``, ``V8.GC_*``), style, layout and paint. This module reads such a trace and answers the
question a long frame raises: which of these were in the tasks that took longer than a frame. Pure:
no browser, so it can be run again on a saved trace (``python benchmarks/trace_summary.py TRACE``).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CATEGORIES = [
    "toplevel",
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "disabled-by-default-devtools.timeline.frame",
    "v8",
    "blink.user_timing",
]

#: a task longer than this cannot fit in a 60 Hz frame
LONG_TASK_MS = 16.0
# one task shows up as "ThreadControllerImpl::RunTask" (toplevel) with "RunTask" (devtools.timeline)
# nested inside it: the first present is the task, the other is left out
_TOPLEVEL = ("ThreadControllerImpl::RunTask", "RunTask")
_GC = ("MinorGC", "MajorGC", "V8.GC_", "BlinkGC", "V8.GCScavenger", "V8.GCFinalizeMC", "V8.GCIncrementalMarking")
#: one event per collection (the V8.GC* events nested in them are its phases: counted once, here)
_GC_WHOLE = ("MinorGC", "MajorGC")


def _main_thread(events: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(pid, tid) of the busiest renderer main thread (the page's, not about:blank's)."""
    names = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    busy: dict[tuple[int, int], float] = defaultdict(float)
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if key in names and e.get("ph") == "X" and e.get("name") in _TOPLEVEL:
            busy[key] += e.get("dur", 0)  # type: ignore[index]
    return max(busy, key=busy.__getitem__) if busy else None


def _transparent(name: str) -> bool:
    """Wrappers that say nothing a nested event does not say better (V8's own call and run events)."""
    return name in _TOPLEVEL or (name.startswith("v8.") and not name.startswith(_GC))


def label(event: dict[str, Any]) -> str:
    """A short name for what an event is: the function and file for script, the kind for the rest."""
    name = str(event.get("name", ""))
    data = event.get("args", {}).get("data") or {}
    if name == "FunctionCall":
        fn = data.get("functionName") or "(anonymous)"
        url = str(data.get("url") or "")
        return f"script {fn} ({url.rsplit('/', 1)[-1] or '?'}:{data.get('lineNumber', '?')})"
    if name == "EventDispatch":
        return f"event {data.get('type', '?')}"
    if name.startswith(_GC):
        return "GC"
    return name


def _children(tasks: list[dict[str, Any]], inner: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """For each task (by index), the events nested directly or deeper inside it (same thread, sorted)."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    k = 0
    for e in inner:
        ts = e["ts"]
        while k < len(tasks) and tasks[k]["ts"] + tasks[k].get("dur", 0) < ts:
            k += 1
        if k < len(tasks) and tasks[k]["ts"] <= ts:
            out[k].append(e)
    return out


def _self_times(task: dict[str, Any], inside: Iterable[dict[str, Any]]) -> dict[str, float]:
    """ms per label of the outermost events inside a task (GC counted wherever it nests), and the rest as
    ``(task, other)``: what the task did that no traced event covers (canvas raster, IPC, ...)."""
    totals: dict[str, float] = defaultdict(float)
    end_of_outer = -1.0
    covered = 0.0
    for e in sorted(inside, key=lambda e: (e["ts"], -e.get("dur", 0))):
        dur = e.get("dur", 0) / 1000.0
        lab = label(e)
        if e["ts"] >= end_of_outer:
            totals[lab] += dur
            covered += dur
            end_of_outer = e["ts"] + e.get("dur", 0)
        elif e.get("name") in _GC_WHOLE:
            totals["GC (inside script)"] += dur
    totals["(task, other)"] += max(0.0, task.get("dur", 0) / 1000.0 - covered)
    return totals


def summarize(trace: dict[str, Any] | list[dict[str, Any]], top: int = 12) -> dict[str, Any]:
    """Busy time, long tasks and what was in them, and GC, on the page's main thread."""
    events: list[dict[str, Any]] = trace["traceEvents"] if isinstance(trace, dict) else trace
    main = _main_thread(events)
    if main is None:
        return {"error": "no CrRendererMain thread with toplevel tasks in the trace (categories: CATEGORIES)"}
    mine = sorted(
        (e for e in events if (e.get("pid"), e.get("tid")) == main and e.get("ph") == "X" and "ts" in e),
        key=lambda e: e["ts"],
    )
    task_name = next((n for n in _TOPLEVEL if any(e.get("name") == n for e in mine)), _TOPLEVEL[0])
    tasks = [e for e in mine if e.get("name") == task_name]
    inner = [e for e in mine if not _transparent(str(e.get("name")))]
    if not tasks:
        return {"error": "no tasks"}
    span_s = (tasks[-1]["ts"] + tasks[-1].get("dur", 0) - tasks[0]["ts"]) / 1e6
    nested = _children(tasks, inner)
    busy: dict[str, float] = defaultdict(float)
    in_long: dict[str, float] = defaultdict(float)
    longest: list[tuple[float, dict[str, float]]] = []
    long_count = 0
    for k, task in enumerate(tasks):
        parts = _self_times(task, nested.get(k, []))
        for lab, ms in parts.items():
            busy[lab] += ms
        ms = task.get("dur", 0) / 1000.0
        if ms > LONG_TASK_MS:
            long_count += 1
            for lab, part in parts.items():
                in_long[lab] += part
            longest.append((ms, parts))
    gc = [e.get("dur", 0) / 1000.0 for e in inner if e.get("name") in _GC_WHOLE]
    longest.sort(key=lambda t: -t[0])

    def ranked(d: dict[str, float]) -> list[str]:
        return [f"{ms:.1f} ms {lab}" for lab, ms in sorted(d.items(), key=lambda t: -t[1])[:top]]

    total_busy = sum(t.get("dur", 0) for t in tasks) / 1000.0
    total_cpu = sum(t.get("tdur", 0) for t in tasks) / 1000.0
    return {
        "span_s": round(span_s, 1),
        "main_thread_busy_ms_per_s": round(total_busy / span_s, 1) if span_s else None,
        # thread time (CPU), not wall time: what the machine's load does not inflate
        "main_thread_cpu_ms_per_s": round(total_cpu / span_s, 1) if span_s else None,
        "tasks_over_16ms_cpu": sum(1 for t in tasks if t.get("tdur", 0) / 1000.0 > LONG_TASK_MS),
        "tasks": len(tasks),
        f"tasks_over_{LONG_TASK_MS:.0f}ms": long_count,
        "gc_ms_total": round(sum(gc), 1),
        "gc_ms_max": round(max(gc, default=0.0), 1),
        "gc_events": len(gc),
        "busy_by_kind": ranked(busy),
        "inside_long_tasks": ranked(in_long),
        "longest_tasks": [
            f"{ms:.1f} ms: " + ", ".join(f"{lab} {p:.1f}" for lab, p in sorted(parts.items(), key=lambda t: -t[1])[:4])
            for ms, parts in longest[:8]
        ],
    }


def main() -> None:
    trace = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(summarize(trace), indent=1))


if __name__ == "__main__":
    main()
