"""
Named services on real executor processes, used from Python with
RemoteServiceNode (the browser's way, without a browser): the default set,
a user's own through ``--services``, and every way a session can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import numpy as np
import pytest
from harness import ROOT, TOKEN, client_config

from remotemedia import AudioFrame, NoExecutorAvailable, RemoteExecutionError, Transcript, VideoFrame
from remotemedia import Pipeline
from remotemedia.remote import RemoteServiceNode

from speech_samples import FIRST, SECOND, say, word_error_rate


@pytest.fixture(scope="module")
def cluster_executors():
    return (("--name", "svc", "--services", "services_sample:SERVICES", "--max-sessions", "8"),)


@pytest.fixture(scope="module")
def cluster_env():
    # The executor imports the sample services from tests/.
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}


def scene(i: int, size=(240, 320)) -> VideoFrame:
    """A frame with a moving gradient and a red box: edges, colors and flat areas."""
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    image = np.stack([(x + 4 * i) % 256, y % 256, ((x + y) // 4) % 256], axis=2).astype(np.uint8)
    image[60:180, 100:200] = [220, 40, 40]
    return VideoFrame(image, "rgb24", i / 30)


async def camera(frames: int = 45):
    """Video paced like a 30 fps camera."""
    for i in range(frames):
        yield scene(i)
        await asyncio.sleep(1 / 30)


async def microphone(samples: np.ndarray, rate: int, tail_s: float = 1.5):
    """Audio paced like a microphone, 20 ms at a time, with silence after it."""
    samples = np.concatenate([samples.reshape(-1), np.zeros(int(rate * tail_s), samples.dtype)])
    step = rate // 50
    for start in range(0, len(samples), step):
        yield AudioFrame(samples[start : start + step].reshape(1, -1), rate, start / rate)
        await asyncio.sleep(0.02)


async def run(node: RemoteServiceNode, source) -> list:
    return [item async for item in node.stream(source)]


def config(server, **overrides):
    return client_config(server, TOKEN, connect_timeout=20.0, **overrides)


async def test_effects_service_returns_processed_video(cluster):
    node = RemoteServiceNode("effects", config(cluster), options={"effect": "invert"})
    out = await asyncio.wait_for(run(node, camera()), 60)
    video = [o for o in out if isinstance(o, VideoFrame)]
    assert len(video) >= 10  # live: a few may be replaced by newer ones, most arrive
    assert node.welcome["executor"] == "svc" and node.welcome["options"] == {"effect": "invert"}
    assert node.welcome["choices"]["effect"] == ["none", "edges", "cartoon", "blur", "invert"]
    # The red box comes back inverted (cyan), through VP8 both ways.
    box = video[-1].image[90:150, 120:180].reshape(-1, 3).mean(axis=0)
    assert box[0] < 80 and box[1] > 170 and box[2] > 170, box


async def test_a_service_in_a_pipeline_is_reported_where_it_ran(cluster):
    node = RemoteServiceNode("effects", config(cluster), options={"effect": "none"})
    pipeline = Pipeline("svc").add_node(node)
    out = await asyncio.wait_for(pipeline.run_async(camera(15)), 60)
    assert out and node.executor == "svc"
    (stats,) = pipeline.last_run_stats
    assert stats.remote and stats.location == "svc"


async def test_a_users_own_service_from_services_flag(cluster):
    node = RemoteServiceNode("brighten", config(cluster), options={"amount": 100})
    out = await asyncio.wait_for(run(node, camera(30)), 60)
    video = [o for o in out if isinstance(o, VideoFrame)]
    assert video and node.welcome["options"] == {"amount": 100}
    dark = video[-1].image[5:40, 5:40].astype(float).mean()
    sent = scene(29).image[5:40, 5:40].astype(float).mean()
    assert dark > sent + 60  # brighter by about 100 (the codec blurs a little)


async def test_a_factory_function_service_sends_text(cluster):
    node = RemoteServiceNode("announce", config(cluster), options={"greeting": "hi"})
    out = await asyncio.wait_for(run(node, camera(10)), 60)
    assert "hi VideoFrame" in [o for o in out if isinstance(o, str)]


async def test_transcribe_service_hears_the_microphone(cluster):
    samples, rate = say(FIRST)
    node = RemoteServiceNode("transcribe", config(cluster))
    out = await asyncio.wait_for(run(node, microphone(samples, rate)), 90)
    heard = " ".join(o.text for o in out if isinstance(o, Transcript))
    assert word_error_rate(FIRST, heard) < 0.2, heard


async def test_talkback_answers_with_speech(cluster):
    samples, rate = say(FIRST)
    node = RemoteServiceNode("demo", config(cluster), options={"talkback": True, "transcribe": False})
    out = await asyncio.wait_for(run(node, microphone(samples, rate)), 90)
    replies = [o["text"] for o in out if isinstance(o, dict) and o.get("type") == "reply"]
    assert len(replies) == 1 and replies[0].startswith("You said:")
    assert word_error_rate(FIRST, replies[0][len("You said:"):]) < 0.2
    assert not [o for o in out if isinstance(o, Transcript)]  # transcribe is off
    speech = [o for o in out if isinstance(o, AudioFrame)]
    seconds = sum(f.duration for f in speech)
    assert seconds > 1.0, seconds  # "You said: hello there..." is over a second of speech


async def test_talkback_is_interrupted_by_speech_over_its_reply(cluster):
    first, rate = say(FIRST)
    second, _ = say(SECOND)
    replying = asyncio.Event()

    async def conversation():
        async for frame in microphone(first, rate, tail_s=0.5):
            yield frame
        # Silence (a live microphone) until the reply is heard, then speak over it.
        step, i = rate // 50, 0
        while not replying.is_set():
            yield AudioFrame(np.zeros((1, step), np.float32), rate, 10 + i * 0.02)
            i += 1
            await asyncio.sleep(0.02)
        async for frame in microphone(second, rate):
            yield frame

    node = RemoteServiceNode("demo", config(cluster), options={"talkback": True, "transcribe": True, "effect": "none"})
    out = []

    async def listen():
        async for item in node.stream(conversation()):
            out.append(item)
            if isinstance(item, AudioFrame):
                replying.set()

    await asyncio.wait_for(listen(), 120)
    kinds = [o["type"] if isinstance(o, dict) else type(o).__name__ for o in out]
    assert "interrupted" in kinds, kinds
    cut = kinds.index("interrupted")
    interrupted = out[cut]
    assert interrupted["by"] in ("voice", "words") and interrupted["flushed_s"] >= 0
    if interrupted["by"] == "voice":
        assert "paused" in kinds[:cut], kinds  # told at the speech's start, before the cut
    # The interrupting words are heard and answered.
    heard_after = " ".join(o.text for o in out[cut:] if isinstance(o, Transcript))
    assert word_error_rate(SECOND, heard_after) < 0.3, heard_after
    assert any(isinstance(o, dict) and o["type"] == "reply" for o in out[cut:])


async def test_a_service_no_executor_offers(cluster):
    node = RemoteServiceNode("no-such-service", config(cluster))
    with pytest.raises(NoExecutorAvailable, match="no-such-service"):
        await asyncio.wait_for(run(node, camera(1)), 30)


async def test_bad_options_raise_value_error(cluster):
    node = RemoteServiceNode("effects", config(cluster), options={"effect": "sepia"})
    with pytest.raises(ValueError, match="effect must be one of none, edges, cartoon, blur, invert"):
        await asyncio.wait_for(run(node, camera(1)), 30)
    node = RemoteServiceNode("effects", config(cluster), options={"colour": "red"})
    with pytest.raises(ValueError, match="colour"):
        await asyncio.wait_for(run(node, camera(1)), 30)


async def test_a_failing_service_raises_remote_execution_error(cluster):
    node = RemoteServiceNode("broken", config(cluster))
    with pytest.raises(RemoteExecutionError, match="broken on purpose"):
        await asyncio.wait_for(run(node, camera(30)), 30)


@contextlib.asynccontextmanager
async def service_channel(cluster, service: str):
    """A service session opened by hand up to its data channel, to send what no real client would."""
    from remotemedia.signaling import SignalingClient
    from remotemedia.transport import make_offer, new_peer_connection, wait_open

    signaling = await SignalingClient.connect(cluster.url, token=TOKEN)
    pc = new_peer_connection()
    try:
        session = await signaling.pair({"service": service}, timeout=15)
        channel = pc.createDataChannel("service")
        got: asyncio.Queue = asyncio.Queue()
        channel.on("message", lambda raw: got.put_nowait(json.loads(raw)))
        await make_offer(pc, session, 15)
        await wait_open(channel, 15, "test")

        async def next_of(kind: str) -> dict:
            while (message := await asyncio.wait_for(got.get(), 15))["type"] != kind:
                pass
            return message

        yield session, channel, next_of
    finally:
        await pc.close()
        await signaling.close()


async def test_a_wrong_ticket_is_refused_before_anything_is_built(cluster):
    async with service_channel(cluster, "effects") as (session, channel, next_of):
        channel.send(json.dumps({"type": "hello", "ticket": "v1.forged", "options": {}}))
        error = await next_of("error")
        assert error["code"] == "unauthorized" and "wrong session ticket" in error["message"]
        bye = await session.expect("bye", 15)
        assert "refused" in bye["reason"]


async def test_messages_before_and_after_hello(cluster):
    async with service_channel(cluster, "effects") as (session, channel, next_of):
        channel.send(json.dumps({"type": "hello", "ticket": session.ticket, "options": {"effect": "blur"}}))
        assert (await next_of("welcome"))["options"] == {"effect": "blur"}
        channel.send(json.dumps({"type": "configure", "options": {"effect": "cartoon"}}))
        assert (await next_of("configured"))["options"] == {"effect": "cartoon"}
        channel.send(json.dumps({"type": "configure", "options": {"effect": "sepia"}}))
        assert (await next_of("error"))["code"] == "bad_options"
        channel.send("not json")
        assert (await next_of("error"))["code"] == "bad_request"
        channel.send(json.dumps({"type": "dance"}))
        assert "unknown message type 'dance'" in (await next_of("error"))["message"]
        stats = await next_of("stats")
        assert {"frames_in", "frames_out", "dropped", "process_ms", "audio_backlog_s"} <= set(stats)


async def test_absurd_nesting_is_refused_and_the_control_loop_goes_on(cluster):
    # 20,000 levels fit in a control message; parsing them used to end the control loop silently.
    async with service_channel(cluster, "effects") as (session, channel, next_of):
        channel.send(json.dumps({"type": "hello", "ticket": session.ticket, "options": {"effect": "blur"}}))
        await next_of("welcome")
        channel.send('{"type": "configure", "options": ' + "[" * 20000 + "]" * 20000 + "}")
        error = await next_of("error")
        assert error["code"] == "bad_request" and "nested too deep" in error["message"]
        channel.send(json.dumps({"type": "configure", "options": {"effect": "cartoon"}}))
        assert (await next_of("configured"))["options"] == {"effect": "cartoon"}


def test_the_server_serves_the_demo_page(cluster):
    status, content_type, body = cluster.get("/")
    assert status == 200 and content_type.startswith("text/html") and "<script" in body
    for path in ("/..%2Fpyproject.toml", "/.hidden", "/no-such-file.js"):
        with pytest.raises(Exception, match="404"):
            cluster.get(path)
