"""
The live pieces, without a network: LatestQueue, VideoEffectNode's FFmpeg
effects, LiveDemoNode's routing (with stand-in speech nodes), the live
tracks, and the executor's service registry.
"""

from __future__ import annotations

import asyncio
import pickle

import numpy as np
import pytest

from remotemedia import AudioFrame, Node, Transcript, VideoFrame
from remotemedia.nodes import LiveDemoNode, VideoEffectNode
from remotemedia.nodes.effects import EFFECTS
from remotemedia.nodes.live import LatestQueue
from remotemedia.transport.live import LiveAudioTrack, LiveVideoTrack

from executor.registry import build, default_services, load_services


def scene() -> VideoFrame:
    y, x = np.mgrid[0:120, 0:160]
    image = np.stack([x % 256, (2 * y) % 256, np.full_like(x, 128)], axis=2).astype(np.uint8)
    image[30:90, 40:120] = [230, 30, 30]
    return VideoFrame(image, "rgb24", 1.5)


def sharpest_step(image: np.ndarray) -> float:
    """The largest jump between neighbouring pixels across the box's right edge."""
    luma = image.astype(float).mean(axis=2)
    return float(np.abs(np.diff(luma, axis=1))[40:80, 110:130].max())


# -- LatestQueue ----------------------------------------------------------------------


async def test_latest_queue_keeps_only_the_newest_waiting_item():
    queue = LatestQueue()
    for i in range(5):
        queue.put(i)
    assert await queue.get() == 4 and queue.replaced == 4
    queue.put(5)
    queue.close()
    queue.put(6)  # after close: ignored
    assert [item async for item in queue] == [5]


async def test_latest_queue_get_waits_for_a_put():
    queue = LatestQueue()
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.put("frame")
    assert await asyncio.wait_for(waiter, 1) == "frame"


# -- VideoEffectNode ------------------------------------------------------------------


def test_each_effect_keeps_format_size_and_time():
    node = VideoEffectNode()
    frame = scene()
    for effect in EFFECTS:
        node.configure(effect=effect)
        out = node.process(frame)
        assert out.image.shape == frame.image.shape and out.image.dtype == np.uint8
        assert out.format == "rgb24" and out.timestamp == 1.5
    gray = VideoFrame(frame.image[:, :, 0].copy(), "gray")
    for effect in EFFECTS:
        node.configure(effect=effect)
        assert node.process(gray).image.shape == gray.image.shape


def test_effects_do_what_they_say():
    frame = scene()
    node = VideoEffectNode("none")
    assert node.process(frame) is frame
    node.configure(effect="invert")
    assert np.array_equal(node.process(frame).image, 255 - frame.image)
    node.configure(effect="edges")
    edges = node.process(frame).image
    assert edges.mean() < 40 and edges.max() > 150  # dark, with light lines
    assert edges[28:32, 50:110].max() > 150 and edges[50:70, 118:122].max() > 150  # along the box's edges
    node.configure(effect="blur")
    assert sharpest_step(node.process(frame).image) < 0.3 * sharpest_step(frame.image)
    node.configure(effect="cartoon")
    cartoon = node.process(frame).image
    assert len(np.unique(cartoon[40:80, 50:110].reshape(-1, 3), axis=0)) <= 4  # flat colors inside the box
    outline = cartoon[50:70, 116:124].mean(axis=(0, 2)).min()
    assert outline < cartoon[50:70, 60:100].mean() / 2  # a dark outline along its right edge


def test_effect_is_checked_and_the_node_pickles_after_use():
    with pytest.raises(ValueError, match="effect must be one of none, edges, cartoon, blur, invert, not 'sepia'"):
        VideoEffectNode("sepia")
    node = VideoEffectNode("blur")
    with pytest.raises(ValueError, match="sepia"):
        node.configure(effect="sepia")
    assert node.options() == {"effect": "blur"}
    node.process(scene())
    copy = pickle.loads(pickle.dumps(node))
    assert copy.options() == {"effect": "blur"} and copy.process(scene()).image.shape == (120, 160, 3)
    with pytest.raises(TypeError, match="takes VideoFrame inputs"):
        node.process("not a frame")


