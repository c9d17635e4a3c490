"""
ICE servers handed to clients and executors, with time-limited TURN credentials.

Operators give the server their STUN/TURN URLs once (``--ice-server``,
repeatable) and the TURN server's shared secret (``--turn-secret``), so that
no TURN password is ever copied into client code. For every session the
server mints credentials in the scheme of coturn's REST API
(``--use-auth-secret --static-auth-secret=SECRET`` on the TURN server):

- username: ``EXPIRY:NAME``, the Unix time after which the TURN server
  refuses it, and who it was minted for;
- credential: ``base64(HMAC-SHA1(SECRET, username))``.

The TURN server checks both with the same secret, so the two share nothing
else; a leaked credential expires with its ``--turn-ttl``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["turn_credentials", "ice_servers_for", "DEFAULT_TURN_TTL"]

#: Seconds a minted TURN credential stays valid: a day, so long sessions are not cut.
DEFAULT_TURN_TTL = 86400.0


def turn_credentials(secret: str, name: str, expiry: int) -> tuple[str, str]:
    """``(username, credential)`` valid until ``expiry`` (Unix time) for a TURN server sharing ``secret``."""
    username = f"{expiry}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers_for(urls: tuple[str, ...], secret: str | None, ttl: float, name: str, now: float) -> list[dict]:
    """
    The ``ice_servers`` body of a ``paired`` or ``session`` message
    (``remotemedia.signaling.messages.ICE_SERVER``): STUN URLs as they are,
    TURN URLs with credentials for ``name`` valid ``ttl`` seconds from
    ``now`` when there is a ``secret``.
    """
    stun = [url for url in urls if not url.startswith(("turn:", "turns:"))]
    turn = [url for url in urls if url.startswith(("turn:", "turns:"))]
    servers: list[dict] = [{"urls": stun}] if stun else []
    if turn:
        entry: dict = {"urls": turn}
        if secret is not None:
            entry["username"], entry["credential"] = turn_credentials(secret, name, int(now + ttl))
        servers.append(entry)
    return servers
