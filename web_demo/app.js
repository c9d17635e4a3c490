// The demo page: camera and microphone to a RemoteMedia service on an
// executor, the processed video and the talk-back voice back, transcripts
// and connection figures on the side. State for tests, benchmarks and the
// console is on ``window.remotemedia``.

import { CounterMeter, CounterSource, loopback } from "./bench.js";
import { ServiceSession } from "./session.js";
import { Signaling, SignalingError } from "./signaling.js";
import { StatsSampler } from "./stats.js";
import * as ui from "./ui.js";

// -- configuration, from the URL ------------------------------------------------------

const params = new URLSearchParams(location.search);
// Parameters the page reads itself; every other one is an option for the service (?effect=blur&talkback=1).
const PAGE_PARAMS = new Set([
  "token", "service", "autostart", "bench", "loopback", "ice", "width", "height", "fps", "mirror",
]);

/** A URL value as an option: 1/0/true/false/yes/no/on/off are booleans, other numbers numbers, the rest text. */
function optionValue(text) {
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  if (text.trim() !== "" && !Number.isNaN(Number(text))) return Number(text);
  return text;
}

const flag = (name) => params.has(name) && optionValue(params.get(name)) === true;
const number = (name, fallback) => {
  const value = Number(params.get(name));
  return Number.isFinite(value) && value > 0 ? value : fallback;
};

const bench = flag("bench");
const urlOptions = Object.fromEntries(
  [...params].filter(([name]) => !PAGE_PARAMS.has(name)).map(([name, value]) => [name, optionValue(value)]),
);

const config = {
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  service: params.get("service") || "demo",
  token: params.get("token") || null,
  autostart: flag("autostart"),
  bench,
  loopback: bench && flag("loopback"),
  iceServers: (params.get("ice") || "").split(",").filter(Boolean).map((urls) => ({ urls })),
  width: number("width", 640),
  height: number("height", 480),
  fps: number("fps", 30),
  // A selfie view by default; the test pattern reads the right way round.
  mirror: params.has("mirror") ? flag("mirror") : !bench,
  // The benchmark measures the way there and back: no effect, no Whisper competing for the CPU.
  options: bench ? { effect: "none", transcribe: false, ...urlOptions } : urlOptions,
};

// -- the state others can read ----------------------------------------------------------

/** What the page is doing, for tests, benchmarks and the console. */
const model = {
  /** idle, connecting, running, error or lost. */
  state: "idle",
  /** The connecting step shown, while connecting. */
  step: null,
  service: config.service,
  /** The executor's name, once paired. */
  executor: null,
  session: null,
  /** The STUN/TURN URLs this session's peer connection was given (the page's ?ice= and the server's). */
  iceUrls: [],
  gpu: false,
  /** ``{code, message}`` of the last failure, null when there is none. */
  error: null,
  /** The service's options as the executor last reported them, and their allowed values. */
  options: {},
  choices: {},
  /** ``{text, start, end, at}`` per transcript; ``{text, at}`` per reply; other messages (text, event). */
  transcripts: [],
  replies: [],
  messages: [],
  /** The latest figures from getStats (see stats.js) and from the executor's ``stats`` message. */
  stats: {},
  executorStats: {},
  /** performance.now() when the first processed frame was shown, and frames shown since. */
  firstFrameAt: null,
  framesReceived: 0,
  /** The benchmark's meter (?bench=1): ``latencies``, ``fps``, ``reset()``, ``summary()``. */
  bench: null,
  start: () => connect(),
  stop: () => stop(),
  reconnect: () => connect(),
  configure: (options) => runtime.session && runtime.session.configure(options),
};
window.remotemedia = model;

/** What is not for others to read: the live objects. */
const runtime = {
  attempt: 0,
  stream: null,
  source: null,
  signaling: null,
  session: null,
  sampler: null,
  loopbackPcs: [],
};

const $ = (id) => document.getElementById(id);
const localVideo = $("local-video");
const remoteVideo = $("remote-video");
const remoteAudio = $("remote-audio");

// -- states and failures ------------------------------------------------------------------

function setState(state, step = null) {
  model.state = state;
  model.step = step;
  ui.showState(state, step);
  $("start-button").hidden = state !== "idle";
  $("stop-button").hidden = state === "idle";
  document.body.dataset.state = state;
}

function setExecutor(name) {
  model.executor = name;
  $("executor-name").textContent = name || "an executor";
}

/** A failure a person can act on: the state becomes ``error`` and the banner says what to do. */
function fail(code, title, message, actions = [retry()], token = null) {
  model.error = { code, message };
  setState("error");
  ui.showBanner({ tone: token ? "warning" : "error", title, message, actions, token });
}

