"""Connection limits without I/O: admitting, refusing and releasing by address."""

from __future__ import annotations

import pytest

from remotemedia.signaling.messages import CLOSE_ADDRESS_FULL, CLOSE_SERVER_FULL, LIMIT_CLOSES
from signaling_server.config import ServerConfig
from signaling_server.limits import ConnectionLimits, address_key


def test_the_per_address_cap_refuses_only_that_address():
    limits = ConnectionLimits(max_connections=100, max_per_address=3)
    assert [limits.admit("10.0.0.1") for _ in range(3)] == [None] * 3
    assert limits.admit("10.0.0.1") == CLOSE_ADDRESS_FULL
    assert limits.admit("10.0.0.2") is None  # another address is served
    assert limits.open == 4 and limits.count("10.0.0.1") == 3
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.1") is None  # a slot freed is a slot again
    assert limits.refused == {"too_many_connections": 1}


def test_the_total_cap_refuses_everyone_until_a_connection_ends():
    limits = ConnectionLimits(max_connections=2, max_per_address=2)
    assert limits.admit("10.0.0.1") is None and limits.admit("10.0.0.2") is None
    assert limits.admit("10.0.0.3") == CLOSE_SERVER_FULL
    limits.release("10.0.0.2")
    assert limits.admit("10.0.0.3") is None
    assert limits.refused == {"server_full": 1}


def test_released_addresses_leave_the_table():
    limits = ConnectionLimits(max_connections=10, max_per_address=10)
    for address in ("10.0.0.1", "10.0.0.1", "2001:db8::1"):
        limits.admit(address)
    assert limits.addresses == 2
    for address in ("10.0.0.1", "10.0.0.1", "2001:db8::1"):
        limits.release(address)
    assert limits.open == 0 and limits.addresses == 0


@pytest.mark.parametrize(
    "address, key",
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # the same host over an IPv6 socket
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one /64, one subscriber
        ("fe80::1%eth0", "fe80::/64"),
        (None, "unknown"),
        ("not an address", "not an address"),
    ],
)
def test_addresses_are_counted_by_host_and_ipv6_by_slash_64(address, key):
    assert address_key(address) == key


def test_an_ipv6_host_cannot_dodge_the_cap_with_fresh_addresses():
    limits = ConnectionLimits(max_connections=100, max_per_address=2)
    assert limits.admit("2001:db8::1") is None and limits.admit("2001:db8::2") is None
    assert limits.admit("2001:db8::3") == CLOSE_ADDRESS_FULL


def test_close_codes_are_application_codes_with_one_error_code_each():
    assert all(4000 <= code <= 4999 for code in LIMIT_CLOSES)
    assert len(set(LIMIT_CLOSES.values())) == len(LIMIT_CLOSES)


@pytest.mark.parametrize(
    "field, value",
    [("max_connections", 0), ("max_connections_per_address", -1), ("idle_timeout", 0), ("max_connections", True)],
)
def test_bad_limits_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ServerConfig(**{field: value})


def test_a_key_without_a_certificate_is_refused():
    with pytest.raises(ValueError, match="tls_cert"):
        ServerConfig(tls_key="key.pem")


def test_the_demo_page_knows_the_same_close_codes():
    import re

    from signaling_server.web import DEFAULT_ROOT

    source = (DEFAULT_ROOT / "signaling.js").read_text()
    table = source[source.index("const LIMIT_CLOSES"):]
    table = table[: table.index("};")]
    assert dict((int(c), n) for c, n in re.findall(r'(\d{4}): \["(\w+)"', table)) == LIMIT_CLOSES


def test_the_open_files_limit_is_raised_to_fit_the_connections(monkeypatch, caplog):
    resource = pytest.importorskip("resource")
    from signaling_server import limits

    calls = []
    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", lambda _, value: calls.append(value))
    limits.ensure_file_descriptors(1000)
    assert calls == [(1064, 4096)]
    limits.ensure_file_descriptors(100)  # fits already
    assert calls == [(1064, 4096)]
    limits.ensure_file_descriptors(10_000)  # beyond the hard limit: as far as it goes, and a warning
    assert calls[-1] == (4096, 4096) and "ulimit -n" in caplog.text
