"""
ICE servers and routes: which TURN server a peer connection uses, and how
the connection that ICE selected actually goes.

aiortc (through aioice) uses one STUN and one TURN server per peer
connection: the first of each in its list. A user (or the signaling server,
``--ice-server``) may list the same TURN server over UDP and over TCP, so
that a network that blocks UDP still connects; :func:`order_ice_servers`
asks each UDP TURN server one STUN binding request, with a short timeout,
and puts first the first TURN URL that answers (a TCP one when none over UDP
does). That costs one round trip where UDP passes, and :data:`PROBE_TIMEOUT`
where it does not, against aioice's 5 s gathering timeout per connection
spent on a TURN server it cannot reach.

aioice keeps the nominated candidate pair to itself; :func:`selected_route`
reads it (the one place that reaches into aioice) and says whether the
connection is ``direct`` (host candidates at both ends), through ``stun``
(a server-reflexive or peer-reflexive address: a NAT mapping) or a
``relay`` (a TURN server carries every packet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

__all__ = ["Route", "first_turn", "order_ice_servers", "selected_route", "candidates_tried", "PROBE_TIMEOUT", "ROUTES"]

logger = logging.getLogger(__name__)

#: Seconds a UDP TURN server has to answer a STUN binding request before its TCP URL is preferred.
PROBE_TIMEOUT = 1.0
#: The kinds of route, from the cheapest to the dearest.
ROUTES = ("direct", "stun", "relay")

_BINDING_REQUEST_TYPE = b"\x00\x01"
_MAGIC_COOKIE = b"\x21\x12\xa4\x42"


@dataclass(frozen=True)
class Route:
    """How a peer connection's packets go: the candidate pair ICE selected."""

    #: ``"direct"``, ``"stun"`` (through a NAT mapping) or ``"relay"`` (through a TURN server).
    kind: str
    #: This end's candidate: ``"TYPE HOST:PORT"`` (``relay 198.19.0.1:49160``).
    local: str
    #: The other end's candidate, in the same form.
    remote: str
    #: The TURN URL this end allocated its relay on, when this end's candidate is ``relay``.
    turn: str | None = None

    def __str__(self) -> str:
        via = f" via {self.turn}" if self.turn else ""
        return f"{self.kind} ({self.local} -> {self.remote}{via})"


def _entries(servers: Iterable[str | dict]) -> list[dict]:
    """Every server as ``{"urls": [url], "username", "credential"}``, one URL each, in order."""
    out = []
    for server in servers:
        if isinstance(server, str):
            out.append({"urls": [server]})
            continue
        urls = server["urls"] if isinstance(server["urls"], (list, tuple)) else [server["urls"]]
        for url in urls:
            entry = {"urls": [url]}
            for key in ("username", "credential"):
                if server.get(key) is not None:
                    entry[key] = server[key]
            out.append(entry)
    return out


def _turn_udp_address(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``turn:`` URL over UDP (the default transport), else ``None``."""
    if not url.startswith("turn:"):
        return None
    parts = urlsplit(url.replace("turn:", "turn://", 1))
    transport = parse_qs(parts.query).get("transport", ["udp"])[0]
    if transport != "udp" or not parts.hostname:
        return None
    return parts.hostname, parts.port or 3478


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, answered: asyncio.Future) -> None:
        self.answered = answered

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answered.done():
            self.answered.set_result(True)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP "unreachable": the timeout decides


async def _answers_over_udp(address: tuple[str, int], timeout: float) -> bool:
    """Whether a STUN server at ``address`` answers a binding request over UDP within ``timeout``."""
    loop = asyncio.get_running_loop()
    answered = loop.create_future()
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: _Answer(answered), remote_addr=address)
    except OSError as exc:
        logger.debug("cannot send to TURN server %s:%d over UDP: %s", *address, exc)
        return False
    # A header with no attributes: type, length 0, magic cookie, a transaction id (RFC 5389, 6).
    request = _BINDING_REQUEST_TYPE + b"\x00\x00" + _MAGIC_COOKIE + secrets.token_bytes(12)
    try:
        # Sent again a few times: one lost datagram must not send everyone to TCP.
        for _ in range(4):
            transport.sendto(request)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered), timeout / 4)
                return True
        return False
    finally:
        transport.close()


async def order_ice_servers(servers: Iterable[str | dict], timeout: float = PROBE_TIMEOUT) -> list[dict]:
    """
    ``servers`` (URLs or ``{urls, username, credential}`` dicts) one URL per
    entry, with the TURN URL this host can use first among the TURN URLs (see
    the module docstring): aiortc then allocates its relay there.
    """
    entries = _entries(servers)
    turns = [e for e in entries if e["urls"][0].startswith(("turn:", "turns:"))]
    if len(turns) < 2:
        return entries
    udp = [(e, _turn_udp_address(e["urls"][0])) for e in turns]
    probed = await asyncio.gather(*(_answers_over_udp(a, timeout) for _, a in udp if a is not None))
    answers = iter(probed)
    usable = [e for e, a in udp if a is None or next(answers)]
    chosen = usable[0] if usable else turns[0]
    if chosen is not turns[0]:
        logger.info("TURN over UDP does not answer here; using %s", chosen["urls"][0])
    return [e for e in entries if e not in turns] + [chosen] + [e for e in turns if e is not chosen]


def first_turn(servers: list[dict]) -> str | None:
    """The TURN URL aiortc will allocate on: the first in ``servers`` (as :func:`order_ice_servers` returns them)."""
    return next((e["urls"][0] for e in servers if e["urls"][0].startswith(("turn:", "turns:"))), None)


def _ice_transport(pc: Any) -> Any:
    """The ICE transport that carries the data channel (the bundle's), or ``None``."""
    sctp = getattr(pc, "sctp", None)
    return sctp.transport.transport if sctp is not None else None


def _describe(candidate: Any) -> str:
    # aioice's Candidate has host/transport, aiortc's RTCIceCandidate ip/protocol.
    host = getattr(candidate, "host", None) or getattr(candidate, "ip", "?")
    transport = (getattr(candidate, "transport", None) or getattr(candidate, "protocol", "udp")).lower()
    return f"{candidate.type} {host}:{candidate.port}" + (f"/{transport}" if transport != "udp" else "")


def selected_route(pc: Any, turn_url: str | None = None) -> Route | None:
    """
    The route of ``pc``'s connected data-channel transport, or ``None`` while
    no candidate pair is selected. ``turn_url``: the TURN URL this end was
    given first (reported when its own candidate is the relay).
    """
    ice = _ice_transport(pc)
    if ice is None:
        return None
    # aioice has no public accessor for the nominated pair (aiortc 1.16, aioice 0.13).
    connection = getattr(ice.iceGatherer, "_connection", None)
    pair = getattr(connection, "_nominated", {}).get(1)
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    types = {local.type, remote.type}
    kind = "relay" if "relay" in types else "stun" if types & {"srflx", "prflx"} else "direct"
    return Route(kind, _describe(local), _describe(remote), turn_url if local.type == "relay" else None)


def candidates_tried(pc: Any) -> tuple[list[str], list[str]]:
    """This end's and the other end's candidates of ``pc``'s data-channel transport, as ``TYPE HOST:PORT``."""
    ice = _ice_transport(pc)
    if ice is None:
        return [], []
    return [_describe(c) for c in ice.iceGatherer.getLocalCandidates()], [_describe(c) for c in ice.getRemoteCandidates()]
