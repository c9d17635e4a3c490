"""
Connection limits: a cap on open websockets in all, and one per address.

Without them one host could open connections until the server runs out of
file descriptors (11,000 in about 50 s were measured against a server
without them). The accounting is sans-I/O: :meth:`ConnectionLimits.admit`
is asked before a websocket is accepted and answers with the close code to
refuse it with, and :meth:`~ConnectionLimits.release` is told when an
admitted one ends; :mod:`signaling_server.app` does the I/O.

IPv6 addresses are counted per /64, the block one subscriber usually gets:
counting single addresses would let one host pick a fresh address for each
connection. Behind a reverse proxy every connection comes from the proxy's
address, so raise the per-address limit there (or put the limits in the
proxy).
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter

from remotemedia.signaling.messages import CLOSE_ADDRESS_FULL, CLOSE_SERVER_FULL, LIMIT_CLOSES

__all__ = ["ConnectionLimits", "address_key", "ensure_file_descriptors"]

logger = logging.getLogger(__name__)

#: Descriptors kept beside the connections: listening socket, logs, the page's files.
_SPARE_DESCRIPTORS = 64


def address_key(address: str | None) -> str:
    """The key ``address`` is counted under: itself for IPv4, its /64 for IPv6."""
    if not address:
        return "unknown"  # a Unix socket, or a transport that has gone
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ConnectionLimits:
    """Counts open connections, in all and per address, against two caps."""

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        #: Most connections open at once.
        self.max_connections = max_connections
        #: Most connections open at once from one address (an IPv6 /64).
        self.max_per_address = max_per_address
        #: Connections open now.
        self.open = 0
        #: Connections refused since start, by error code (``server_full``, ``too_many_connections``).
        self.refused: Counter = Counter()
        self._by_address: Counter = Counter()

    def admit(self, address: str | None) -> int | None:
        """
        Count a new connection from ``address``; ``None`` admits it (call
        :meth:`release` when it ends), a close code refuses it (nothing to release).
        """
        key = address_key(address)
        if self.open >= self.max_connections:
            code = CLOSE_SERVER_FULL
        elif self._by_address[key] >= self.max_per_address:
            code = CLOSE_ADDRESS_FULL
        else:
            self.open += 1
            self._by_address[key] += 1
            return None
        self.refused[LIMIT_CLOSES[code]] += 1
        return code

    def release(self, address: str | None) -> None:
        """An admitted connection from ``address`` ended."""
        key = address_key(address)
        self.open -= 1
        self._by_address[key] -= 1
        if self._by_address[key] <= 0:
            del self._by_address[key]  # the table holds only addresses with open connections

    def count(self, address: str | None) -> int:
        """Open connections counted against ``address``'s limit."""
        return self._by_address.get(address_key(address), 0)

    @property
    def addresses(self) -> int:
        """Addresses (IPv6: /64 blocks) with open connections."""
        return len(self._by_address)


def ensure_file_descriptors(max_connections: int) -> None:
    """
    Raise this process's soft limit on open files (up to the hard one) so
    that ``max_connections`` websockets fit; warn when they cannot. A server
    out of descriptors refuses everyone, not only the flood.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    needed = max_connections + _SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        target = soft
    if target < needed:
        logger.warning(
            "only %d open files are allowed (ulimit -n), fewer than --max-connections %d needs; "
            "raise the limit or lower --max-connections", target, max_connections,
        )