const retry = (label = "Try again") => ({ label, testid: "retry-button", primary: true, onClick: () => connect() });

function failWith(error) {
  if (error instanceof DeviceError) {
    fail(error.code, error.title, error.message);
  } else if (error instanceof SignalingError) {
    failSignaling(error);
  } else {
    console.error(error);
    fail("unexpected", "Something went wrong", error.message || String(error));
  }
}

function failSignaling(error) {
  switch (error.code) {
    case "unreachable":
      fail("unreachable", "Cannot reach the RemoteMedia server",
        `${error.message}. Is the server running (python -m remotemedia serve), and reachable from this browser?`);
      break;
    case "unauthorized":
      fail("unauthorized", config.token ? "That access token was refused" : "This server needs an access token",
        "Enter the token the server was started with (its --token or REMOTEMEDIA_TOKEN), " +
        "or a client token minted for it (python -m remotemedia token client).", [],
        (token) => { config.token = token; connect(); });
      break;
    case "token_expired":
    case "wrong_role":
      // The server says what is wrong with this token; another one may do.
      fail(error.code, error.code === "token_expired" ? "That access token has expired" : "That is not a client token",
        `${error.message}.`, [], (token) => { config.token = token; connect(); });
      break;
    case "forbidden":
    case "quota_exceeded":
      fail(error.code, error.code === "forbidden" ? "Your access token does not allow this"
        : "Your access token's sessions are all in use", error.message);
      break;
    case "no_executor":
      // The server says why (none registered, none offers the service, all busy) and what to do.
      fail("no_executor", "No executor is available", error.message);
      break;
    default:
      fail(error.code, "The signaling server refused", error.message);
  }
}

/** A camera or microphone failure, with what to do about it. */
class DeviceError extends Error {
  constructor(code, title, message) {
    super(message);
    this.code = code;
    this.title = title;
  }
}

function mediaError(error) {
  switch (error.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new DeviceError("media_denied", "Camera and microphone are blocked",
        "Allow them for this page: click the camera icon in the address bar (or open the site settings), "
        + "choose Allow, then press Try again.");
    case "NotFoundError":
    case "OverconstrainedError":
      return new DeviceError("media_missing", "No camera or microphone found",
        "Connect a camera or a microphone (or turn it on in your system's settings), then press Try again.");
    case "NotReadableError":
    case "AbortError":
      return new DeviceError("media_busy", "The camera or microphone is busy",
        "Another application may be using it: close it, then press Try again.");
    default:
      return new DeviceError("media_failed", "The camera could not start", `${error.name}: ${error.message}`);
  }
}

// -- connecting ---------------------------------------------------------------------------

async function ensureMedia() {
  if (runtime.stream && runtime.stream.getTracks().some((t) => t.readyState === "live")) return;
  if (config.bench) {
    runtime.source = new CounterSource(config.width, config.height, config.fps);
    runtime.source.start();
    runtime.stream = runtime.source.stream;
    if (model.bench) {
      // Started again after Stop: measure the new source.
      model.bench.source = runtime.source;
      model.bench.reset();
    }
  } else {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new DeviceError("insecure", "This page cannot use the camera here",
        "Browsers allow the camera only on secure pages: open it over https, or at http://localhost on the "
        + "machine that runs the server.");
    }
    const video = {
      width: { ideal: config.width }, height: { ideal: config.height }, frameRate: { ideal: config.fps },
    };
    const audio = { echoCancellation: true, noiseSuppression: false, autoGainControl: false };
    try {
      runtime.stream = await navigator.mediaDevices.getUserMedia({ video, audio });
    } catch (error) {
      if (error.name !== "NotFoundError" && error.name !== "OverconstrainedError") throw mediaError(error);
      // One of the two may be there: the service takes either alone.
      runtime.stream = await navigator.mediaDevices.getUserMedia({ video }).catch(
        () => navigator.mediaDevices.getUserMedia({ audio }),
      ).catch(() => { throw mediaError(error); });
      const missing = runtime.stream.getVideoTracks().length ? "microphone" : "camera";
      ui.showBanner({ tone: "info", title: `No ${missing} found`, message: `Going on without one.` });
    }
  }
  localVideo.srcObject = runtime.stream;
  $("local-placeholder").hidden = true;
}

async function ensureSignaling() {
  if (runtime.signaling && runtime.signaling.open) return;
  const signaling = await Signaling.connect(config.url);
  signaling.addEventListener("close", () => {
    // The media goes peer to peer: a running session outlives its signaling connection.
    if (runtime.signaling === signaling) ui.setFooter(`Signaling ${config.url}: connection closed`);
  });
  runtime.signaling = signaling;
  ui.setFooter(`Signaling ${config.url} · service ${config.service}`);
}

