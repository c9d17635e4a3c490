"""
``/metrics``: the hub's state in the Prometheus text format.

A custom collector reads the hub at scrape time, so the hub keeps plain
counters and knows nothing of Prometheus; each application gets its own
registry, so several servers in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .hub import Hub

__all__ = ["CONTENT_TYPE_LATEST", "HubCollector", "render"]

_PREFIX = "remotemedia_signaling"


class HubCollector:
    """Prometheus collector over one :class:`~signaling_server.hub.Hub`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self):
        hub = self.hub
        yield GaugeMetricFamily(
            f"{_PREFIX}_executors", "Registered executors.", value=len(hub.registry.executors)
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_sessions", "Open sessions.", value=len(hub.registry.sessions)
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_capacity",
            "Sessions the registered executors accept in all.",
            value=sum(r.capacity for r in hub.registry.executors.values()),
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_connections_open", "Open websocket connections.", value=hub.connection_count
        )
        yield CounterMetricFamily(
            f"{_PREFIX}_connections", "Websocket connections accepted.", value=hub.stats.connections_total
        )
        yield CounterMetricFamily(
            f"{_PREFIX}_pairings", "Clients paired with an executor.", value=hub.stats.pairings_total
        )
        relayed = CounterMetricFamily(
            f"{_PREFIX}_relayed_messages", "Messages relayed between session ends.", labels=["type"]
        )
        for kind in ("offer", "answer", "candidate", "bye"):
            relayed.add_metric([kind], hub.stats.relayed_total[kind])
        yield relayed
        errors = CounterMetricFamily(f"{_PREFIX}_errors", "Error messages sent, by code.", labels=["code"])
        for code, count in sorted(hub.stats.errors_total.items()):
            errors.add_metric([code], count)
        yield errors


def render(registry: CollectorRegistry) -> bytes:
    """The scrape body of ``registry``."""
    return generate_latest(registry)
