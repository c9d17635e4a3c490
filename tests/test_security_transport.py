"""
The transport half of the security regression suite (issue 17), against real
processes: TLS with a throwaway CA (``trustme``) for clients, executors, the
embedded server and Chromium on an HTTPS origin that is not localhost; a
client refusing an untrusted certificate, and plain text refused by a server
that speaks TLS; a bounded connection flood, the total cap, and an idle
authenticated connection closed. The page route's symlinks and long names
are tested in ``test_signaling_app.py``, the limit accounting in
``test_signaling_limits.py`` and the idle rule in ``test_signaling_hub.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
import subprocess
import sys
import urllib.request

import pytest
from harness import EXECUTOR_TOKEN, ROOT, TOKEN, ServeProcess, client_config, running_executor, running_server, wait_until
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from remotemedia import ConnectionLimitError, NoExecutorAvailable, RemoteProxyClient, TLSError
from remotemedia.signaling import SignalingClient
from remotemedia.signaling.messages import CLOSE_ADDRESS_FULL, CLOSE_IDLE_TIMEOUT, CLOSE_SERVER_FULL

trustme = pytest.importorskip("trustme")


class Doubler:
    """Sent by value (this module is not importable on the executor)."""

    def double(self, x):
        return 2 * x


def lan_address() -> str:
    """This machine's first non-loopback IPv4 address: an origin that is not localhost."""
    from aioice.ice import get_host_addresses

    addresses = get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not addresses:
        pytest.skip("no non-loopback IPv4 address on this machine")
    return addresses[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1, the LAN address and localhost, as files."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", lan_address(), "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["cert"].write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    files["spki"] = spki_hash(leaf.cert_chain_pems[0].bytes())
    return {name: (str(value) if name != "spki" else value) for name, value in files.items()}


def spki_hash(cert_pem: bytes) -> str:
    """The base64 SHA-256 of a certificate's public key, as Chromium's --ignore-certificate-errors-spki-list wants."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    return base64.b64encode(hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()).decode()


def tls_args(pki) -> tuple[str, ...]:
    return ("--tls-cert", pki["cert"], "--tls-key", pki["key"])


@pytest.fixture(scope="module")
def tls_cluster(pki):
    """A server that speaks only TLS, and an executor that dials it over wss:// trusting the CA."""
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, *tls_args(pki)) as server:
        with running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, "--ca-file", pki["ca"], "--name", "tls-exec") as executor:
            yield server, executor


@pytest.fixture
def no_ca_env(monkeypatch):
    monkeypatch.delenv("REMOTEMEDIA_CA_FILE", raising=False)


# -- TLS -----------------------------------------------------------------------------


async def test_client_and_executor_talk_over_wss_with_the_ca(tls_cluster, pki, no_ca_env, monkeypatch):
    server, executor = tls_cluster
    assert server.url.startswith("wss://127.0.0.1:")
    config = client_config(server, TOKEN, ssl_enabled=True, ca_file=pki["ca"])
    assert config.url == server.url
    async with RemoteProxyClient(config) as client:
        remote = await client.create_proxy(Doubler())
        assert client.executor == executor.name == "tls-exec"
        assert await remote.double(21) == 42
    # The CA from the environment, as an operator would hand it to every client.
    monkeypatch.setenv("REMOTEMEDIA_CA_FILE", pki["ca"])
    async with RemoteProxyClient(client_config(server, TOKEN, ssl_enabled=True)) as client:
        assert await (await client.create_proxy(Doubler())).double(2) == 4
    # The HTTP endpoints are on TLS too.
    context = ssl.create_default_context(cafile=pki["ca"])
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=10, context=context) as response:
        assert b"remotemedia_signaling_pairings_total 2.0" in response.read()


@pytest.mark.parametrize("ca", ["system", "another"])
async def test_a_client_refuses_an_untrusted_certificate_and_says_what_to_do(tls_cluster, tmp_path, no_ca_env, ca):
    server, _ = tls_cluster
    overrides = {"ssl_enabled": True, "reconnect": False}
    if ca == "another":
        trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))
        overrides["ca_file"] = str(tmp_path / "other.pem")
    with pytest.raises(TLSError) as caught:
        async with RemoteProxyClient(client_config(server, TOKEN, **overrides)):
            pass
    assert caught.value.code == "untrusted_certificate"
    assert "ca_file" in str(caught.value) and "REMOTEMEDIA_CA_FILE" in str(caught.value)


