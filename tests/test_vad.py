"""Voice activity detection: the segmenter's smoothing (scripted frames, no I/O) and VADNode on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from remotemedia import AudioFrame, Pipeline, PipelineError
from remotemedia.nodes import VADNode
from remotemedia.nodes.vad import SpeechSegmenter, iter_events

from speech_samples import speech_silence_speech

RATE = 16000
FRAME = 480  # 30 ms at 16 kHz


class Scripted(SpeechSegmenter):
    """A segmenter whose classifier reads the script off the samples: non-zero frames are voiced."""

    def classify(self, frame: np.ndarray) -> bool:
        return bool(frame.any())


def script(*parts: tuple[bool, float]) -> np.ndarray:
    """Samples for (voiced, seconds) parts: voiced frames hold 1000s, silent ones zeros."""
    return np.concatenate([np.full(round(s * RATE), 1000 if v else 0, np.int16) for v, s in parts])


def run(samples: np.ndarray, chunk: int = 320, **options) -> list:
    segmenter = Scripted(RATE, **options)
    chunks = (samples[i : i + chunk] for i in range(0, len(samples), chunk))
    return list(iter_events(segmenter, chunks))


def utterances(events: list) -> list[tuple[float, float]]:
    """(start, end) of each utterance: first speech frame's time, and the end event's."""
    out, start = [], None
    for event in events:
        if event.kind == "speech" and start is None:
            start = event.time
        elif event.kind == "end":
            out.append((round(start, 3), round(event.time, 3)))
            start = None
    return out


@pytest.mark.parametrize("chunk", [1, 137, 320, 480, 5000])
def test_every_sample_comes_out_once_in_order(chunk):
    samples = script((False, 0.5), (True, 1.0), (False, 0.2), (True, 0.4), (False, 1.0), (True, 0.05))
    events = run(samples, chunk)
    out = np.concatenate([e.samples for e in events if e.samples is not None])
    assert np.array_equal(out, samples)
    times = [e.time for e in events if e.samples is not None]
    assert times == sorted(times)


def test_an_utterance_keeps_its_padding_on_both_sides():
    events = run(script((False, 0.99), (True, 0.99), (False, 1.02)), padding_ms=150, silence_ms=300)
    assert utterances(events) == [(0.84, 2.13)]
    speech = sum(len(e.samples) for e in events if e.kind == "speech")
    assert speech == round((0.99 + 0.3) * RATE)


def test_a_blip_shorter_than_start_ms_is_not_speech():
    events = run(script((False, 0.6), (True, 0.06), (False, 0.6)), start_ms=90)
    assert utterances(events) == []
    assert {e.kind for e in events} == {"silence"}


def test_a_pause_shorter_than_silence_ms_does_not_split():
    assert len(utterances(run(script((True, 0.6), (False, 0.21), (True, 0.6), (False, 0.6)), silence_ms=300))) == 1
    assert len(utterances(run(script((True, 0.6), (False, 0.45), (True, 0.6), (False, 0.6)), silence_ms=300))) == 2


def test_a_pause_is_told_once_pause_ms_into_it_and_the_end_follows():
    events = run(script((True, 0.6), (False, 0.15), (True, 0.6), (False, 0.6)), pause_ms=90, silence_ms=300, padding_ms=0)
    kinds = [e.kind for e in events if e.samples is None]
    assert kinds == ["pause", "resume", "pause", "end"]  # the short pause, then the one that ended it
    first, second = (e for e in events if e.kind == "pause")
    assert (round(first.time, 3), round(second.time, 3)) == (0.6, 1.35)  # where the speech so far ended
    assert [e.kind for e in events].index("pause") == [e.kind for e in events].index("speech") + 20  # told at once
    assert utterances(events) == [(0.0, 1.35)]


def test_no_pause_is_told_when_pause_ms_is_the_silence_that_ends_speech():
    events = run(script((True, 0.6), (False, 0.6)), pause_ms=300, silence_ms=300)
    assert [e.kind for e in events if e.samples is None] == ["end"]  # no pause, no resume


def test_long_speech_is_cut_at_max_segment_s_and_goes_on():
    events = run(script((True, 2.55), (False, 0.6)), max_segment_s=1.0, padding_ms=0)
    assert utterances(events) == [(0.0, 0.99), (0.99, 1.98), (1.98, 2.55)]


def test_flush_ends_an_open_utterance_with_the_partial_frame():
    samples = script((False, 0.3), (True, 0.5))[:-100]  # ends mid-frame, mid-speech
    events = run(samples, padding_ms=0)
    assert utterances(events) == [(0.3, round(len(samples) / RATE, 3))]
    assert events[-1].kind == "end"


def test_decisions_wait_no_longer_than_the_evidence_needs():
    segmenter = Scripted(RATE, start_ms=90, padding_ms=0)
    assert segmenter.feed(script((True, 0.06))) == []  # two voiced frames: not yet speech
    events = segmenter.feed(script((True, 0.03)))
    assert [e.kind for e in events] == ["speech"] * 3
    assert segmenter.in_speech


def test_timeline_starts_at_the_first_timestamp():
    segmenter = Scripted(RATE, start_ms=30, padding_ms=0)
    events = segmenter.feed(script((True, 0.03)), timestamp=12.5) + segmenter.feed(script((True, 0.03)), timestamp=99)
    assert [e.time for e in events] == [12.5, 12.53]


@pytest.mark.parametrize(
    "options",
    [
        {"sample_rate": 44100}, {"aggressiveness": 4}, {"frame_ms": 25}, {"silence_ms": -1},
        {"pause_ms": -30}, {"max_segment_s": 0},
    ],
)
def test_bad_options_raise_value_error(options):
    rate = options.pop("sample_rate", RATE)
    with pytest.raises(ValueError):
        SpeechSegmenter(rate, **options)
    with pytest.raises(ValueError):
        VADNode(sample_rate=rate, **options)


def test_segmenter_takes_only_1d_int16():
    with pytest.raises(ValueError, match="int16"):
        SpeechSegmenter(RATE).feed(np.zeros(480, np.float32))


def test_vad_node_rejects_an_unknown_mode_and_non_audio_input():
    with pytest.raises(ValueError, match="mode"):
        VADNode("everything")
    with pytest.raises(PipelineError) as info:
        Pipeline().add_node(VADNode()).run(["not audio"])
    assert isinstance(info.value.__cause__, TypeError)


# -- real speech, WebRTC's VAD ---------------------------------------------------------------


def frames_of(samples: np.ndarray, rate: int, size: int) -> list[AudioFrame]:
    return [AudioFrame(samples[:, i : i + size].copy(), rate, i / rate) for i in range(0, samples.shape[1], size)]


def test_vad_node_finds_both_utterances_in_speech_silence_speech():
    audio, rate, spans = speech_silence_speech()
    segments = Pipeline().add_node(VADNode()).run(frames_of(audio[np.newaxis, :], rate, rate // 50))
    assert len(segments) == 2
    for segment, (start, end) in zip(segments, spans):
        assert segment.sample_rate == 16000 and segment.samples.dtype == np.float32
        assert abs(segment.timestamp - start) < 0.3
        assert abs(segment.timestamp + segment.duration - end) < 0.45


def test_filter_and_mark_modes_on_stereo_int16_at_44100():
    audio, rate, spans = speech_silence_speech(rate=44100)
    stereo = np.clip(np.stack([audio, audio]) * 32767, -32768, 32767).astype(np.int16)
    frames = frames_of(stereo, rate, 441)
    speech = Pipeline().add_node(VADNode("filter")).run(frames)
    marked = Pipeline().add_node(VADNode("mark")).run(frames)
    total = stereo.shape[1] / rate
    spoken = sum(end - start for start, end in spans)
    assert abs(sum(f.duration for f, _ in marked) - total) < 0.02  # every sample, once
    assert abs(sum(f.duration for f in speech) - sum(f.duration for f, s in marked if s)) < 1e-6
    assert spoken - 0.2 < sum(f.duration for f in speech) < spoken + 1.0  # the speech, with its padding
    assert all(f.duration == pytest.approx(0.03) for f in speech[:-1])
