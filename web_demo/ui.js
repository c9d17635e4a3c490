// The page's DOM: the state pill, the banner, the option controls built from
// the service's ``welcome``, the transcript list and the stats panel. No
// protocol here; app.js decides what to show.

const $ = (id) => document.getElementById(id);

const STATE_TEXT = {
  idle: "Idle",
  connecting: "Connecting",
  running: "Live",
  error: "Error",
  lost: "Executor lost",
};

// Names shown for the demo service's options; any other option shows its own name.
const LABELS = { effect: "Effect", talkback: "Talk-back", transcribe: "Transcribe" };

const label = (name) => LABELS[name] || name.charAt(0).toUpperCase() + name.slice(1).replace(/_/g, " ");

/** ``text`` as a sentence: messages from the server and the executor start lowercase and end bare. */
function sentence(text) {
  const trimmed = (text || "").trim();
  if (!trimmed) return "";
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?)]$/.test(capital) ? capital : `${capital}.`;
}

/** The state pill in the header; ``detail`` replaces the state's own words (a connecting step). */
export function showState(state, detail) {
  const pill = document.querySelector("[data-testid=state]");
  pill.dataset.state = state;
  $("state-text").textContent = detail || STATE_TEXT[state] || state;
}

/**
 * The banner under the header. ``tone``: error, warning or info; ``actions``:
 * buttons ``{label, testid, primary, onClick}``; ``token``: show the token
 * field, whose submit calls ``token(value)``.
 */
export function showBanner({ tone = "error", title, message, actions = [], token = null }) {
  const banner = $("banner");
  banner.dataset.tone = tone;
  $("banner-title").textContent = title;
  $("banner-message").textContent = sentence(message);
  const buttons = $("banner-actions");
  buttons.replaceChildren(...actions.map((action) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = action.label;
    button.dataset.testid = action.testid;
    if (action.primary) button.classList.add("primary");
    button.addEventListener("click", action.onClick);
    return button;
  }));
  const form = $("token-form");
  form.hidden = !token;
  form.onsubmit = (event) => {
    event.preventDefault();
    token($("token-input").value.trim());
  };
  banner.hidden = false;
  if (token) $("token-input").focus();
}

export function hideBanner() {
  $("banner").hidden = true;
}

/**
 * Controls for the service's options: a segmented control for each option
 * with ``choices``, a switch for each boolean. ``onChange(name, value)`` is
 * called when a person changes one.
 */
export function renderOptions(options, choices, onChange) {
  const container = $("options");
  const controls = [];
  for (const [name, value] of Object.entries(options || {})) {
    const allowed = choices ? choices[name] : null;
    if (typeof value === "boolean") {
      controls.push(toggle(name, value, onChange));
    } else if (Array.isArray(allowed) && allowed.length) {
      controls.push(segmented(name, value, allowed, onChange));
    }
  }
  container.replaceChildren(...controls);
}

function segmented(name, value, allowed, onChange) {
  const group = document.createElement("div");
  group.className = "segmented";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", label(name));
  group.dataset.option = name;
  const caption = document.createElement("span");
  caption.className = "segmented-label";
  caption.textContent = label(name);
  group.append(caption);
  for (const choice of allowed) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = String(choice);
    button.dataset.testid = `${name}-${choice}`;
    button.dataset.value = JSON.stringify(choice);
    button.setAttribute("aria-pressed", String(choice === value));
    button.addEventListener("click", () => {
      if (button.getAttribute("aria-pressed") === "true") return;
      markSegmented(group, choice);
      onChange(name, choice);
    });
    group.append(button);
  }
  return group;
}

function markSegmented(group, value) {
  for (const button of group.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.value === JSON.stringify(value)));
  }
}