/** Start, Try again and Reconnect: pairs with an executor and starts the service (the camera is kept). */
async function connect() {
  runtime.attempt += 1;
  const attempt = runtime.attempt;
  const current = () => attempt === runtime.attempt;
  endSession("reconnecting");
  model.error = null;
  ui.hideBanner();
  try {
    setState("connecting", config.bench ? "Starting the test pattern" : "Starting the camera");
    await ensureMedia();
    if (!current()) return;
    if (config.loopback) {
      await startLoopback();
      return;
    }
    setState("connecting", "Reaching the server");
    await ensureSignaling();
    if (!current()) return;
    setState("connecting", "Finding an executor");
    const paired = await runtime.signaling.pair({ service: config.service }, config.token);
    if (!current()) {
      runtime.signaling.send({ type: "bye", session: paired.session, reason: "cancelled" });
      return;
    }
    setExecutor(paired.executor);
    model.session = paired.session;
    setState("connecting", `Connecting to ${paired.executor}`);
    // Reconnecting keeps what the person chose in the last session.
    const options = { ...config.options, ...model.options };
    const session = new ServiceSession({
      signaling: runtime.signaling, paired, stream: runtime.stream, options, iceServers: config.iceServers,
    });
    runtime.session = session;
    model.iceUrls = session.pc.getConfiguration().iceServers.flatMap((server) => [].concat(server.urls));
    session.addEventListener("track", (event) => showTrack(event.detail));
    session.addEventListener("message", (event) => serviceMessage(event.detail));
    session.addEventListener("end", (event) => sessionEnded(session, event.detail));
    startStats(session.pc);
    await session.start();
  } catch (error) {
    if (current()) failWith(error);
  }
}

async function startLoopback() {
  setState("connecting", "Looping back in the page");
  const { track, pcs } = await loopback(runtime.stream.getVideoTracks()[0]);
  runtime.loopbackPcs = pcs;
  setExecutor("this page (loopback)");
  showTrack(track);
  startStats(pcs[pcs.length - 1]);
  setState("running");
}

function startStats(pc) {
  runtime.sampler = new StatsSampler(pc, (stats) => {
    model.stats = stats;
    renderStats();
  });
  runtime.sampler.start();
}

function renderStats() {
  ui.renderStats({
    executor: model.executor,
    gpu: model.gpu,
    stats: model.stats,
    executorStats: model.executorStats,
    bench: model.bench ? model.bench.summary() : null,
  });
}

function showTrack(track) {
  if (track.kind === "video") {
    remoteVideo.srcObject = new MediaStream([track]);
    $("remote-placeholder").hidden = true;
  } else if (track.kind === "audio") {
    remoteAudio.srcObject = new MediaStream([track]);
    // Without a click first (?autostart=1), a browser may refuse to play sound.
    remoteAudio.play().catch(() => { $("sound-button").hidden = false; });
  }
}

// -- the running session ---------------------------------------------------------------------

function serviceMessage(message) {
  const at = Date.now();
  switch (message.type) {
    case "welcome":
      setExecutor(message.executor || model.executor);
      model.gpu = Boolean(message.gpu);
      model.options = message.options || {};
      model.choices = message.choices || {};
      ui.renderOptions(model.options, model.choices, (name, value) => model.configure({ [name]: value }));
      setState("running");
      renderStats();
      break;
    case "configured":
      model.options = message.options || model.options;
      ui.selectOptions(model.options);
      break;
    case "transcript":
      model.transcripts.push({ text: message.text, start: message.start, end: message.end, at });
      ui.addTranscriptItem({ kind: "transcript", text: message.text, at });
      break;
    case "reply":
      model.replies.push({ text: message.text, at });
      ui.addTranscriptItem({ kind: "reply", text: message.text, at });
      break;
    case "interrupted":
      // Barge-in: the person spoke over the reply, and the executor cut it (and its queued audio).
      model.interruptions = (model.interruptions || 0) + 1;
      model.messages.push({ ...message, at });
      ui.addTranscriptItem({ kind: "note", text: "(reply interrupted)", at });
      break;
    case "paused":
    case "resumed":
      // Barge-in: speech started over the reply (its audio is held), or ended too short to cut it.
      model.replyPaused = message.type === "paused";
      model.messages.push({ ...message, at });
      break;
    case "text":
    case "event":
      model.messages.push({ ...message, at });
      ui.addTranscriptItem({
        kind: "note", text: message.type === "text" ? message.text : JSON.stringify(message.data), at,
      });
      break;
    case "done":
      // The service ended on its own: nothing more will come back.
      endSession("done");
      setState("idle");
      ui.showBanner({ tone: "info", title: "The service has finished", message: `${model.executor} ended it.` });
      break;
    case "stats": {
      const { type, ...figures } = message;
      model.executorStats = figures;
      break;
    }
    case "error":
      // Errors before welcome, service_failed and unauthorized end the session (sessionEnded).
      if (model.state === "running" && message.code !== "service_failed" && message.code !== "unauthorized") {
        model.error = { code: message.code, message: message.message };
        ui.selectOptions(model.options);
        ui.showBanner({
          tone: "warning",
          title: message.code === "bad_options" ? "The executor refused that option" : "The executor refused a message",
          message: message.message,
          actions: [{ label: "Dismiss", testid: "dismiss-button", onClick: () => ui.hideBanner() }],
        });
      }
      break;
    default:
      console.debug("service: ignoring", message);
  }
}

