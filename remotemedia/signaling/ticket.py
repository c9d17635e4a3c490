"""
Session tickets: an HMAC that binds a session id to its client and executor.

When the signaling server pairs a client with an executor it signs
``(session, client, executor)`` with the shared secret (the server's token)
and hands the same ticket to both ends. The executor recomputes it before it
accepts anything of that session, so a session that the server did not create
cannot be forged by someone without the secret; the client later shows the
ticket to the executor over the peer connection, proving that it is the end
the server paired.

A server run without a token signs with the empty secret: the check still
binds the three names together, but anyone can mint tickets. That mode is for
trusted networks only, and the server warns when it starts that way.
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
    """Sign one pairing; ``secret=None`` (an open server) signs with the empty secret."""
    return f"{_VERSION}.{_mac(secret or '', session, client, executor)}"


def verify_ticket(
    secret: str | None, ticket: str, session: str, client: str, executor: str
) -> bool:
    """Whether ``ticket`` is the one :func:`make_ticket` gives for these names (constant time)."""
    if not isinstance(ticket, str):
        return False
    expected = make_ticket(secret, session, client, executor)
    return hmac.compare_digest(expected.encode(), ticket.encode("utf-8", "replace"))
