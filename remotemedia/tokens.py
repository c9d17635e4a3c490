"""
Scoped, expiring credentials for the signaling server: JSON Web Tokens
signed (HS256, with PyJWT) by a secret that only the server and whoever mints
tokens hold (``REMOTEMEDIA_TOKEN_SECRET``).

Two roles, never interchangeable:

- a **client** token pairs with executors. It carries an expiry and a scope:
  the services it may ask for, whether it may open object sessions (upload
  Python objects, which executors unpickle), whether it may ask for a GPU,
  which executors it may be paired with, and a quota of sessions open at once.
  A leaked client token gives no more than that scope, until it expires.
- an **executor** token registers executors; one minted with ``name=`` may
  register only that name, which binds the name to the credential across
  restarts of the server.

Mint them with :func:`mint_client_token` and :func:`mint_executor_token`, or
on the command line::

    export REMOTEMEDIA_TOKEN_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    python -m remotemedia token client --expires-in 3600 --service demo --no-objects --max-sessions 2
    python -m remotemedia token executor --name gpu-1

The server checks them with :func:`decode_token` (``--token-secret``). The
clock is passed in, so the checks are tested without waiting.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from dataclasses import dataclass

import jwt

from .exceptions import AuthenticationError, TokenExpiredError

__all__ = [
    "ROLES",
    "MIN_SECRET_LENGTH",
    "TokenClaims",
    "mint_client_token",
    "mint_executor_token",
    "decode_token",
    "looks_like_jwt",
    "check_secret",
    "add_token_command",
    "run_token_command",
]

#: The roles a token can carry.
ROLES = ("client", "executor")
#: Shortest secret accepted, in bytes: RFC 7518 asks HS256 keys for at least 256 bits.
MIN_SECRET_LENGTH = 32
_ALGORITHM = "HS256"
# Tokens meant for something else, signed with the same secret, are refused.
_AUDIENCE = "remotemedia-signaling"


@dataclass(frozen=True)
class TokenClaims:
    """What a valid token allows, as the server reads it."""

    #: ``"client"`` or ``"executor"``.
    role: str
    #: Unique id of the token (``jti``): quotas and executor names are counted per id.
    id: str
    #: Who it was issued to, for logs (``sub``), or ``None``.
    subject: str | None = None
    #: Unix time after which it is refused (``exp``), or ``None`` for no expiry.
    expires_at: float | None = None
    #: Client: service names it may ask for; ``None`` allows any.
    services: tuple[str, ...] | None = None
    #: Client: whether it may open object sessions (send Python objects to executors).
    objects: bool = True
    #: Client: whether it may ask for a GPU executor.
    gpu: bool = True
    #: Client: executor names it may be paired with; ``None`` allows any.
    executors: tuple[str, ...] | None = None
    #: Client: sessions it may hold open at once, over all its connections; ``None``: no quota.
    max_sessions: int | None = None
    #: Executor: the one name it may register; ``None`` allows any free name.
    name: str | None = None

    def expired(self, now: float) -> bool:
        """Whether the token has expired at Unix time ``now``."""
        return self.expires_at is not None and now >= self.expires_at


def check_secret(secret: str) -> None:
    """Raise ``ValueError`` unless ``secret`` is a string long enough to sign tokens."""
    if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the token secret must be a string of at least {MIN_SECRET_LENGTH} bytes; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def _names(value, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of names, not {value!r}")
    return list(value)


def _mint(secret: str, claims: dict, expires_in: float | None, subject: str | None, now: float | None) -> str:
    check_secret(secret)
    now = time.time() if now is None else now
    body = {"aud": _AUDIENCE, "iat": int(now), "jti": secrets.token_urlsafe(12), **claims}
    if expires_in is not None:
        if not expires_in > 0:
            raise ValueError(f"expires_in must be a positive number of seconds or None, not {expires_in!r}")
        body["exp"] = int(now + expires_in)
    if subject is not None:
        body["sub"] = str(subject)
    return jwt.encode(body, secret, algorithm=_ALGORITHM)


def mint_client_token(
    secret: str,
    *,
    expires_in: float | None = 3600.0,
    services: list[str] | None = None,
    objects: bool = True,
    gpu: bool = True,
    executors: list[str] | None = None,
    max_sessions: int | None = None,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """
    A client token signed with ``secret`` (the server's ``--token-secret``).

    ``expires_in`` seconds from ``now`` (default: the current time); ``None``
    mints one that never expires, which is rarely wise. ``services``,
    ``executors``: the names allowed (``None``: any). ``objects=False``
    allows only named services (no Python objects, so nothing is unpickled
    on executors for this token). ``max_sessions``: sessions open at once
    over all connections using the token.
    """
    if max_sessions is not None and (not isinstance(max_sessions, int) or isinstance(max_sessions, bool) or max_sessions < 1):
        raise ValueError(f"max_sessions must be a positive integer or None, not {max_sessions!r}")
    claims: dict = {"role": "client", "objects": bool(objects), "gpu": bool(gpu)}
    for key, value in (("services", services), ("executors", executors)):
        names = _names(value, key)
        if names is not None:
            claims[key] = names
    if max_sessions is not None:
        claims["max_sessions"] = max_sessions
    return _mint(secret, claims, expires_in, subject, now)


def mint_executor_token(
    secret: str,
    *,
    name: str | None = None,
    expires_in: float | None = None,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """
    An executor token signed with ``secret``. With ``name``, it registers
    only under that name, and no other credential can take the name.
    """
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string or None, not {name!r}")
    claims: dict = {"role": "executor"}
    if name is not None:
        claims["name"] = name
    return _mint(secret, claims, expires_in, subject, now)


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has a JWT's shape (three dot-separated parts), so is worth decoding."""
    return isinstance(token, str) and token.count(".") == 2


def _refused(why: str) -> AuthenticationError:
    return AuthenticationError(f"the token was refused: {why}")


def decode_token(secret: str, token: str, *, now: float) -> TokenClaims:
    """
    Check ``token``'s signature and claims at Unix time ``now``.

    Raises :exc:`TokenExpiredError` for an expired token and
    :exc:`AuthenticationError` for anything else wrong with it (a bad
    signature, another audience, a malformed claim).
    """
    try:
        body = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=_AUDIENCE,
            # Expiry is checked below against the clock passed in.
            options={"verify_exp": False, "verify_iat": False, "require": ["role", "jti"]},
        )
    except jwt.InvalidAudienceError:
        raise _refused("it was not issued for a RemoteMedia signaling server") from None
    except jwt.InvalidSignatureError:
        raise _refused("its signature does not match this server's token secret") from None
    except jwt.PyJWTError as exc:
        raise _refused(str(exc)) from None
    role = body["role"]
    if role not in ROLES:
        raise _refused(f"unknown role {role!r}")
    expires_at = body.get("exp")
    if expires_at is not None and (not isinstance(expires_at, (int, float)) or isinstance(expires_at, bool)):
        raise _refused("its 'exp' is not a number")
    try:
        claims = TokenClaims(
            role=role,
            id=str(body["jti"]),
            subject=None if body.get("sub") is None else str(body["sub"]),
            expires_at=None if expires_at is None else float(expires_at),
            services=_tuple(body.get("services"), "services"),
            objects=_flag(body.get("objects", True), "objects"),
            gpu=_flag(body.get("gpu", True), "gpu"),
            executors=_tuple(body.get("executors"), "executors"),
            max_sessions=_quota(body.get("max_sessions")),
            name=None if body.get("name") is None else str(body["name"]),
        )
    except ValueError as exc:
        raise _refused(str(exc)) from None
    if claims.expired(now):
        raise TokenExpiredError(
            f"the token expired {now - claims.expires_at:.0f} s ago; ask its issuer for a new one "
            "(python -m remotemedia token client ...)"
        )
    return claims