def test_an_executor_refuses_an_untrusted_certificate(tls_cluster):
    server, _ = tls_cluster
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("REMOTEMEDIA_CA_FILE", "REMOTEMEDIA_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", "executor", "--signaling", server.url, "--token", TOKEN],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "does not trust" in done.stderr and "--ca-file" in done.stderr


async def test_plain_text_is_refused_when_the_server_speaks_tls(tls_cluster, pki):
    server, _ = tls_cluster
    plain = server.url.replace("wss://", "ws://")
    with pytest.raises(TLSError) as caught:
        await SignalingClient.connect(plain, token=TOKEN)
    assert caught.value.code == "tls_required" and "wss://" in str(caught.value)
    with pytest.raises(TLSError, match="ssl_enabled=True"):
        async with RemoteProxyClient(client_config(server, TOKEN, reconnect=False)):
            pass
    with pytest.raises(OSError):  # a browser's http:// gets no page either
        urllib.request.urlopen(server.http_url.replace("https://", "http://") + "/healthz", timeout=10)
    # The server shrugs it off: it still serves, and logged no traceback.
    context = ssl.create_default_context(cafile=pki["ca"])
    with urllib.request.urlopen(server.http_url + "/healthz", timeout=10, context=context) as response:
        assert response.status == 200
    assert "Traceback" not in server.log()


