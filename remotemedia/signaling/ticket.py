"""
Session tickets: an HMAC that binds a session id to its client and executor.

When the signaling server pairs a client with an executor it signs
``(session, client, executor)`` with a secret it draws when it starts and
shows no one (no token anyone holds derives it), and hands the same ticket to
both ends: to the executor in ``session``, over the executor's connection
authenticated with the executor credential, and to the client in
``paired``. The client later shows the ticket to the executor over the peer
connection; the executor admits exactly the ticket its server sent it, so it
needs no secret of its own, and a peer without the ticket gets nothing
unpickled.

:func:`verify_ticket` is for whoever holds the secret (the server, tests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["make_ticket", "verify_ticket"]

_VERSION = "v1"


def _mac(secret: str, session: str, client: str, executor: str) -> str:
    # The names are validated to hold no control characters, so NUL separates
    # them unambiguously.
    message = "\0".join(("remotemedia-ticket", _VERSION, session, client, executor))
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def make_ticket(secret: str | None, session: str, client: str, executor: str) -> str:
    """Sign one pairing with ``secret`` (``None`` signs with the empty secret)."""
    return f"{_VERSION}.{_mac(secret or '', session, client, executor)}"


def verify_ticket(
    secret: str | None, ticket: str, session: str, client: str, executor: str
) -> bool:
    """Whether ``ticket`` is the one :func:`make_ticket` gives for these names (constant time)."""
    if not isinstance(ticket, str):
        return False
    expected = make_ticket(secret, session, client, executor)
    return hmac.compare_digest(expected.encode(), ticket.encode("utf-8", "replace"))
