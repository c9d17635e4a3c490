"""
The demo page (``web_demo/``) in a real headless Chromium against real
server and executor processes: the processed video and its effects, effect
switching, transcripts of the fake microphone, talk-back audio, and every
failure a person can meet (no executor, a wrong token, a lost executor).
The talk-back test saves a screenshot of the running page to
``tests/artifacts/web_demo.png`` (and, with ``REMOTEMEDIA_UPDATE_SCREENSHOT``
set, to ``web_demo/screenshot.png``, the README's picture).

The fake camera is Chromium's (a green frame with a moving pie and a clock);
the fake microphone plays a synthesized sentence in a loop. Pixels are read
through a canvas in the page; each check compares processed frames with the
camera's frames, so no absolute level of the fake camera is assumed.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from browser import DemoPage, launch, require_browser, write_microphone_wav
from harness import ROOT, TOKEN, running_cluster, running_executor, running_server
from speech_samples import FIRST, resample, say, word_error_rate

from remotemedia.tokens import mint_client_token

pytestmark = pytest.mark.timeout(180)

#: The cluster's --token-secret: it also takes signed client tokens.
TOKEN_SECRET = "web-demo-token-secret-" + "x" * 16
EXECUTOR = "web-demo-exec"
ARTIFACTS = ROOT / "tests" / "artifacts"

#: Mean luma, share of dark pixels and mean absolute neighbour difference of a video element's current frame.
FRAME_STATS = """(testid) => {
    const video = document.querySelector(`[data-testid="${testid}"]`);
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return null;
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    ctx.drawImage(video, 0, 0, w, h);
    const d = ctx.getImageData(0, 0, w, h).data;
    const luma = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) luma[i] = 0.299 * d[4 * i] + 0.587 * d[4 * i + 1] + 0.114 * d[4 * i + 2];
    let sum = 0, dark = 0, gradient = 0;
    for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
            const v = luma[y * w + x];
            sum += v;
            if (v < 48) dark++;
            if (x + 1 < w) gradient += Math.abs(luma[y * w + x + 1] - v);
            if (y + 1 < h) gradient += Math.abs(luma[(y + 1) * w + x] - v);
        }
    }
    return {mean: sum / (w * h), dark: dark / (w * h), gradient: gradient / (w * h)};
}"""

#: Predicates over the processed frame (``r``) and the camera's (``l``), as JS expressions.
LOOKS = {
    # Thin bright lines on black: mostly dark, and sharper than the camera.
    "edges": "r.dark > 0.8 && r.mean < l.mean / 3 && r.gradient > 2 * l.gradient",
    # A strong blur: far smoother than the camera, as bright.
    "blur": "r.gradient < 0.7 * l.gradient && Math.abs(r.mean - l.mean) < 30",
    # A negative: the two means add up to white.
    "invert": "Math.abs(r.mean + l.mean - 255) < 40",
    # Untouched: as bright and as sharp as the camera.
    "none": "Math.abs(r.mean - l.mean) < 20 && r.dark < 0.1 && r.gradient > 0.7 * l.gradient",
}


def looks(effect: str) -> str:
    """A JS predicate: the processed frame now looks like ``effect`` applied to the camera's."""
    return f"""() => {{
        const stats = {FRAME_STATS};
        const r = stats("remote-video"), l = stats("local-video");
        return r && l && ({LOOKS[effect]}) ? {{remote: r, local: l}} : false;
    }}"""


def page_url(server, **params) -> str:
    """The page on ``server`` with ``params`` (small video, unmirrored, started at load unless told)."""
    query = {"autostart": 1, "width": 320, "height": 240, "mirror": 0, **params}
    return f"{server.http_url}/?{urlencode(query)}"


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> Path:
    """The fake microphone's WAV: half a second of silence, :data:`FIRST`, 1.5 s of silence (played in a loop)."""
    samples, rate = say(FIRST)
    speech = resample(samples, rate, 48000)
    silence = np.zeros(24000, np.float32)
    audio = np.concatenate([silence, speech, silence, silence, silence])
    return write_microphone_wav(tmp_path_factory.mktemp("mic") / "speech.wav", audio, 48000)


@pytest.fixture(scope="module", autouse=True)
def needs_a_browser():
    """Skips (or fails, in CI) the module before any server starts, when no browser can run."""
    require_browser()


@pytest.fixture(scope="module")
def browser(microphone):
    with launch(microphone=microphone) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def cluster_executors():
    """The ``cluster`` (tests/conftest.py) has one executor, named :data:`EXECUTOR`."""
    return (("--name", EXECUTOR, "--max-sessions", "8"),)


@pytest.fixture(scope="module")
def cluster_server_args():
    """The ``cluster``'s server also accepts client tokens signed with :data:`TOKEN_SECRET`."""
    return ("--token-secret", TOKEN_SECRET)