# -- LiveDemoNode ---------------------------------------------------------------------


class StandInWhisper(Node):
    """Hears one utterance per 10 audio frames: 'words N'."""

    is_streaming = True

    async def stream(self, frames):
        count = 0
        async for frame in frames:
            count += 1
            if count % 10 == 0:
                yield Transcript(f"words {count // 10}", frame.timestamp - 0.2, frame.timestamp)


class StandInTTS(Node):
    """Speaks one 20 ms frame of a constant per reply."""

    is_streaming = True

    async def stream(self, frames):
        async for text in frames:
            yield AudioFrame(np.full((1, 320), 0.5, np.float32), 16000)


def audio(i: int) -> AudioFrame:
    return AudioFrame(np.zeros((1, 320), np.float32), 16000, i * 0.02)


async def live(node, frames):
    async def source():
        for frame in frames:
            yield frame
            await asyncio.sleep(0)  # a live source: frames arrive over time

    return [item async for item in node.stream(source())]


async def test_live_demo_routes_video_to_the_effect_and_audio_to_speech():
    node = LiveDemoNode(
        "invert", transcribe=True, talkback=True, whisper=StandInWhisper(), tts=StandInTTS(), barge_in=None
    )
    out = await live(node, [scene(), *[audio(i) for i in range(20)]])
    video = [o for o in out if isinstance(o, VideoFrame)]
    assert len(video) == 1 and np.array_equal(video[0].image, 255 - scene().image)
    assert [o.text for o in out if isinstance(o, Transcript)] == ["words 1", "words 2"]
    assert [o for o in out if isinstance(o, dict)] == [
        {"type": "reply", "text": "You said: words 1"},
        {"type": "reply", "text": "You said: words 2"},
    ]
    assert len([o for o in out if isinstance(o, AudioFrame)]) == 2


async def test_live_demo_options_switch_what_comes_out():
    node = LiveDemoNode("edges", transcribe=False, talkback=False, whisper=StandInWhisper(), tts=StandInTTS())
    assert node.options() == {"effect": "edges", "transcribe": False, "talkback": False}
    assert [o for o in await live(node, [audio(i) for i in range(20)]) if not isinstance(o, VideoFrame)] == []
    node.configure(effect="none", transcribe=True)
    out = await live(node, [scene(), *[audio(i) for i in range(10)]])
    assert [type(o).__name__ for o in out if not isinstance(o, VideoFrame)] == ["Transcript"]
    with pytest.raises(ValueError, match="talkback must be true or false"):
        node.configure(talkback="yes")
    video_only = LiveDemoNode("blur", audio=False)
    assert video_only.takes == ("video",) and video_only.options() == {"effect": "blur"}
    with pytest.raises(ValueError, match="needs the microphone"):
        video_only.configure(transcribe=True)
    with pytest.raises(ValueError, match="no video"):
        LiveDemoNode(None, whisper=StandInWhisper(), tts=StandInTTS()).configure(effect="blur")


async def test_live_demo_loads_speech_models_only_once_speech_is_on():
    class Counting(StandInWhisper):
        loads = 0

        def initialize(self):
            Counting.loads += 1

    node = LiveDemoNode("none", transcribe=False, whisper=Counting(), tts=StandInTTS())
    node.initialize()
    await live(node, [scene(), *[audio(i) for i in range(20)]])
    assert Counting.loads == 0  # speech stayed off: Whisper and the voice were never loaded

    async def switched_on_midway():
        for i in range(40):
            if i == 10:
                node.configure(transcribe=True)
            yield audio(i)
            await asyncio.sleep(0)

    out = [o async for o in node.stream(switched_on_midway())]
    assert Counting.loads == 1 and [o.text for o in out] == ["words 1", "words 2", "words 3"]
    node.cleanup()


async def test_live_demo_drops_stale_video_and_reports_a_failing_branch():
    node = LiveDemoNode("none", audio=False)
    out = await node.stream(_burst(30)).__anext__()
    assert isinstance(out, VideoFrame)

    class Failing(Node):
        is_streaming = True

        async def stream(self, frames):
            async for _ in frames:
                raise RuntimeError("the model broke")
            yield  # pragma: no cover

    broken = LiveDemoNode("none", whisper=Failing(), tts=StandInTTS())
    with pytest.raises(RuntimeError, match="the model broke"):
        await live(broken, [audio(0)])


