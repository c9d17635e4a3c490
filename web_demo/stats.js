// Connection figures from RTCPeerConnection.getStats(), once a second: the
// numbers a person (or a test) wants to see, with rates taken from the
// difference between two reports.

/** The candidate pair the connection uses, or null before there is one. */
function selectedPair(report) {
  let pair = null;
  report.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) || pair;
  });
  if (pair) return pair;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
  });
  return pair;
}

/** Totals from one report: what later samples subtract from. */
function totals(report) {
  const t = {
    at: performance.now(),
    bytesSent: 0,
    bytesReceived: 0,
    videoIn: null,
    videoOut: null,
    audioIn: null,
    pair: selectedPair(report),
  };
  report.forEach((s) => {
    if (s.type === "outbound-rtp") {
      t.bytesSent += s.bytesSent || 0;
      if (s.kind === "video") t.videoOut = s;
    } else if (s.type === "inbound-rtp") {
      t.bytesReceived += s.bytesReceived || 0;
      if (s.kind === "video") t.videoIn = s;
      if (s.kind === "audio") t.audioIn = s;
    }
  });
  return t;
}

const round = (value, digits = 0) => (value == null || Number.isNaN(value) ? null : Number(value.toFixed(digits)));

/**
 * Samples ``pc`` every ``intervalMs`` and calls ``onStats`` with: ``rttMs``,
 * ``fps`` (video received), ``sendKbps``, ``recvKbps``, ``sentWidth`` x
 * ``sentHeight``, ``width`` x ``height`` (received), ``framesDecoded``,
 * ``packetsLost``, ``audioEnergy`` (received audio's ``totalAudioEnergy``),
 * ``audioLevel``, ``qualityLimitation``. A figure not known yet is null.
 */
export class StatsSampler {
  constructor(pc, onStats, intervalMs = 1000) {
    this.pc = pc;
    this.onStats = onStats;
    this.intervalMs = intervalMs;
    this._last = null;
    this._timer = null;
  }

  start() {
    this.stop();
    this._timer = setInterval(() => this.sample().catch((e) => console.warn("getStats failed", e)), this.intervalMs);
  }

  stop() {
    clearInterval(this._timer);
    this._timer = null;
  }

  async sample() {
    if (this.pc.connectionState === "closed") return null;
    const now = totals(await this.pc.getStats());
    const last = this._last;
    this._last = now;
    const seconds = last ? (now.at - last.at) / 1000 : 0;
    const rate = (a, b) => (last && seconds > 0 ? (8 * (a - b)) / 1000 / seconds : null);
    const vin = now.videoIn || {};
    const vout = now.videoOut || {};
    let fps = vin.framesPerSecond ?? null;
    if (fps == null && last && last.videoIn && seconds > 0) {
      fps = ((vin.framesDecoded || 0) - (last.videoIn.framesDecoded || 0)) / seconds;
    }
    const stats = {
      rttMs: now.pair && now.pair.currentRoundTripTime != null ? round(now.pair.currentRoundTripTime * 1000, 1) : null,
      fps: round(fps, 1),
      sendKbps: round(rate(now.bytesSent, last ? last.bytesSent : 0)),
      recvKbps: round(rate(now.bytesReceived, last ? last.bytesReceived : 0)),
      width: vin.frameWidth ?? null,
      height: vin.frameHeight ?? null,
      sentWidth: vout.frameWidth ?? null,
      sentHeight: vout.frameHeight ?? null,
      sentFps: round(vout.framesPerSecond ?? null, 1),
      framesDecoded: vin.framesDecoded ?? null,
      packetsLost: vin.packetsLost ?? null,
      audioEnergy: now.audioIn ? now.audioIn.totalAudioEnergy ?? null : null,
      audioLevel: now.audioIn ? now.audioIn.audioLevel ?? null : null,
      qualityLimitation: vout.qualityLimitationReason ?? null,
    };
    this.onStats(stats);
    return stats;
  }
}
