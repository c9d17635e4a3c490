// The signaling connection (signaling_server/PROTOCOL.md): one websocket,
// JSON text messages. It pairs with an executor and hands the session's
// relayed messages (answer, candidate, bye, errors about the session) to
// whoever listens for "message".

/** An error the signaling server sent, or a failure to reach it; ``code`` is the protocol's error code. */
export class SignalingError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SignalingError";
    /** The protocol's code (``no_executor``, ``unauthorized``...), or ``unreachable`` / ``closed`` for the socket. */
    this.code = code;
  }
}

// Errors after which the server closes the connection: every pending request fails with them.
const FATAL = new Set(["unauthorized", "wrong_role", "token_expired", "rate_limited", "hello_timeout", "idle_timeout"]);

// The server's connection-limit close codes (LIMIT_CLOSES in remotemedia/signaling/messages.py; a test
// checks the two agree), each with what the person can do.
const LIMIT_CLOSES = {
  4503: ["server_full", "The server holds as many connections as it allows. Try again in a while."],
  4429: ["too_many_connections", "Too many connections come from this address. Close other tabs of this page, then try again."],
  4408: ["idle_timeout", "The connection sat idle and the server closed it. Try again."],
};

/**
 * One websocket to the signaling server. Events: ``message`` (``detail``: a
 * message about a session: offer, answer, candidate, bye, or an error with
 * ``session``) and ``close`` (``detail``: a SignalingError saying why).
 */
export class Signaling extends EventTarget {
  /** Opens ``url``; rejects with a SignalingError ``unreachable`` when it cannot. */
  static connect(url, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (error) {
        reject(new SignalingError("unreachable", `${url} is not a valid websocket address (${error.message})`));
        return;
      }
      const fail = (why) => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = ws.onclose = null;
        try { ws.close(); } catch { /* already closed */ }
        reject(new SignalingError("unreachable", why));
      };
      const timer = setTimeout(() => fail(`no answer from ${url} within ${timeoutMs / 1000} s`), timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        ws.onopen = ws.onerror = ws.onclose = null;
        resolve(new Signaling(ws, url));
      };
      // A websocket says nothing about why it failed (on purpose): the close code is all there is.
      ws.onerror = () => fail(`cannot connect to ${url}`);
      ws.onclose = (event) => fail(`cannot connect to ${url} (closed with code ${event.code})`);
    });
  }

  constructor(ws, url) {
    super();
    this.ws = ws;
    this.url = url;
    this.open = true;
    this._pending = new Map();
    this._requests = 0;
    // The last connection-ending error the server sent: the reason given when it then closes.
    this._fatal = null;
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => this._closed(event);
  }

  /** Sends one message (silently dropped once the socket is closed: the close event says so). */
  send(message) {
    if (this.open && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  /** Asks for an executor; resolves with ``paired``, rejects with a SignalingError (``no_executor``...). */
  pair(requirements, token) {
    if (!this.open) return Promise.reject(new SignalingError("closed", "the signaling connection is closed"));
    this._requests += 1;
    const request = `pair-${this._requests}`;
    const message = { type: "pair", request, requirements };
    if (token) message.token = token;
    return new Promise((resolve, reject) => {
      this._pending.set(request, { resolve, reject });
      this.send(message);
    });
  }

  /** Closes the websocket; pending requests fail. */
  close() {
    if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, "bye");
  }

  _receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      console.warn("signaling: ignoring a message that is not JSON", text);
      return;
    }
    if (message.type === "error" && FATAL.has(message.code)) {
      // The server closes the connection after these: nothing more may be sent on it.
      this.open = false;
      this._fatal = new SignalingError(message.code, message.message);
    }
    if (message.type === "paired" || (message.type === "error" && message.request)) {
      const pending = this._pending.get(message.request);
      if (pending) {
        this._pending.delete(message.request);
        if (message.type === "paired") pending.resolve(message);
        else pending.reject(new SignalingError(message.code, message.message));
        return;
      }
    }
    if (message.type === "error" && !message.session) {
      const error = new SignalingError(message.code, message.message);
      if (FATAL.has(message.code)) {
        this._failPending(error);
      } else if (this._pending.size && message.code !== "unknown_session") {
        // An answer to a pair that did not carry its request id.
        this._failPending(error);
      } else {
        console.warn("signaling error", message.code, message.message);
      }
      return;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  _failPending(error) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    pending.forEach((p) => p.reject(error));
  }

  _closed(event) {
    this.open = false;
    const limit = LIMIT_CLOSES[event.code];
    const error = this._fatal
      || (limit && new SignalingError(limit[0], limit[1]))
      || new SignalingError("closed", `the signaling server closed the connection (code ${event.code})`);
    this._failPending(error);
    this.dispatchEvent(new CustomEvent("close", { detail: error }));
  }
}
