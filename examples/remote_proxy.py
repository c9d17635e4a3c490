"""
Run a stateful object on an executor and call it through a proxy (the
specification's section 3.2).

With no arguments it starts the embedded server (``python -m remotemedia
serve``: a signaling server and one executor) on a free port, and stops it at
the end. With ``--host``/``--port`` it uses a server that is already running.

    python examples/remote_proxy.py
    python examples/remote_proxy.py --host 10.0.0.12 --port 50052 --token "$SECRET"

``StreamingDataProcessor`` is defined here, in ``__main__``: the executor
cannot import it, so cloudpickle sends the class by value along with the
instance. Nothing about the class says "remote".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time

import numpy as np

from _embedded import embedded_server, run_main

from remotemedia import RemoteExecutorConfig, RemoteProxyClient


class StreamingDataProcessor:
    """A stateful processor: scales arrays and counts what it processed."""

    def __init__(self, gain: float) -> None:
        self.gain = gain
        self.processed = 0

    def process(self, data: np.ndarray) -> np.ndarray:
        self.processed += 1
        return data * self.gain

    def stream(self, count: int, size: int):
        for i in range(count):
            self.processed += 1
            yield np.full(size, i * self.gain, dtype=np.float32)

    def count(self) -> int:
        return self.processed

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()}"


async def demo(config: RemoteExecutorConfig) -> None:
    started = time.perf_counter()
    async with RemoteProxyClient(config) as client:
        processor = StreamingDataProcessor(gain=2.0)
        remote = await client.create_proxy(processor)
        print(f"connected to executor {client.executor!r} and created {remote!r} "
              f"in {(time.perf_counter() - started) * 1e3:.0f} ms")
        print(f"this script runs in pid {os.getpid()}; the processor runs in {await remote.where()}")

        result = await remote.process(np.arange(4, dtype=np.float32))
        print(f"process([0, 1, 2, 3]) -> {result.tolist()}")

        frames = [frame async for frame in remote.stream(5, 3)]
        print(f"stream(5, 3) -> {len(frames)} frames, the last is {frames[-1].tolist()}")

        samples = []
        frame = np.zeros(320, dtype=np.float32)  # 20 ms of 16 kHz audio
        for _ in range(200):
            t = time.perf_counter()
            await remote.process(frame)
            samples.append(time.perf_counter() - t)
        print(f"200 calls with a 20 ms audio frame: median round trip {statistics.median(samples) * 1e3:.2f} ms")
        print(f"the remote processor has processed {await remote.count()} inputs; the local copy {processor.processed}")
    print("session closed; the executor freed the processor")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="signaling server host (default: start the embedded server)")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--token", default=None, help="the server's token (default: $REMOTEMEDIA_TOKEN)")
    args = parser.parse_args()
    if args.host:
        asyncio.run(demo(RemoteExecutorConfig(host=args.host, port=args.port, auth_token=args.token)))
        return
    with embedded_server() as port:
        asyncio.run(demo(RemoteExecutorConfig(host="127.0.0.1", port=port)))


if __name__ == "__main__":
    run_main(main)