def test_bad_certificate_files_are_bad_settings(tmp_path):
    (tmp_path / "junk.pem").write_text("not a certificate")
    for module, args in (("signaling_server", []), ("remotemedia", ["serve"])):
        done = subprocess.run(
            [sys.executable, "-m", module, *args, "--port", "0", "--tls-cert", str(tmp_path / "junk.pem")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 2, (module, done.stderr)
        assert "cannot load the TLS certificate" in done.stderr and "--tls-key" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "executor", "--signaling", "wss://127.0.0.1:1", "--ca-file", str(tmp_path / "junk.pem")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "cannot load CA certificates from --ca-file" in done.stderr, done.stderr


async def test_the_embedded_server_serves_tls(pki, no_ca_env):
    serve = ServeProcess(*tls_args(pki))
    try:
        assert serve.url.startswith("wss://127.0.0.1:")
        async with RemoteProxyClient(client_config(serve, None, ssl_enabled=True, ca_file=pki["ca"])) as client:
            assert client.executor == serve.executor
            assert await (await client.create_proxy(Doubler())).double(5) == 10
    finally:
        serve.stop()


def test_chromium_gets_the_camera_on_an_https_origin_that_is_not_localhost(pki):
    from browser import DemoPage, launch, require_browser

    require_browser()
    host = lan_address()
    with running_server("--host", "0.0.0.0", "--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, *tls_args(pki)) as server:
        url = f"wss://127.0.0.1:{server.port}/ws"
        with running_executor(url, "--executor-token", EXECUTOR_TOKEN, "--ca-file", pki["ca"], "--name", "https-exec"):
            # Chromium trusts the server's key as if a CA it knows had signed it.
            with launch(extra_args=(f"--ignore-certificate-errors-spki-list={pki['spki']}",)) as browser:
                page = DemoPage.open(
                    browser, f"https://{host}:{server.port}/?autostart=1&width=320&height=240&transcribe=0&token={TOKEN}"
                )
                try:
                    origin = page.page.evaluate("() => [location.protocol, location.hostname, window.isSecureContext]")
                    assert origin == ["https:", host, True]
                    page.wait_for_state("running", timeout=45)
                    page.wait_for("n => window.remotemedia.framesReceived >= n", 10, what="10 processed frames")
                    assert page.state()["executor"] == "https-exec"
                finally:
                    page.close()


# -- connection limits ---------------------------------------------------------------


async def close_code(ws, timeout: float = 10.0) -> int:
    """Waits for the server to close ``ws``; its close code."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    return ws.close_code


def metric(server, name: str) -> float:
    _, _, body = server.get("/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_a_connection_flood_is_bounded_per_address_and_others_are_served():
    with running_server("--host", "0.0.0.0", "--max-connections-per-address", "20", "--hello-timeout", "120") as server:
        # Dialled at the LAN address, a connection comes from it; at 127.0.0.1, from 127.0.0.1.
        flooder = f"ws://{lan_address()}:{server.port}/ws"
        other = f"ws://127.0.0.1:{server.port}/ws"
        async with contextlib.AsyncExitStack() as flood:
            for _ in range(20):
                await flood.enter_async_context(connect(flooder, compression=None))
            async with connect(flooder, compression=None) as twenty_first:
                assert await close_code(twenty_first) == CLOSE_ADDRESS_FULL
            # The Python client names it and says what to do.
            async with await SignalingClient.connect(flooder) as client:
                with pytest.raises(ConnectionLimitError) as caught:
                    await client.pair(timeout=10)
            assert caught.value.code == "too_many_connections"
            assert "--max-connections-per-address" in str(caught.value)
            # Another address is served meanwhile, executor and client alike.
            with running_executor(other, "--name", "unbothered"):
                async with await SignalingClient.connect(other) as client:
                    session = await client.pair(timeout=10)
                    assert session.executor == "unbothered"
        # The flood gone, its address is served again.
        await wait_until(lambda: metric(server, "remotemedia_signaling_connections_open") == 0, timeout=10)
        async with await SignalingClient.connect(flooder) as client:
            with pytest.raises(NoExecutorAvailable):
                await client.pair(timeout=10)
        assert metric(server, 'remotemedia_signaling_connections_refused_total{reason="too_many_connections"}') == 2
        assert "Traceback" not in server.log()


async def test_the_total_cap_closes_with_server_full():
    with running_server("--max-connections", "3", "--hello-timeout", "120") as server:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(3):
                await held.enter_async_context(connect(server.url, compression=None))
            async with connect(server.url, compression=None) as fourth:
                assert await close_code(fourth) == CLOSE_SERVER_FULL
            async with await SignalingClient.connect(server.url) as client:
                with pytest.raises(ConnectionLimitError, match="try again later") as caught:
                    await client.pair(timeout=10)
            assert caught.value.code == "server_full"
        assert metric(server, 'remotemedia_signaling_connections_refused_total{reason="server_full"}') == 2


async def test_an_idle_authenticated_connection_is_closed_after_the_idle_timeout():
    with running_server("--token", TOKEN, "--executor-token", EXECUTOR_TOKEN, "--idle-timeout", "1") as server:
        async with connect(server.url, compression=None) as raw:
            await raw.send('{"type": "pair", "token": "%s"}' % TOKEN)  # authenticated; no executor to pair with
            assert await close_code(raw, timeout=30) == CLOSE_IDLE_TIMEOUT
        with running_executor(server.url, "--executor-token", EXECUTOR_TOKEN, "--name", "busy-enough") as executor:
            async with await SignalingClient.connect(server.url, token=TOKEN) as client:
                session = await client.pair(timeout=10)  # in a session: not idle
                await session.close("done")
                await wait_until(lambda: client.closed, timeout=30)
                with pytest.raises(ConnectionLimitError) as caught:
                    await client.pair(timeout=10)
            assert caught.value.code == "idle_timeout" and "connect again" in str(caught.value)
            assert executor.alive and server.health()["executors"] == 1  # a registered executor is never idle
        assert metric(server, 'remotemedia_signaling_errors_total{code="idle_timeout"}') == 2


def test_the_page_says_when_the_server_is_full():
    from browser import DemoPage, launch, require_browser
    from websockets.sync.client import connect as sync_connect

    require_browser()
    with running_server("--max-connections", "1", "--hello-timeout", "120") as server:
        with launch() as browser, sync_connect(server.url, compression=None) as held:
            page = DemoPage.open(browser, f"{server.http_url}/?autostart=1&width=320&height=240&transcribe=0")
            try:
                state = page.wait_for_state("error")
                assert state["error"]["code"] == "server_full"
                assert "Try again in a while" in page.testid("status-banner").inner_text()
                held.close()
                page.testid("retry-button").click()  # served now: it hears there is no executor
                page.wait_for("() => window.remotemedia.error && window.remotemedia.error.code === 'no_executor'",
                              what="the no_executor error after the retry")
            finally:
                page.close()