function sessionEnded(session, { kind, code, message }) {
  if (runtime.session !== session) return;
  const executor = session.executor;
  endSession();
  model.error = { code, message };
  if (kind === "lost") {
    setState("lost");
    ui.showBanner({
      title: "The executor was lost",
      message: `${message.replace(/[.\s]+$/, "")}. Reconnect to pair with an executor again.`,
      actions: [{ label: "Reconnect", testid: "reconnect-button", primary: true, onClick: () => connect() }],
    });
  } else {
    setState("error");
    const titles = {
      service_failed: `The service failed on ${executor}`,
      unauthorized: `${executor} refused this session`,
      bad_options: `${executor} refused the options`,
    };
    const title = titles[code] || "The session could not start";
    // The same options would be refused again: the way out is the service's own defaults.
    const defaults = {
      label: "Start with the default options", testid: "retry-button", primary: true,
      onClick: () => { config.options = {}; model.options = {}; connect(); },
    };
    ui.showBanner({ title, message, actions: [code === "bad_options" ? defaults : retry()] });
  }
}

/** Closes the session, if any, with a ``bye``; the camera and the signaling connection stay. */
function endSession(reason = "closed by the page") {
  if (runtime.sampler) runtime.sampler.stop();
  runtime.sampler = null;
  if (runtime.session) runtime.session.close(reason);
  runtime.session = null;
  runtime.loopbackPcs.forEach((pc) => pc.close());
  runtime.loopbackPcs = [];
  remoteVideo.srcObject = null;
  remoteAudio.srcObject = null;
  $("remote-placeholder").hidden = false;
  $("remote-placeholder").textContent = "The video comes back here, processed.";
  model.session = null;
  model.stats = {};
  model.executorStats = {};
  ui.clearOptions();
  renderStats();
}

/** Stop: the session, the camera and the signaling connection. */
function stop() {
  runtime.attempt += 1;
  endSession("stopped");
  if (runtime.source) runtime.source.stop();
  runtime.source = null;
  if (runtime.stream) runtime.stream.getTracks().forEach((t) => t.stop());
  runtime.stream = null;
  localVideo.srcObject = null;
  $("local-placeholder").hidden = false;
  if (runtime.signaling) runtime.signaling.close();
  runtime.signaling = null;
  model.error = null;
  ui.hideBanner();
  setState("idle");
}

// -- frames shown, and the benchmark's meter ----------------------------------------------------

function countFrames(video) {
  if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) {
    video.addEventListener("playing", () => { model.firstFrameAt ??= performance.now(); });
    return;
  }
  const onFrame = () => {
    model.framesReceived += 1;
    model.firstFrameAt ??= performance.now();
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

// -- wiring ------------------------------------------------------------------------------------

function init() {
  countFrames(remoteVideo);
  $("start-button").addEventListener("click", () => connect());
  $("stop-button").addEventListener("click", () => stop());
  $("sound-button").addEventListener("click", () => {
    remoteAudio.play().then(() => { $("sound-button").hidden = true; }, () => {});
  });
  window.addEventListener("pagehide", () => endSession("page closed"));
  ui.setFooter(`Signaling ${config.url} · service ${config.service}`);
  document.body.classList.toggle("mirrored", config.mirror);
  setState("idle");
  if (config.bench) {
    // The meter needs the source: make it now, so that the remote video is measured from its first frame.
    ensureMedia().then(() => {
      model.bench = new CounterMeter(remoteVideo, runtime.source);
      model.bench.start();
      if (config.autostart) connect();
    }, failWith);
    return;
  }
  if (config.autostart) connect();
}

init();
