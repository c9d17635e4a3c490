// Benchmark mode (?bench=1): a synthetic camera whose frames carry their
// number, a meter that reads the numbers back from the processed video, and
// the baseline: the same source through two browser-to-browser peer
// connections in this page (encode, decode, encode, decode, as on the way
// through an executor, without the executor).

import { decode, draw, layout } from "./framecode.js";

// Sent frames remembered for latency lookups: 20 s at 30 fps.
const REMEMBERED = 600;

/** A canvas track that draws frame counters at ``fps``; ``sentAt`` maps a counter to when it was drawn. */
export class CounterSource {
  constructor(width, height, fps) {
    this.canvas = document.createElement("canvas");
    this.canvas.width = width;
    this.canvas.height = height;
    this.ctx = this.canvas.getContext("2d");
    this.grid = layout(width, height);
    this.period = 1000 / fps;
    // Frame rate 0 and requestFrame(): exactly one captured frame per drawn counter.
    this.stream = this.canvas.captureStream(0);
    this.track = this.stream.getVideoTracks()[0];
    this.sentAt = new Map();
    this.counter = 0;
    this.sent = 0;
    this._timer = null;
    this._next = 0;
  }

  start() {
    this._next = performance.now();
    this._tick();
  }

  stop() {
    clearTimeout(this._timer);
    this.track.stop();
  }

  _tick() {
    this.counter = (this.counter + 1) & 0xffff;
    draw(this.ctx, this.grid, this.counter);
    this.sentAt.set(this.counter, performance.now());
    this.sentAt.delete((this.counter - REMEMBERED) & 0xffff);
    this.sent += 1;
    this.track.requestFrame();
    // Scheduled against the ideal timeline, so timer lateness does not lower the rate.
    this._next += this.period;
    this._timer = setTimeout(() => this._tick(), Math.max(0, this._next - performance.now()));
  }
}

/**
 * Reads counters from every frame ``video`` presents. ``latencies`` (ms, one
 * per distinct frame), ``frames`` and ``undecodable`` count since the last
 * :meth:`reset`; ``fps`` is updated each second.
 */
export class CounterMeter {
  constructor(video, source) {
    this.video = video;
    this.source = source;
    this.canvas = document.createElement("canvas");
    this.canvas.width = source.canvas.width;
    this.canvas.height = source.canvas.height;
    this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
    this.lastCounter = null;
    this.reset();
    this._onFrame = (now, meta) => this._frame(now, meta);
    this._timer = null;
  }

  start() {
    this.video.requestVideoFrameCallback(this._onFrame);
    this._timer = setInterval(() => { this.fps = this.summary().fps; }, 1000);
  }

  /** Starts a new measurement window. */
  reset() {
    this.since = performance.now();
    this.sentBefore = this.source.sent;
    this.latencies = [];
    this.frames = 0;
    this.undecodable = 0;
    this.fps = 0;
  }

  /** What was measured since :meth:`reset`: latencies (ms), fps received, fps sent, frames, undecodable. */
  summary() {
    const seconds = (performance.now() - this.since) / 1000;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : null);
    return {
      seconds,
      frames: this.frames,
      undecodable: this.undecodable,
      sent: this.source.sent - this.sentBefore,
      fps: seconds > 0 ? this.frames / seconds : 0,
      sentFps: seconds > 0 ? (this.source.sent - this.sentBefore) / seconds : 0,
      p50: at(0.5),
      p90: at(0.9),
      latencies: this.latencies,
    };
  }

  _frame(now, meta) {
    const arrival = meta.presentationTime || now;
    const { width, height } = this.canvas;
    this.ctx.drawImage(this.video, 0, 0, width, height);
    const counter = decode(this.ctx.getImageData(0, 0, width, height), this.source.grid);
    if (counter === null) {
      this.undecodable += 1;
    } else if (counter !== this.lastCounter) {
      this.lastCounter = counter;
      const sent = this.source.sentAt.get(counter);
      if (sent !== undefined && sent >= this.since) {
        this.latencies.push(arrival - sent);
        this.frames += 1;
      }
    }
    this.video.requestVideoFrameCallback(this._onFrame);
  }
}

/** Puts VP8 first, the codec aiortc executors use, so the baseline codes video the same way. */
function preferVP8(transceiver) {
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
  if (vp8.length && transceiver.setCodecPreferences) transceiver.setCodecPreferences(vp8);
}

/** Two peer connections in this page, ``track`` sent from one to the other; resolves with the received track. */
async function loop(track) {
  const sender = new RTCPeerConnection();
  const receiver = new RTCPeerConnection();
  sender.onicecandidate = (e) => e.candidate && receiver.addIceCandidate(e.candidate);
  receiver.onicecandidate = (e) => e.candidate && sender.addIceCandidate(e.candidate);
  preferVP8(sender.addTransceiver(track, { direction: "sendonly" }));
  const received = new Promise((resolve) => { receiver.ontrack = (e) => resolve(e.track); });
  await sender.setLocalDescription();
  await receiver.setRemoteDescription(sender.localDescription);
  await receiver.setLocalDescription();
  await sender.setRemoteDescription(receiver.localDescription);
  return { pcs: [sender, receiver], track: await received };
}

/**
 * The baseline: ``track`` there and back through two in-page loops (the
 * first loop's received track is sent again, so it is decoded and encoded
 * again). Resolves with ``{track, pcs}``: the track that came back, and the
 * peer connections (the last one is the one whose stats describe the return).
 */
export async function loopback(track) {
  const there = await loop(track);
  const back = await loop(there.track);
  return { track: back.track, pcs: [...there.pcs, ...back.pcs] };
}