@pytest.fixture(scope="module")
def bare_server():
    """An open server with no executor: each test starts (and kills) its own."""
    with running_server() as server:
        yield server


@pytest.fixture
def open_page(browser):
    """Opens the page (in its own browser context); every page opened is closed at the end."""
    pages: list[DemoPage] = []

    def opener(url: str, **options) -> DemoPage:
        pages.append(DemoPage.open(browser, url, **options))
        return pages[-1]

    yield opener
    for page in pages:
        page.close()


def wait_running(page: DemoPage, frames: int = 10) -> dict:
    """Waits for the session and for ``frames`` processed frames shown; returns the page's state."""
    page.wait_for_state("running", timeout=45)
    page.wait_for("n => window.remotemedia.framesReceived >= n", frames, what=f"{frames} processed frames")
    return page.state()


def test_page_connects_and_shows_processed_video(cluster, open_page):
    page = open_page(page_url(cluster, token=TOKEN, effect="edges", transcribe=0))
    state = wait_running(page)
    assert state["executor"] == EXECUTOR
    assert page.testid("executor-name").inner_text() == EXECUTOR
    assert page.testid("state").inner_text() == "Live"
    assert state["options"] == {"effect": "edges", "transcribe": False, "talkback": False}
    page.wait_for(looks("edges"), what="edges in the processed video")
    # The controls come from the executor's welcome, the effect it runs is the one shown as chosen.
    assert page.testid("effect-edges").get_attribute("aria-pressed") == "true"
    assert page.testid("effect-none").get_attribute("aria-pressed") == "false"
    assert not page.testid("option-transcribe").is_checked()
    # Figures from getStats and from the executor reach the stats panel.
    stats = page.wait_for("() => { const s = window.remotemedia.stats; return s.fps > 0 && s.rttMs != null && s; }",
                          what="video fps and round-trip time in the stats")
    assert stats["width"] == 320 and stats["height"] == 240
    page.wait_for("() => window.remotemedia.executorStats.frames_out > 0", what="the executor's stats")
    assert page.testid("stat-executor").inner_text() == EXECUTOR


#: What sticks out sideways: the page's own overflow, and controls that leave their card.
OVERFLOW = """() => {
    const doc = document.documentElement;
    const out = [];
    if (doc.scrollWidth > doc.clientWidth) out.push(`page ${doc.scrollWidth} > ${doc.clientWidth}`);
    for (const card of document.querySelectorAll(".controls, .panel, .pane, .topbar, .banner")) {
        const box = card.getBoundingClientRect();
        if (!box.width) continue;
        for (const el of card.querySelectorAll("button, label, input, video, dd, dt")) {
            const r = el.getBoundingClientRect();
            if (r.width && (r.left < box.left - 1 || r.right > box.right + 1))
                out.push(`${el.dataset.testid || el.tagName} ${Math.round(r.left)}..${Math.round(r.right)} outside ${card.className} ${Math.round(box.left)}..${Math.round(box.right)}`);
        }
    }
    return out;
}"""


@pytest.mark.parametrize("width, height", [(390, 844), (768, 1024), (1280, 900)])
def test_the_page_fits_phones_tablets_and_desktops(cluster, open_page, width, height):
    page = open_page(page_url(cluster, token=TOKEN, effect="none", transcribe=0), width=width, height=height)
    wait_running(page, frames=3)
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / f"web_demo_{width}.png"), full_page=True)
    assert page.page.evaluate(OVERFLOW) == []


def test_switching_the_effect_while_running(cluster, open_page):
    page = open_page(page_url(cluster, token=TOKEN, effect="none", transcribe=0))
    wait_running(page)
    page.wait_for(looks("none"), what="the camera's video, unprocessed")
    for effect in ("blur", "invert", "edges"):
        page.testid(f"effect-{effect}").click()
        page.wait_for("e => window.remotemedia.options.effect === e", effect, what=f"configured {effect}")
        page.wait_for(looks(effect), what=f"{effect} in the processed video")
        assert page.testid(f"effect-{effect}").get_attribute("aria-pressed") == "true"
    assert page.state()["error"] is None


def test_stop_and_start_again(cluster, open_page):
    page = open_page(page_url(cluster, token=TOKEN, effect="invert", transcribe=0))
    wait_running(page)
    page.testid("stop-button").click()
    page.wait_for_state("idle")
    assert page.page.evaluate("() => document.querySelector('[data-testid=local-video]').srcObject") is None
    assert page.testid("start-button").is_visible()
    frames = page.state()["framesReceived"]
    page.testid("start-button").click()
    page.wait_for_state("running", timeout=45)
    page.wait_for("n => window.remotemedia.framesReceived > n + 10", frames, what="frames after starting again")
    page.wait_for(looks("invert"), what="the effect chosen at first, again")


