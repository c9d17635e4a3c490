"""The examples run as a user runs them: as scripts, in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

from harness import ServeProcess
from speech_samples import word_error_rate

ROOT = Path(__file__).resolve().parent.parent
#: How the README's examples name the port of their server.
README_PORT = "port=50052"


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command to the end; a failure shows its output (in CI, that is all there is to go on)."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, (
        f"{args[1:]} exited with {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
        f"--- stderr\n{result.stderr[-6000:]}"
    )
    return result


def run_against_serve(code: str) -> tuple[str, str]:
    """
    Run ``code`` in a fresh process, pointed from the README's port to a
    ``remotemedia serve`` on a free port; returns what it printed and the
    name of the server's executor.
    """
    assert README_PORT in code
    serve = ServeProcess()
    try:
        result = run([sys.executable, "-c", code.replace(README_PORT, f"port={serve.port}")])
    finally:
        serve.stop()
    return result.stdout, serve.executor


def test_local_pipeline_example_writes_the_wav_and_summarizes(tmp_path):
    output = tmp_path / "tone.wav"
    result = run(
        [sys.executable, str(ROOT / "examples" / "local_pipeline.py"),
         "--output", str(output), "--duration", "1.5", "--frequency", "1000"]
    )
    assert "peak at 1000.0 Hz" in result.stdout
    assert "-12.0 dBFS" in result.stdout
    with wave.open(str(output)) as wav:
        assert wav.getframerate() == 16000
        assert wav.getnchannels() == 1
        assert wav.getnframes() == 24000


def test_readme_quickstart_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = run([sys.executable, "-c", code])
    peaks = eval(result.stdout)  # a list of floats, printed by the quickstart
    # 1 s of 20 ms frames, plus the resampler's flushed tail.
    assert len(peaks) in (50, 51)
    assert all(abs(p - 0.25) < 0.01 for p in peaks[1:50])  # 0.5 amplitude, -6 dB


def test_remote_proxy_example_starts_the_embedded_server_and_runs_remotely():
    result = run([sys.executable, str(ROOT / "examples" / "remote_proxy.py")])
    assert "created <RemoteProxy __main__.StreamingDataProcessor #1 on " in result.stdout
    assert "process([0, 1, 2, 3]) -> [0.0, 2.0, 4.0, 6.0]" in result.stdout
    assert "the remote processor has processed 206 inputs; the local copy 0" in result.stdout
    assert "session closed" in result.stdout


def test_hybrid_pipeline_example_starts_the_embedded_server_and_reports_where_each_node_ran():
    result = run([sys.executable, str(ROOT / "examples" / "hybrid_pipeline.py"), "--serve"])
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    executor = lines["RemoteResample"].split("remote (")[1].split(")")[0]
    assert executor.startswith("embedded-")
    assert f"remote ({executor})" in lines["RemoteGain"]  # the same executor, the same session
    for local in ("ToneNode", "ChunkerNode"):
        assert lines[local].split()[1] == "local"
    for name in ("RemoteResample", "RemoteGain", "ChunkerNode"):
        assert lines[name].rstrip().endswith("ms") and "mean latency" in lines["node"]
    assert "100 frames, 2.00 s at 16000 Hz" in lines["output"], result.stdout  # 20 ms chunks, whatever the transport
    assert "peak at 440 Hz" in lines["signal"], result.stdout


def test_hybrid_pipeline_example_on_a_running_server_over_the_data_channel_is_exact():
    serve = ServeProcess()
    try:
        result = run(
            [sys.executable, str(ROOT / "examples" / "hybrid_pipeline.py"),
             "--host", "127.0.0.1", "--port", str(serve.port), "--transport", "datachannel"]
        )
    finally:
        serve.stop()
    assert f"remote ({serve.executor})" in result.stdout
    assert "peak at 440 Hz, level -12.0 dBFS" in result.stdout  # lossless: exactly -6 dB of 0.5


def test_remote_video_effect_example_sends_video_through_a_remote_effect_over_tracks():
    result = run(
        [sys.executable, str(ROOT / "examples" / "remote_video_effect.py"), "--serve", "--effect", "invert",
         "--duration", "1", "--width", "320", "--height", "240"]
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "ran on executor embedded-" in lines["effect"] and "video tracks" in lines["effect"]
    assert "30 of 30 came back, 320x240" in lines["frames"]
    assert "fps over" in lines["rate"] and "p50" in lines["latency"]


def test_readme_remote_execution_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n")[2].split("```", 1)[0]
    stdout, _ = run_against_serve(code)
    assert stdout.splitlines() == ["[0 2 4]", "[0, 1, 4, 9]", "[11, 21]", "2 0"]


def test_readme_remote_nodes_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Remote nodes in a pipeline", 1)[1].split("```python\n")[1].split("```", 1)[0]
    stdout, executor = run_against_serve(code)
    lines = stdout.splitlines()
    assert [line.split("  ")[:2] for line in lines] == [
        ["ToneNode", "local"],
        ["ResampleNode", f"remote ({executor})"],
        ["RemoteGain", f"remote ({executor})"],
        ["Peak", "local"],
    ]
    assert " 50 out " in lines[0]  # 1 s of 20 ms frames


def test_readme_media_tracks_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Audio and video on media tracks", 1)[1]
    code = section.split("```python\n")[1].split("```", 1)[0]
    stdout, _ = run_against_serve(code)
    assert stdout.strip() == "90 frames came back; the last: <VideoFrame 640x480 rgb24, t=2.967 s>"


SENTENCE = "The quick brown fox jumps over the lazy dog."


def test_speech_chain_example_hears_speaks_and_writes_the_reply(tmp_path):
    output = tmp_path / "reply.wav"
    result = run(
        [sys.executable, str(ROOT / "examples" / "speech_chain.py"), "--serve", "--output", str(output),
         "--text", SENTENCE],
    )
    heard = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("heard")]
    assert len(heard) == 1 and word_error_rate(SENTENCE, heard[0]) < 0.2, result.stdout
    assert "TTSRemote" in result.stdout and "remote (" in result.stdout
    with wave.open(str(output)) as wav:
        assert wav.getframerate() == 22050 and wav.getnchannels() == 1
        assert wav.getnframes() > 22050  # the sentence, spoken again: well over a second
    # What came back over the track still says the sentence.
    from remotemedia import Pipeline
    from remotemedia.nodes import AudioFileSource, WhisperNode

    transcripts = Pipeline().add_node(AudioFileSource(output)).add_node(WhisperNode()).run()
    assert word_error_rate(SENTENCE, " ".join(t.text for t in transcripts)) < 0.2


def test_speech_chain_example_takes_a_wav_file(tmp_path):
    speech = tmp_path / "speech.wav"
    run([sys.executable, str(ROOT / "examples" / "speech_chain.py"), "--serve", "--text", SENTENCE,
         "--output", str(speech)])
    result = run([sys.executable, str(ROOT / "examples" / "speech_chain.py"), "--serve", "--input", str(speech),
                  "--output", str(tmp_path / "again.wav")])
    heard = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("heard")]
    assert word_error_rate(SENTENCE, " ".join(heard)) < 0.2, result.stdout
    assert (tmp_path / "again.wav").stat().st_size > 10_000


def test_readme_speech_example_runs_as_written():
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Speech: Whisper, TTS", 1)[1].split("```python\n")[1].split("```", 1)[0]
    stdout, executor = run_against_serve(code)
    seconds, _, where = stdout.strip().partition(" s of speech from ")
    assert float(seconds) > 1.5 and where == executor
