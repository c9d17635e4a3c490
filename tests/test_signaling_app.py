"""
The aiohttp application embedded in the test's event loop (``start_server``):
behaviour that needs the server's settings at hand, such as a peer that stops
reading, and embedding itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from signaling_server import ServerConfig, start_server

TIMEOUT = 10.0


async def recv(ws, timeout: float = TIMEOUT) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_a_peer_that_stops_reading_is_dropped_and_others_are_served():
    config = ServerConfig(outbox_size=32, rate_limit=1e6, rate_burst=10**6)
    server = await start_server(config, port=0)
    try:
        async with connect(server.url, compression=None, close_timeout=1) as executor, connect(
            server.url, compression=None, max_queue=1, close_timeout=1
        ) as stuck:
            await executor.send(json.dumps({"type": "register", "name": "e", "capacity": 2}))
            assert (await recv(executor))["type"] == "registered"
            await stuck.send(json.dumps({"type": "pair"}))
            paired = await recv(stuck)
            assert (await recv(executor))["type"] == "session"
            # `stuck` never reads again; with max_queue=1 its library stops
            # reading the socket, so the kernel buffers fill, then the outbox.
            candidate = {"candidate": "c" * 4000, "sdpMid": "0", "sdpMLineIndex": 0}
            flood = json.dumps({"type": "candidate", "session": paired["session"], "candidate": candidate})

            bye: asyncio.Future = asyncio.get_running_loop().create_future()

            async def read_executor():
                # Until the executor's socket closes; candidates sent after the
                # bye come back as unknown_session errors.
                with contextlib.suppress(ConnectionClosed):
                    async for raw in executor:
                        message = json.loads(raw)
                        if message["type"] == "bye" and not bye.done():
                            bye.set_result(message)

            async def send_flood():
                for _ in range(20_000):
                    if bye.done():
                        return
                    await executor.send(flood)

            reader = asyncio.create_task(read_executor())
            sender = asyncio.create_task(send_flood())
            try:
                # The server drops `stuck`, so the executor hears bye.
                message = await asyncio.wait_for(bye, TIMEOUT)
                assert message["session"] == paired["session"]
                assert "client disconnected" in message["reason"]
                # The flood stops by itself; the reader keeps the executor's
                # socket flowing meanwhile.
                await asyncio.wait_for(sender, TIMEOUT)
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            # A new client is served at once.
            async with connect(server.url, compression=None) as client:
                await client.send(json.dumps({"type": "pair"}))
                assert (await recv(client))["type"] == "paired"
        # The executor's socket is closed: its reader ends by itself.
        await asyncio.wait_for(reader, TIMEOUT)
    finally:
        await server.close()


async def test_embedded_server_closes_its_connections_when_stopped():
    server = await start_server(ServerConfig(), port=0)
    assert server.url.startswith("ws://127.0.0.1:")
    async with connect(server.url, compression=None) as ws:
        await ws.send(json.dumps({"type": "pair"}))
        assert (await recv(ws))["code"] == "no_executor"
        await server.close()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1001


async def test_a_busy_port_raises_oserror():
    first = await start_server(port=0)
    try:
        with pytest.raises(OSError):
            await start_server(port=first.port)
    finally:
        await first.close()


async def test_the_demo_page_is_served_at_the_root_unless_turned_off(tmp_path):
    import aiohttp

    (tmp_path / "index.html").write_text("<p>own page</p>")
    (tmp_path / ".secret").write_text("hidden")
    for config, expect in [(ServerConfig(), "<script"), (ServerConfig(web_root=str(tmp_path)), "own page")]:
        server = await start_server(config, port=0)
        try:
            assert server.page_url == f"http://127.0.0.1:{server.port}/"
            async with aiohttp.ClientSession() as http:
                async with http.get(server.page_url) as response:
                    assert response.status == 200 and expect in await response.text()
                    assert response.headers["Cache-Control"] == "no-cache"
                for path in (".secret", "..%2Fpyproject.toml", "missing.js"):
                    async with http.get(server.page_url + path) as response:
                        assert response.status == 404, path
                async with http.get(server.page_url + "healthz") as response:
                    assert (await response.json())["status"] == "ok"  # the API routes come first
        finally:
            await server.close()
    server = await start_server(ServerConfig(web_root=None), port=0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.page_url) as response:
                assert response.status == 404
    finally:
        await server.close()


async def test_the_page_route_serves_only_regular_files_and_survives_long_names(tmp_path, caplog):
    import logging
    import os

    import aiohttp

    outside = tmp_path / "outside.txt"
    outside.write_text("secret outside the folder")
    root = tmp_path / "page"
    root.mkdir()
    (root / "index.html").write_text("<p>own page</p>")
    (root / "app.js").write_text("// fine")
    os.symlink(outside, root / "escape.txt")  # out of the folder
    os.symlink(root / "app.js", root / "alias.js")  # inside it, yet a link all the same
    (root / "sub").mkdir()
    os.mkfifo(root / "fifo")  # not a regular file: opening it would block
    server = await start_server(ServerConfig(web_root=str(root)), port=0)
    caplog.set_level(logging.ERROR)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.page_url + "app.js") as response:
                assert response.status == 200
            for name in ("escape.txt", "alias.js", "sub", "fifo", "a" * 5000, "b" * 256):
                async with http.get(server.page_url + name) as response:
                    assert response.status == 404, name[:20]
                    assert "secret" not in await response.text()
    finally:
        await server.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