def transcript_heard(page: DemoPage, sentence: str, *, max_wer: float = 0.25, timeout: float = 60.0) -> str:
    """Waits for a transcript of ``sentence`` (the microphone loops, so a first one may be cut); returns it."""
    return page.wait_for(
        """([words, maxMissing]) => window.remotemedia.transcripts.map(t => t.text).find(text => {
            const heard = new Set(text.toLowerCase().match(/[a-z0-9']+/g) || []);
            return words.filter(w => !heard.has(w)).length <= maxMissing;
        })""",
        [sentence.lower().replace(".", "").split(), int(max_wer * len(sentence.split()))],
        timeout=timeout,
        what=f"a transcript of {sentence!r}",
    )


def test_the_microphone_is_transcribed(cluster, open_page):
    page = open_page(page_url(cluster, token=TOKEN, effect="none", transcribe=1))
    wait_running(page)
    text = transcript_heard(page, FIRST)
    assert word_error_rate(FIRST, text) <= 0.25, text
    first = page.testid("transcript-list").locator("li").first
    assert first.get_attribute("data-kind") == "transcript"
    assert page.state()["replies"] == []  # talk-back is off


def test_talkback_answers_with_speech(cluster, open_page):
    page = open_page(page_url(cluster, token=TOKEN, effect="edges"))
    wait_running(page)
    transcript_heard(page, FIRST)
    # The executor's audio track carries silence until talk-back speaks.
    assert (page.state()["stats"].get("audioEnergy") or 0) < 1e-3
    page.testid("option-talkback").check()
    page.wait_for("() => window.remotemedia.options.talkback === true", what="talk-back configured")
    reply = page.wait_for("() => window.remotemedia.replies.length && window.remotemedia.replies[0].text",
                          timeout=60, what="a reply")
    assert reply.strip(), "an empty reply"
    page.wait_for("() => window.remotemedia.stats.audioEnergy > 0.01", timeout=30,
                  what="talk-back speech on the received audio track")
    assert page.testid("transcript-list").locator("li[data-kind=reply]").first.inner_text().find(
        "RemoteMedia says:") >= 0
    # The remote audio plays, unmuted, on its own element.
    audio = page.page.evaluate(
        """() => {
            const a = document.querySelector('[data-testid="remote-audio"]');
            return {muted: a.muted, paused: a.paused, tracks: a.srcObject ? a.srcObject.getAudioTracks().length : 0};
        }"""
    )
    assert audio == {"muted": False, "paused": False, "tracks": 1}
    # The picture for the README: processed video, transcripts and a reply.
    page.wait_for(looks("edges"), what="edges in the processed video")
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "web_demo.png"))
    if os.environ.get("REMOTEMEDIA_UPDATE_SCREENSHOT"):  # the README's picture, refreshed on request
        shutil.copyfile(ARTIFACTS / "web_demo.png", ROOT / "web_demo" / "screenshot.png")


def test_speaking_over_a_reply_interrupts_it(cluster, open_page):
    # The fake microphone loops its sentence with 1.5 s of silence: the next
    # time round, it speaks over the reply to the last, as a person would.
    page = open_page(page_url(cluster, token=TOKEN, effect="none", transcribe=1, talkback=1))
    wait_running(page)
    page.wait_for("() => window.remotemedia.replies.length >= 1", timeout=60, what="a reply")
    message = page.wait_for(
        "() => window.remotemedia.messages.find(m => m.type === 'interrupted')", timeout=60,
        what="the reply interrupted by the microphone's next sentence",
    )
    assert message["by"] in ("voice", "words") and message["flushed_s"] >= 0
    assert page.page.locator("li[data-kind=note]", has_text="(reply interrupted)").count() >= 1
    # The interrupting sentence is heard and answered too.
    page.wait_for("() => window.remotemedia.replies.length >= 2", timeout=60, what="a reply to the interruption")


@pytest.fixture(scope="module")
def beeping_browser(browser):
    """
    A second Chromium, from the same Playwright, whose fake microphone is
    Chromium's own: a beep every second, which WebRTC's VAD takes for speech.
    """
    from browser import CHROMIUM_ARGS, chromium_path

    chromium = browser.browser_type.launch(executable_path=chromium_path(), headless=True, args=list(CHROMIUM_ARGS))
    try:
        yield chromium
    finally:
        chromium.close()


