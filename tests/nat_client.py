"""
The client side of the NAT lab's tests (tests/test_nat_traversal.py), run
inside the client's network namespace: ``python tests/nat_client.py SCENARIO JSON``.

It prints one JSON object per line: what it saw (the route, results, times)
and, for ``reconnect``, a ``ready`` line, after which it waits for a line on
stdin (the test breaks the route meanwhile) before it measures the recovery.
Scenarios:

- ``session``: a call, a duplex stream and audio over a media track;
- ``connect``: only connect (and say how, or why not);
- ``reconnect``: connect, call, wait for the route to break, then measure
  how long until the loss is noticed and until a call works again;
- ``bench``: call round trips and 1 MiB echoes, and the set-up time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from media_samples import audio_frames, sine  # noqa: E402

from remotemedia import AudioFrame, RemoteExecutorConfig, RemoteProxyClient  # noqa: E402
from remotemedia.exceptions import RemoteMediaError  # noqa: E402


class Echo:
    """What the executor runs (travels by value)."""

    def ping(self, value):
        return value

    async def doubled(self, items):
        async for item in items:
            yield 2 * item

    async def audio(self, frames):
        async for frame in frames:
            yield frame


async def _items(values):
    for value in values:
        yield value


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def session(client: RemoteProxyClient) -> None:
    remote = await client.create_proxy(Echo())
    answer = await remote.ping("through the NATs")
    doubled = [x async for x in remote.doubled(_items(range(20)))]
    sent = audio_frames(sine(16000, 0.5, hz=440), 16000, 320)
    got = [f async for f in remote.audio(_items(sent)).over_tracks()]
    samples = sum(f.num_samples for f in got if isinstance(f, AudioFrame))
    say(route=client.route.kind, detail=str(client.route), answer=answer, doubled=doubled, audio_samples=samples)


async def reconnect(client: RemoteProxyClient) -> None:
    remote = await client.create_proxy(Echo())
    await remote.ping(0)
    say(ready=True, route=client.route.kind, detail=str(client.route))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the route is broken now
    broken = time.monotonic()
    # Calls keep going, as an application's would; the first failure is the loss noticed.
    noticed = None
    while noticed is None:
        try:
            await asyncio.wait_for(remote.ping(1), client.config.heartbeat_timeout * 3)
        except RemoteMediaError:
            noticed = time.monotonic() - broken
        await asyncio.sleep(0.05)
    error = await client.wait_reconnection()
    if error is not None:
        say(noticed_s=noticed, error=str(error))
        return
    await remote.ping(2)
    say(noticed_s=noticed, recovered_s=time.monotonic() - broken, reconnects=client.reconnects,
        route=client.route.kind, detail=str(client.route))


async def bench(client: RemoteProxyClient, setup_s: float, rounds: int) -> None:
    remote = await client.create_proxy(Echo())
    await remote.ping(0)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await remote.ping(1)
        times.append(time.perf_counter() - start)
    blob = np.random.default_rng(0).integers(0, 255, 1 << 20, dtype=np.uint8)
    await remote.ping(blob)
    mib = []
    for _ in range(max(3, rounds // 20)):
        start = time.perf_counter()
        back = await remote.ping(blob)
        mib.append(time.perf_counter() - start)
        assert back.nbytes == blob.nbytes
    say(route=client.route.kind, setup_s=setup_s, call_ms=1000 * float(np.median(times)),
        mib_echo_ms=1000 * float(np.median(mib)))


async def main(scenario: str, settings: dict) -> None:
    media = settings.pop("media_tracks", 0)
    rounds = settings.pop("rounds", 200)
    config = RemoteExecutorConfig(**settings)
    start = time.perf_counter()
    try:
        client = RemoteProxyClient(config, media_tracks=media)
        await client.connect()
    except RemoteMediaError as exc:
        say(error=str(exc), error_type=type(exc).__name__, elapsed_s=time.perf_counter() - start)
        return
    setup_s = time.perf_counter() - start
    try:
        if scenario == "connect":
            say(route=client.route.kind, detail=str(client.route), setup_s=setup_s)
        elif scenario == "session":
            await session(client)
        elif scenario == "reconnect":
            await reconnect(client)
        elif scenario == "bench":
            await bench(client, setup_s, rounds)
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
