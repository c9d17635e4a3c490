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
from .limits import ConnectionLimits

__all__ = ["CONTENT_TYPE_LATEST", "HubCollector", "render"]

_PREFIX = "remotemedia_signaling"


class HubCollector:
    """Prometheus collector over one :class:`~signaling_server.hub.Hub`."""

    def __init__(self, hub: Hub, limits: ConnectionLimits | None = None) -> None:
        self.hub = hub
        self.limits = limits

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
        if self.limits is not None:
            refused = CounterMetricFamily(
                f"{_PREFIX}_connections_refused",
                "Websocket connections closed at once at a connection limit, by reason.",
                labels=["reason"],
            )
            for reason in ("server_full", "too_many_connections"):
                refused.add_metric([reason], self.limits.refused[reason])
            yield refused
            yield GaugeMetricFamily(
                f"{_PREFIX}_connection_addresses",
                "Addresses (IPv6: /64 blocks) with open websocket connections.",
                value=self.limits.addresses,
            )


def render(registry: CollectorRegistry) -> bytes:
    """The scrape body of ``registry``."""
    return generate_latest(registry)