def test_video_keeps_its_rate_while_beeps_are_recognized(cluster, beeping_browser):
    page = DemoPage.open(beeping_browser, page_url(cluster, token=TOKEN, effect="none", transcribe=1))
    try:
        wait_running(page)
        # Recognition is at work on the beeps: the executor says what it shed.
        page.wait_for(
            "() => { const s = window.remotemedia.executorStats; "
            "return (s.utterances_ignored || 0) + (s.utterances_merged || 0) + (s.utterances_transcribed || 0) > 0 "
            "|| window.remotemedia.transcripts.length > 0; }",
            timeout=60, what="speech recognition at work on the beeps",
        )
        frames = page.state()["framesReceived"]
        page.wait_for("n => window.remotemedia.framesReceived > n + 60", frames, timeout=30,
                      what="processed frames arriving while recognition runs")
        page.testid("effect-invert").click()
        page.wait_for(looks("invert"), timeout=30, what="the effect switch in the pixels while recognition runs")
        assert page.testid("stat-speech").inner_text() != "–"
    finally:
        page.close()


def test_no_executor_then_try_again(bare_server, open_page):
    page = open_page(page_url(bare_server, transcribe=0))
    state = page.wait_for_state("error")
    assert state["error"]["code"] == "no_executor"
    banner = page.testid("status-banner")
    assert "No executor is available" in banner.inner_text()
    assert page.testid("retry-button").is_visible()
    with running_executor(bare_server.url, "--name", "late-exec"):
        page.testid("retry-button").click()
        state = wait_running(page)
        assert state["executor"] == "late-exec"
        assert not banner.is_visible()


def test_a_wrong_token_asks_for_the_token(cluster, open_page):
    page = open_page(page_url(cluster, token="not-the-token", transcribe=0))
    state = page.wait_for_state("error")
    assert state["error"]["code"] == "unauthorized"
    assert "token" in page.testid("status-banner").inner_text().lower()
    page.testid("token-input").fill(TOKEN)
    page.testid("token-submit").click()
    assert wait_running(page)["executor"] == EXECUTOR


def test_an_expired_signed_token_asks_for_another_and_a_scoped_one_goes_through(cluster, open_page):
    expired = mint_client_token(TOKEN_SECRET, expires_in=5, now=time.time() - 60)
    page = open_page(page_url(cluster, token=expired, transcribe=0))
    state = page.wait_for_state("error")
    assert state["error"]["code"] == "token_expired"
    assert "expired" in page.testid("status-banner").inner_text().lower()
    scoped = mint_client_token(TOKEN_SECRET, services=["demo"], objects=False, max_sessions=1)
    page.testid("token-input").fill(scoped)
    page.testid("token-submit").click()
    assert wait_running(page)["executor"] == EXECUTOR


def test_a_lost_executor_and_reconnect(bare_server, open_page):
    with running_executor(bare_server.url, "--name", "doomed-exec") as doomed:
        page = open_page(page_url(bare_server, transcribe=0))
        wait_running(page)
        doomed.kill()
    state = page.wait_for_state("lost")
    assert state["error"]["code"]
    assert "The executor was lost" in page.testid("status-banner").inner_text()
    assert page.testid("reconnect-button").is_visible()
    frames = state["framesReceived"]
    with running_executor(bare_server.url, "--name", "second-exec"):
        page.testid("reconnect-button").click()
        page.wait_for_state("running", timeout=45)
        page.wait_for("n => window.remotemedia.framesReceived > n + 10", frames, what="frames after reconnecting")
        assert page.state()["executor"] == "second-exec"
        assert page.testid("executor-name").inner_text() == "second-exec"


def test_an_unreachable_server(open_page):
    with running_server() as server:
        page = open_page(page_url(server, autostart=0))
        page.wait_for_state("idle")
    page.testid("start-button").click()  # the server is gone now
    state = page.wait_for_state("error")
    assert state["error"]["code"] == "unreachable"
    assert "Cannot reach the RemoteMedia server" in page.testid("status-banner").inner_text()
    assert page.testid("retry-button").is_visible()


@pytest.mark.parametrize(
    "name, says",
    [("NotAllowedError", "Camera and microphone are blocked"), ("NotFoundError", "No camera or microphone found")],
)
def test_camera_failures_say_what_to_do(bare_server, open_page, name, says):
    # As a browser answers when the person said no, or has no device at all.
    refuse = f"""navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException("refused by the test", "{name}"));"""
    page = open_page(page_url(bare_server), init_script=refuse)
    state = page.wait_for_state("error")
    assert state["error"]["code"] in ("media_denied", "media_missing")
    banner = page.testid("status-banner").inner_text()
    assert says in banner and "Try again" in banner


def test_the_page_uses_the_ice_servers_the_signaling_server_hands_out(open_page):
    # Local ports where nothing answers: the session goes on over host candidates.
    urls = ["stun:127.0.0.1:9", "turn:127.0.0.1:9?transport=tcp"]
    ice = ("--ice-server", urls[0], "--ice-server", urls[1], "--turn-secret", "page-turn-secret")
    with running_cluster(TOKEN, ("--name", "ice-exec"), server_args=ice) as (server, _):
        page = open_page(page_url(server, token=TOKEN))
        state = wait_running(page, frames=3)
        assert state["iceUrls"] == urls, state