async def _burst(count):
    for i in range(count):
        yield VideoFrame(scene().image, "rgb24", i / 30)


# -- live tracks ----------------------------------------------------------------------


async def test_live_video_track_sends_the_latest_frame_on_the_wall_clock():
    track = LiveVideoTrack()
    track.put(VideoFrame(np.zeros((16, 16, 3), np.uint8), "rgb24", 0.0))
    track.put(VideoFrame(np.full((16, 16, 3), 9, np.uint8), "rgb24", 1.0))
    first = await track.recv()
    assert track.replaced == 1 and first.to_ndarray(format="rgb24").max() == 9
    track.put(VideoFrame(np.zeros((16, 16, 3), np.uint8), "rgb24", 0.5))
    second = await track.recv()
    assert second.pts > first.pts and second.time_base.denominator == 90000
    track.stop()


async def test_live_audio_track_plays_in_order_then_silence():
    track = LiveAudioTrack()
    tone = np.full((1, 1600), 0.25, np.float32)  # 100 ms at 16 kHz
    track.play(AudioFrame(tone, 16000))
    assert track.queued == pytest.approx(0.1, abs=0.03)
    packets = [await track.recv() for _ in range(8)]
    samples = [p.to_ndarray().reshape(-1) for p in packets]
    assert all(len(s) == 960 and p.sample_rate == 48000 for s, p in zip(samples, packets))
    assert samples[2].min() > 7000  # 0.25 of full scale, resampled to 48 kHz
    assert not samples[-1].any()  # played out: silence follows
    assert [p.pts for p in packets] == [i * 960 for i in range(8)]
    await asyncio.wait_for(track.drained(), 1)
    track.stop()


async def test_live_audio_track_paused_sends_silence_and_keeps_its_audio():
    track = LiveAudioTrack()
    track.play(AudioFrame(np.full((1, 1600), 0.25, np.float32), 16000))  # 100 ms
    track.paused = True
    held = [(await track.recv()).to_ndarray() for _ in range(3)]
    assert not any(p.any() for p in held) and track.queued == pytest.approx(0.1, abs=0.03)
    track.paused = False
    assert (await track.recv()).to_ndarray().any()  # it goes on where it paused
    track.stop()


# -- the registry -----------------------------------------------------------------------


def test_default_services_and_building_them():
    services = default_services()
    assert set(services) == {"demo", "effects", "transcribe"}
    node = build(services["effects"], {"effect": "blur"})
    assert node.options() == {"effect": "blur"} and node.takes == ("video",)
    assert build(services["demo"], None).options() == {"effect": "edges", "transcribe": True, "talkback": False}
    with pytest.raises(ValueError, match="bad options"):
        build(services["effects"], {"colour": "red"})
    with pytest.raises(ValueError, match="object of option names"):
        build(services["effects"], ["blur"])
    with pytest.raises(ValueError, match="effect must be one of"):
        build(services["effects"], {"effect": "sepia"})


def test_load_services_says_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "my_services.py").write_text(
        "from remotemedia.nodes import VideoEffectNode\n"
        "SERVICES = {'blurry': lambda: VideoEffectNode('blur')}\n"
        "def negative():\n    return VideoEffectNode('invert')\n"
        "BAD_NAME = {'no spaces please': negative}\n"
        "NOT_CALLABLE = {'x': 42}\n"
    )
    assert list(load_services("my_services:SERVICES")) == ["blurry"]
    assert list(load_services("my_services:negative")) == ["negative"]
    for spec, message in [
        ("my_services", "module:attribute"),
        ("no_such_module_here:X", "cannot import 'no_such_module_here'"),
        ("my_services:MISSING", "has no attribute 'MISSING'"),
        ("my_services:BAD_NAME", "is not a service name"),
        ("my_services:NOT_CALLABLE", "not a factory of nodes"),
    ]:
        with pytest.raises(ValueError, match=message):
            load_services(spec)
