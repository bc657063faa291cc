"""``GET /metrics``: the server's counters in Prometheus text format.

Values are read at scrape time from the hub, the connection trackers and the
loop-lag monitor (a custom collector), so nothing is counted twice and the hot
path pays nothing. Each app has its own ``CollectorRegistry``: several servers
in one process (tests, notebooks) never collide in the global registry.
``prometheus_client`` is imported at the first scrape (``make_registry``), not with
the server: ~10 ms of a ``lightning-stream serve`` start that most servers never scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightning_stream.looplag import LoopLagMonitor

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

PREFIX = "lightning_stream"


@dataclass(frozen=True)
class MetricSources:
    """Where the collector reads each figure; every callable is cheap and loop-confined."""

    hub_stats: Callable[[], Mapping[str, Any]]
    clients: Callable[[], Mapping[str, int]]
    loop_lag: LoopLagMonitor
    uptime_s: Callable[[], float]
    restarts: Callable[[], int]
    reader_errors: Callable[[], Mapping[str, int]]
    ws_errors: Callable[[], int]


_HUB_COUNTERS = (
    ("points_in", "points_in", "Scalar points ingested by the hub."),
    ("points_out", "points_out", "Scalar points sent to subscribers (summed over subscribers)."),
    ("batches_out", "batches_out", "Batches broadcast by the hub."),
    ("resets", "resets", "Resets sent to subscribers that fell behind or resumed past the replay buffer."),
    ("replay_hits", "replay_hits", "Resumes served from the replay buffer."),
)
_HUB_GAUGES = (
    ("bytes_held", "bytes_held", "Bytes of point storage held in memory."),
    ("points_held", "points_held", "Points held in memory, all series together."),
    ("seq", "seq", "Last sequence number handed out."),
)


class _Collector:
    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        src = self._sources
        stats = src.hub_stats()
        clients = GaugeMetricFamily(f"{PREFIX}_clients", "Connected streaming clients.", labels=["protocol"])
        for protocol, count in sorted(src.clients().items()):
            clients.add_metric([protocol], float(count))
        yield clients
        for key, name, doc in _HUB_COUNTERS:
            if key in stats:
                yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=float(stats[key]))
        for key, name, doc in _HUB_GAUGES:
            if key in stats:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=float(stats[key]))
        yield GaugeMetricFamily(
            f"{PREFIX}_loop_lag_seconds",
            "Recent event-loop lag (max of the last samples).",
            value=src.loop_lag.lag_ms / 1000,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_loop_lag_max_seconds", "Worst event-loop lag since start.", value=src.loop_lag.max_lag_ms / 1000
        )
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the app started.", value=src.uptime_s())
        yield CounterMetricFamily(
            f"{PREFIX}_watchdog_restarts",
            "Server restarts by the watchdog or force_restart().",
            value=float(src.restarts()),
        )
        errors = CounterMetricFamily(f"{PREFIX}_reader_errors", "Event-file reader errors by kind.", labels=["kind"])
        for kind, count in sorted(src.reader_errors().items()):
            errors.add_metric([kind], float(count))
        yield errors
        yield CounterMetricFamily(
            f"{PREFIX}_ws_client_errors",
            "Error messages sent to WebSocket clients for bad input.",
            value=float(src.ws_errors()),
        )


def make_registry(sources: MetricSources) -> CollectorRegistry:
    """A fresh registry holding only this server's collector."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(sources))
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text and its ``Content-Type``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry), CONTENT_TYPE_LATEST
