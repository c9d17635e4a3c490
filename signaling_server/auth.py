"""
Who may do what on the signaling server: credentials, roles and scopes, without I/O.

Two roles hold separate credentials, and neither can act as the other:

- **executors** present the executor credential in ``register``: the static
  ``executor_token`` (``--executor-token``), or an executor token signed with
  ``token_secret`` (:mod:`remotemedia.tokens`). Clients never hold it.
- **clients** present the client credential in ``pair``: the static
  ``token`` (``--token``), or a client token signed with ``token_secret``,
  which carries an expiry, a scope and a session quota.

A client credential presented in ``register`` is refused with ``wrong_role``
(and the connection closed), whatever the server's other settings: that is
what stops a client from posing as an executor and receiving other clients'
objects, arguments, and the chance to send them pickled results. An old
single-token setup (``--token`` only) therefore runs, but its executors are
refused with a message that says to add ``--executor-token``.

A server with no credential at all stays open to both roles, for development
on localhost; one with only an executor credential is open to clients (a
public demo page) but not to executors.

:func:`authenticate` turns the first message's token into a
:class:`Credential` or a :class:`Refusal`; :func:`role_refusal` and
:func:`scope_refusal` judge each later request. The hub applies the answers.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from remotemedia.exceptions import AuthenticationError, TokenExpiredError
from remotemedia.tokens import TokenClaims, decode_token, looks_like_jwt

from .config import ServerConfig

__all__ = [
    "ROLE_OF", "Credential", "Refusal", "OPEN", "authenticate", "role_refusal", "scope_refusal", "name_refusal",
    "visible_services",
]

#: What the message types need: ``register`` is the executor's; ``pair`` and
#: ``executors`` (discovery) the client's. Each may be a connection's first message.
ROLE_OF = {"register": "executor", "pair": "client", "executors": "client"}


@dataclass(frozen=True)
class Credential:
    """What a connection authenticated as."""

    #: ``"client"``, ``"executor"``, or ``None`` on a server open to both roles.
    role: str | None
    #: Identity: quotas and executor names are bound to it (one per signed token; one
    #: for everyone holding the same static token).
    id: str
    #: The signed token's claims, or ``None`` for a static token or no token.
    claims: TokenClaims | None = None

    @property
    def label(self) -> str:
        """How logs name it: its id, and the token's subject when it has one (never a secret)."""
        subject = self.claims.subject if self.claims is not None else None
        return self.id if subject is None else f"{self.id} ({subject})"


@dataclass(frozen=True)
class Refusal:
    """A request refused: the error code and the message that says what to do."""

    code: str
    message: str
    #: Whether the connection is closed after the error.
    close: bool = True


#: The credential of every connection to a server open to both roles.
OPEN = Credential(None, "open")

_EXECUTOR_HELP = (
    "executors present the executor credential (--executor-token or REMOTEMEDIA_EXECUTOR_TOKEN where "
    "the server and the executor run, or a token from 'python -m remotemedia token executor')"
)
_CLIENT_HELP = (
    "clients present the client token (auth_token= or REMOTEMEDIA_TOKEN, the server's --token) or a token "
    "from 'python -m remotemedia token client'"
)


def authenticate(config: ServerConfig, kind: str, token: str | None, now: float) -> Credential | Refusal:
    """
    The credential that ``token``, sent in a first ``register`` or ``pair``
    (``kind``), gives at Unix time ``now``; or why it gives none.
    """
    role = ROLE_OF[kind]
    if config.open_to_executors:
        return OPEN
    if role == "client" and config.open_to_clients:
        return Credential("client", "anonymous")
    if token is None:
        needed = _EXECUTOR_HELP if role == "executor" else _CLIENT_HELP
        return Refusal("unauthorized", f"{kind!r} carried no token; {needed}")
    credential = _match(config, token, now)
    if isinstance(credential, Refusal):
        return credential
    return role_refusal(config, credential, role) or credential