def _tuple(value, what: str) -> tuple[str, ...] | None:
    names = _names(value, f"claim {what!r}")
    return None if names is None else tuple(names)


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"claim {what!r} must be true or false")
    return value


def _quota(value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError("claim 'max_sessions' must be a positive integer")
    return value


# -- command line: python -m remotemedia token ... ---------------------------------------


def add_token_command(commands) -> None:
    """Add ``token client|executor`` to an ``argparse`` subparsers object."""
    token = commands.add_parser(
        "token",
        help="mint a client or executor token (signed with $REMOTEMEDIA_TOKEN_SECRET)",
        description="Print a signed token for the signaling server started with the same --token-secret.",
    )
    roles = token.add_subparsers(dest="role", required=True)
    client = roles.add_parser("client", help="a token that pairs with executors, within a scope")
    client.add_argument("--expires-in", type=float, default=3600.0, metavar="SECONDS", help="lifetime (default: %(default)s; 0: never expires)")
    client.add_argument("--service", action="append", dest="services", metavar="NAME", help="a service it may ask for (repeatable; default: any)")
    client.add_argument("--no-objects", action="store_true", help="allow named services only: no Python objects sent to executors")
    client.add_argument("--no-gpu", action="store_true", help="may not ask for a GPU executor")
    client.add_argument("--executor", action="append", dest="executors", metavar="NAME", help="an executor it may be paired with (repeatable; default: any)")
    client.add_argument("--max-sessions", type=int, default=None, metavar="N", help="sessions open at once over all its connections (default: no quota)")
    client.add_argument("--subject", default=None, help="who it is for (shown in the server's logs)")
    executor = roles.add_parser("executor", help="a token that registers executors")
    executor.add_argument("--name", default=None, help="the one name it may register (default: any free name)")
    executor.add_argument("--expires-in", type=float, default=0.0, metavar="SECONDS", help="lifetime (default: 0, never expires)")
    executor.add_argument("--subject", default=None, help="who it is for (shown in the server's logs)")
    for parser in (client, executor):
        parser.add_argument(
            "--secret-file",
            default=None,
            metavar="PATH",
            help="read the secret from this file instead of $REMOTEMEDIA_TOKEN_SECRET",
        )


def run_token_command(args: argparse.Namespace) -> int:
    """Print the token ``args`` asks for; returns the exit status (2 for bad settings)."""
    if args.secret_file is not None:
        with open(args.secret_file, encoding="utf-8") as file:
            secret = file.read().strip()
    else:
        secret = os.environ.get("REMOTEMEDIA_TOKEN_SECRET", "")
    expires_in = args.expires_in or None
    try:
        if args.role == "client":
            token = mint_client_token(
                secret,
                expires_in=expires_in,
                services=args.services,
                objects=not args.no_objects,
                gpu=not args.no_gpu,
                executors=args.executors,
                max_sessions=args.max_sessions,
                subject=args.subject,
            )
        else:
            token = mint_executor_token(secret, name=args.name, expires_in=expires_in, subject=args.subject)
    except ValueError as exc:
        print(f"remotemedia token: {exc} (set REMOTEMEDIA_TOKEN_SECRET to the server's --token-secret)", file=sys.stderr)
        return 2
    print(token)
    return 0
