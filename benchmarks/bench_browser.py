"""
The demo page in a real browser: video there and back through an executor,
against the same video through the browser's own WebRTC stack alone,
measured in the same run.

Starts ``python -m remotemedia serve`` (a signaling server and one executor,
a subprocess) and a headless Chromium (``tests/browser.py``), and opens the
page in benchmark mode (``?bench=1``): instead of a camera, the page sends a
canvas whose every frame carries its number as 16 black or white blocks (and
check bits, and a sync row) on mid-grey; it reads the numbers back from each
processed frame it shows (``requestVideoFrameCallback``), so it knows each
frame's round trip from drawing to display. The executor runs the ``demo``
service with effect ``none`` and no transcription.

The baseline (``?bench=1&loopback=1``) is the same canvas through two pairs
of RTCPeerConnections in the page: sent, decoded, sent again and decoded
again, VP8 both times, as on the way through an executor, without one. Both
are measured by the same code in the page. Cases:

- **frame round trip** p50 and p90: display time of a frame minus the time it
  was drawn;
- **video fps received**: distinct frames shown per second (target: at least
  0.95x the loopback's);
- **first processed frame**: from navigation start (the page loaded with
  ``autostart=1``) to the first processed frame shown: page load, signaling,
  pairing, ICE and DTLS, the first key frame, against the loopback's page
  load, negotiation and first key frame.

One session runs first unmeasured: an executor's first session loads its
models (its time to first frame is a note). Each measurement skips
``--settle`` seconds after the first frame (jitter buffers, bitrate ramp).

    python benchmarks/bench_browser.py [--seconds 8] [--settle 2] [--rounds 1] [--width 640 --height 480 --fps 30]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import DemoPage, chromium_path, launch  # noqa: E402
from harness import ServeProcess  # noqa: E402
from report import Report, percentile  # noqa: E402

#: Counters of the way back, read before and after a measurement: the executor's (its stats
#: message) and the page's decoder's (getStats), with the time they were read.
COUNTS = """() => {
    const m = window.remotemedia, e = m.executorStats || {};
    return {at: performance.now() / 1000, frames_in: e.frames_in ?? null, frames_out: e.frames_out ?? null,
            process_ms: e.process_ms ?? null, decoded: m.stats.framesDecoded ?? null};
}"""

#: Seconds a session may take to show its first frame before the attempt counts as failed.
START_TIMEOUT = 30.0


class SessionDidNotStart(RuntimeError):
    """The page did not show a processed frame in time; carries the page's state."""


def open_bench(browser, server, args, *, loopback: bool) -> DemoPage:
    """The page in benchmark mode, started at load, once it shows its first processed frame."""
    query = {"bench": 1, "autostart": 1, "effect": "none", "width": args.width, "height": args.height, "fps": args.fps}
    if loopback:
        query["loopback"] = 1
    page = DemoPage.open(browser, f"{server.http_url}/?{urlencode(query)}")
    try:
        page.wait_for("() => window.remotemedia.firstFrameAt !== null && window.remotemedia.bench.frames > 0",
                      timeout=START_TIMEOUT, what="the first decoded frame")
    except AssertionError as exc:
        page.close()
        raise SessionDidNotStart(str(exc)) from None
    return page


def measure(browser, server, args, *, loopback: bool) -> dict:
    """One session: time to first frame (s), and latencies (s) and fps over ``--seconds`` after ``--settle``."""
    page = open_bench(browser, server, args, loopback=loopback)
    try:
        first = page.page.evaluate("() => window.remotemedia.firstFrameAt") / 1000
        time.sleep(args.settle)
        before = page.page.evaluate(COUNTS)
        page.page.evaluate("() => window.remotemedia.bench.reset()")
        time.sleep(args.seconds)
        summary = page.page.evaluate("() => window.remotemedia.bench.summary()")
        after = page.page.evaluate(COUNTS)
    finally:
        page.close()
    if not summary["frames"]:
        raise RuntimeError(f"no frame decoded in {args.seconds} s ({'loopback' if loopback else 'executor'})")
    return {
        "first": first,
        "latencies": [ms / 1000 for ms in summary["latencies"]],
        "fps": summary["fps"],
        "sent_fps": summary["sentFps"],
        "undecodable": summary["undecodable"],
        "process_ms": after["process_ms"],
        # Where frames go missing: per second, over about the measured window (the counters tick each second).
        "rates": {
            key: (after[key] - before[key]) / (after["at"] - before["at"])
            for key in ("frames_in", "frames_out", "decoded")
            if after[key] is not None and before[key] is not None and after["at"] > before["at"]
        },
    }