function toggle(name, value, onChange) {
  const wrapper = document.createElement("label");
  wrapper.className = "switch";
  wrapper.dataset.option = name;
  // On the label, which a person clicks (the checkbox itself is drawn by the track).
  wrapper.dataset.testid = `option-${name}`;
  const input = document.createElement("input");
  input.type = "checkbox";
  input.setAttribute("role", "switch");
  input.checked = value;
  input.addEventListener("change", () => onChange(name, input.checked));
  const track = document.createElement("span");
  track.className = "switch-track";
  track.setAttribute("aria-hidden", "true");
  const text = document.createElement("span");
  text.textContent = label(name);
  wrapper.append(input, track, text);
  return wrapper;
}

/** Shows ``options`` (what the executor says it runs now) in the controls. */
export function selectOptions(options) {
  for (const [name, value] of Object.entries(options || {})) {
    const control = document.querySelector(`#options [data-option="${CSS.escape(name)}"]`);
    if (!control) continue;
    if (control.classList.contains("segmented")) markSegmented(control, value);
    else control.querySelector("input").checked = Boolean(value);
  }
}

export function clearOptions() {
  $("options").replaceChildren();
}

const CLOCK = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
const clock = (ms) => new Date(ms).toLocaleTimeString([], CLOCK);

/** Appends one line to the transcript: ``kind`` is transcript, reply or note. */
export function addTranscriptItem({ kind, text, at }) {
  const list = $("transcript");
  const item = document.createElement("li");
  item.className = `line ${kind}`;
  item.dataset.kind = kind;
  const time = document.createElement("time");
  time.dateTime = new Date(at).toISOString();
  time.textContent = clock(at);
  const body = document.createElement("span");
  body.className = "text";
  if (kind === "reply") {
    const who = document.createElement("b");
    who.textContent = "RemoteMedia says: ";
    body.append(who, text);
  } else {
    body.textContent = text;
  }
  item.append(time, body);
  // Follow the newest line, unless the reader scrolled up to read an older one.
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
  list.append(item);
  while (list.children.length > 200) list.firstElementChild.remove();
  if (atBottom) list.scrollTop = list.scrollHeight;
  $("transcript-empty").hidden = true;
}

const show = (value, unit, digits = 0) => (value == null ? "–" : `${Number(value).toFixed(digits)} ${unit}`);

/** Fills the stats panel from the page's figures (``stats``), the executor's (``executor``) and the benchmark's. */
export function renderStats({ executor, gpu, stats = {}, executorStats = {}, bench = null }) {
  const set = (key, text) => {
    const cell = document.querySelector(`#stats [data-stat="${key}"]`);
    if (cell.textContent !== text) cell.textContent = text;
  };
  set("executor", executor ? `${executor}${gpu ? " · GPU" : ""}` : "–");
  set("rtt", show(stats.rttMs, "ms", 1));
  set("fps", show(stats.fps, "fps", 1));
  const sent = stats.sentWidth ? `${stats.sentWidth}×${stats.sentHeight}` : "–";
  const received = stats.width ? `${stats.width}×${stats.height}` : "–";
  set("resolution", stats.sentWidth || stats.width ? `${sent} → ${received}` : "–");
  set("upload", show(stats.sendKbps, "kbit/s"));
  set("download", show(stats.recvKbps, "kbit/s"));
  set("process", show(executorStats.process_ms, "ms/frame", 1));
  set("dropped", executorStats.dropped == null ? "–" : String(executorStats.dropped));
  // What speech recognition shed to keep up: sounds too short to be words, utterances merged while busy.
  const ignored = executorStats.utterances_ignored, merged = executorStats.utterances_merged;
  set("speech", ignored == null && merged == null ? "–" : `${ignored || 0} too short · ${merged || 0} merged`);
  document.body.classList.toggle("bench", Boolean(bench));
  if (bench) set("bench", bench.p50 == null ? "–" : `${bench.p50.toFixed(0)} ms p50 · ${bench.fps.toFixed(1)} fps`);
}

/** The footer line. */
export function setFooter(text) {
  $("footer-text").textContent = text;
}
