"""remotemedia.tokens: minting and checking scoped, expiring tokens, and the CLI that mints them (no network)."""

from __future__ import annotations

import subprocess
import sys

import jwt
import pytest

from remotemedia.exceptions import AuthenticationError, TokenExpiredError
from remotemedia.tokens import (
    MIN_SECRET_LENGTH,
    TokenClaims,
    check_secret,
    decode_token,
    looks_like_jwt,
    mint_client_token,
    mint_executor_token,
)

from harness import ROOT

SECRET = "s" * MIN_SECRET_LENGTH
NOW = 1_700_000_000.0


def test_a_client_token_round_trips_its_scope():
    token = mint_client_token(
        SECRET,
        expires_in=60,
        services=["demo", "effects"],
        objects=False,
        gpu=False,
        executors=["gpu-1"],
        max_sessions=3,
        subject="alice",
        now=NOW,
    )
    assert looks_like_jwt(token)
    claims = decode_token(SECRET, token, now=NOW + 59)
    assert claims.role == "client" and claims.subject == "alice"
    assert claims.services == ("demo", "effects") and claims.executors == ("gpu-1",)
    assert (claims.objects, claims.gpu, claims.max_sessions) == (False, False, 3)
    assert claims.expires_at == NOW + 60
    assert claims.id and claims.name is None


def test_defaults_allow_everything_for_an_hour():
    claims = decode_token(SECRET, mint_client_token(SECRET, now=NOW), now=NOW)
    assert claims == TokenClaims(role="client", id=claims.id, expires_at=NOW + 3600)


def test_each_token_has_its_own_id():
    a, b = (decode_token(SECRET, mint_client_token(SECRET, now=NOW), now=NOW) for _ in range(2))
    assert a.id != b.id


def test_an_executor_token_carries_its_name_and_need_not_expire():
    claims = decode_token(SECRET, mint_executor_token(SECRET, name="gpu-1", now=NOW), now=NOW + 10**8)
    assert (claims.role, claims.name, claims.expires_at) == ("executor", "gpu-1", None)


def test_an_expired_token_is_refused_as_expired():
    token = mint_client_token(SECRET, expires_in=10, now=NOW)
    with pytest.raises(TokenExpiredError, match="expired 5 s ago") as caught:
        decode_token(SECRET, token, now=NOW + 15)
    assert caught.value.code == "token_expired"
    assert isinstance(caught.value, AuthenticationError)


@pytest.mark.parametrize(
    "token, why",
    [
        (mint_client_token("x" * 40, now=NOW), "signature"),
        (jwt.encode({"role": "client", "jti": "a", "aud": "elsewhere"}, SECRET, algorithm="HS256"), "not issued"),
        (jwt.encode({"role": "client", "jti": "a"}, SECRET, algorithm="HS256"), "aud"),
        (jwt.encode({"role": "admin", "jti": "a", "aud": "remotemedia-signaling"}, SECRET, algorithm="HS256"), "role"),
        (jwt.encode({"jti": "a", "aud": "remotemedia-signaling"}, SECRET, algorithm="HS256"), "role"),
        (jwt.encode({"role": "client", "jti": "a", "aud": "remotemedia-signaling", "max_sessions": 0}, SECRET, algorithm="HS256"), "max_sessions"),
        (jwt.encode({"role": "client", "jti": "a", "aud": "remotemedia-signaling", "services": "demo"}, SECRET, algorithm="HS256"), "services"),
        (jwt.encode({"role": "client", "jti": "a", "aud": "remotemedia-signaling", "objects": 1}, SECRET, algorithm="HS256"), "objects"),
        (jwt.encode({"role": "client", "jti": "a", "aud": "remotemedia-signaling"}, SECRET * 2, algorithm="HS512"), "alg"),
        ("a.b.c", "refused"),
    ],
)
def test_bad_tokens_are_refused_saying_why(token, why):
    with pytest.raises(AuthenticationError, match=why) as caught:
        decode_token(SECRET, token, now=NOW)
    assert caught.value.code == "unauthorized"


def test_an_unsigned_token_is_refused():
    token = jwt.encode({"role": "executor", "jti": "a", "aud": "remotemedia-signaling"}, None, algorithm="none")
    with pytest.raises(AuthenticationError):
        decode_token(SECRET, token, now=NOW)


@pytest.mark.parametrize("secret", ["short", "", None, b"x" * 40])
def test_short_or_odd_secrets_are_refused(secret):
    with pytest.raises(ValueError, match="at least 32 bytes"):
        check_secret(secret)
    with pytest.raises(ValueError):
        mint_client_token(secret)


@pytest.mark.parametrize(
    "kwargs", [{"max_sessions": 0}, {"max_sessions": True}, {"services": "demo"}, {"executors": [""]}, {"expires_in": -1}]
)
def test_minting_refuses_bad_scopes(kwargs):
    with pytest.raises(ValueError):
        mint_client_token(SECRET, **kwargs)


def test_looks_like_jwt():
    assert not looks_like_jwt("plain-secret")
    assert not looks_like_jwt(None)
    assert looks_like_jwt(mint_executor_token(SECRET))


def run_cli(*args, secret=SECRET):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if secret is not None:
        env["REMOTEMEDIA_TOKEN_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "remotemedia", "token", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def test_the_cli_mints_a_scoped_client_token():
    result = run_cli("client", "--expires-in", "120", "--service", "demo", "--no-objects", "--max-sessions", "2")
    assert result.returncode == 0, result.stderr
    claims = decode_token(SECRET, result.stdout.strip(), now=NOW)
    assert (claims.role, claims.services, claims.objects, claims.max_sessions) == ("client", ("demo",), False, 2)
    assert claims.expires_at is not None


def test_the_cli_mints_an_executor_token_from_a_secret_file(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    result = run_cli("executor", "--name", "gpu-1", "--secret-file", str(path), secret=None)
    assert result.returncode == 0, result.stderr
    claims = decode_token(SECRET, result.stdout.strip(), now=NOW)
    assert (claims.role, claims.name, claims.expires_at) == ("executor", "gpu-1", None)


def test_the_cli_without_a_secret_says_what_to_set():
    result = run_cli("client", secret=None)
    assert result.returncode == 2
    assert "REMOTEMEDIA_TOKEN_SECRET" in result.stderr and not result.stdout