def _match(config: ServerConfig, token: str, now: float) -> Credential | Refusal:
    # Every static comparison runs, so timing does not tell which one matched.
    is_executor = config.executor_token is not None and hmac.compare_digest(token.encode(), config.executor_token.encode())
    is_client = config.token is not None and hmac.compare_digest(token.encode(), config.token.encode())
    if is_executor:
        return Credential("executor", "executor-token")
    if is_client:
        return Credential("client", "client-token")
    if config.token_secret is not None and looks_like_jwt(token):
        try:
            claims = decode_token(config.token_secret, token, now=now)
        except TokenExpiredError as exc:
            return Refusal("token_expired", str(exc))
        except AuthenticationError as exc:
            return Refusal("unauthorized", str(exc))
        return Credential(claims.role, f"jwt:{claims.id}", claims)
    return Refusal("unauthorized", f"a wrong token; {_CLIENT_HELP}, and {_EXECUTOR_HELP}")


def role_refusal(config: ServerConfig, credential: Credential, role: str) -> Refusal | None:
    """Why ``credential`` may not act as ``role`` (``None`` when it may)."""
    if credential.role is None or credential.role == role:
        return None
    if role == "executor":
        missing = ""
        if config.executor_token is None and config.token_secret is None:
            missing = "; this server has no executor credential configured: start it with --executor-token too"
        return Refusal("wrong_role", f"a client credential cannot register an executor; {_EXECUTOR_HELP}{missing}")
    return Refusal("wrong_role", f"an executor credential cannot pair or list executors; {_CLIENT_HELP}")


def scope_refusal(credential: Credential, requirements: dict, now: float) -> Refusal | None:
    """Why a ``pair`` with ``requirements`` is outside ``credential``'s token (``None`` when inside)."""
    claims = credential.claims
    if claims is None:
        return None
    if claims.expired(now):
        return Refusal(
            "token_expired",
            f"the token expired {now - claims.expires_at:.0f} s ago; connect again with a new one",
        )
    service = requirements.get("service")
    if service is None and not claims.objects:
        allowed = ", ".join(claims.services) if claims.services else "any service"
        return Refusal(
            "forbidden",
            f"this token allows named services only ({allowed}), not sessions that send Python objects",
            close=False,
        )
    if service is not None and claims.services is not None and service not in claims.services:
        return Refusal(
            "forbidden",
            f"this token does not allow the service {service!r}; it allows {', '.join(claims.services) or 'none'}",
            close=False,
        )
    if requirements.get("gpu") and not claims.gpu:
        return Refusal("forbidden", "this token does not allow asking for a GPU executor", close=False)
    wanted = requirements.get("executor")
    if wanted is not None and claims.executors is not None and wanted not in claims.executors:
        return Refusal(
            "forbidden",
            f"this token does not allow the executor {wanted!r}; it allows {', '.join(claims.executors) or 'none'}",
            close=False,
        )
    return None


def visible_services(credential: Credential, name: str, services: tuple[str, ...]) -> tuple[str, ...] | None:
    """
    What an ``executors`` listing shows ``credential`` of executor ``name``,
    which offers ``services``: the services its token allows, or ``None``
    when the token could not be paired with it at all (an executor outside
    its ``executors``; with no object sessions allowed, one that offers none
    of its services), so the listing leaves it out.
    """
    claims = credential.claims
    if claims is None:
        return services
    if claims.executors is not None and name not in claims.executors:
        return None
    shown = services if claims.services is None else tuple(s for s in services if s in claims.services)
    if not shown and not claims.objects:
        return None
    return shown


def name_refusal(credential: Credential, name: str, owner: str | None) -> Refusal | None:
    """
    Why ``credential`` may not register ``name``, which ``owner`` (a
    credential id, or ``None``) registered first on this server.

    A token minted for a name may register that name only, and takes it from
    any other owner; any other credential may take a name no other
    credential owns.
    """
    claims = credential.claims
    if claims is not None and claims.name is not None:
        if claims.name != name:
            return Refusal(
                "forbidden", f"this executor credential is for the name {claims.name!r}, not {name!r}", close=False
            )
        return None
    if owner is not None and owner != credential.id:
        return Refusal(
            "name_owned",
            f"the name {name!r} belongs to another executor credential, the first to register it on this "
            "server; it stays reserved while that executor reconnects. Pick another name, or mint this "
            "executor a token for the name (python -m remotemedia token executor --name NAME)",
            close=False,
        )
    return None