def with_retries(attempt, failures: list[str], tries: int = 3):
    """``attempt()``, again when a session does not start (each failure is noted, the last one raised)."""
    for i in range(tries):
        try:
            return attempt()
        except SessionDidNotStart as exc:
            failures.append(str(exc).splitlines()[0])
            if i == tries - 1:
                raise


def run(args) -> Report:
    report = Report("browser")
    failures: list[str] = []
    runs = {"executor": [], "loopback": []}
    with contextlib.ExitStack() as stack:
        server = ServeProcess()
        stack.callback(server.stop)
        browser = stack.enter_context(launch())
        cold = with_retries(lambda: measure(browser, server, args, loopback=False), failures)
        for _ in range(args.rounds):
            runs["loopback"].append(measure(browser, server, args, loopback=True))
            runs["executor"].append(with_retries(lambda: measure(browser, server, args, loopback=False), failures))

    def pooled(side: str, key: str) -> list[float]:
        return [v for r in runs[side] for v in (r[key] if isinstance(r[key], list) else [r[key]])]

    ours, base = pooled("executor", "latencies"), pooled("loopback", "latencies")
    against = "in-page loopback"
    report.add("frame round trip p50", ours=percentile(ours, 0.5), baseline=percentile(base, 0.5), unit="s",
               against=against)
    report.add("frame round trip p90", ours=percentile(ours, 0.9), baseline=percentile(base, 0.9), unit="s",
               against=against)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    report.add("video fps received", ours=mean(pooled("executor", "fps")), baseline=mean(pooled("loopback", "fps")),
               unit="fps", target=0.95, against=against)
    report.add("first processed frame after load", ours=mean(pooled("executor", "first")),
               baseline=mean(pooled("loopback", "first")), unit="s", against=against)
    report.note(f"{args.width}x{args.height} at {args.fps} fps drawn, VP8; {args.seconds:g} s measured per session "
                f"after {args.settle:g} s, {args.rounds} round(s); frames measured: {len(ours)} through the executor, "
                f"{len(base)} looped back")
    report.note(f"frames drawn per second: {mean(pooled('executor', 'sent_fps')):.1f} (executor sessions), "
                f"{mean(pooled('loopback', 'sent_fps')):.1f} (loopback); frames shown without a readable number: "
                f"{sum(pooled('executor', 'undecodable'))} and {sum(pooled('loopback', 'undecodable'))}")
    rates = lambda side, key: [r["rates"][key] for r in runs[side] if key in r["rates"]]  # noqa: E731
    if rates("executor", "frames_in") and rates("executor", "decoded"):
        report.note(f"frames per second on the way: the executor received {mean(rates('executor', 'frames_in')):.1f} "
                    f"and sent {mean(rates('executor', 'frames_out')):.1f}, the page decoded "
                    f"{mean(rates('executor', 'decoded')):.1f} and showed {mean(pooled('executor', 'fps')):.1f} "
                    f"(loopback: decoded {mean(rates('loopback', 'decoded') or [0]):.1f}, "
                    f"showed {mean(pooled('loopback', 'fps')):.1f})")
    process = [v for v in pooled("executor", "process_ms") if v is not None]
    if process:
        report.note(f"the executor's own time per frame (its stats message): {mean(process):.1f} ms")
    report.note(f"the executor's first session (cold: it loads its models) showed its first frame "
                f"{cold['first']:.2f} s after navigation start")
    if failures:
        report.note(f"{len(failures)} session(s) did not start and were retried: {'; '.join(failures)}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds measured per session (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds after the first frame that are not counted (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="sessions per side, samples pooled (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640, help="video width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=480, help="video height (default: %(default)s)")
    parser.add_argument("--fps", type=int, default=30, help="frames drawn per second (default: %(default)s)")
    args = parser.parse_args()
    if chromium_path() is None:
        sys.exit("bench_browser: no Chromium found (apt-get install chromium, or set REMOTEMEDIA_CHROMIUM)")
    run(args).finish()


if __name__ == "__main__":
    main()
