// One service session (PROTOCOL.md, "Services"): the peer connection to the
// executor, its "service" data channel, and how the session can end.
//
// Events:
//   track    detail: the remote MediaStreamTrack (the processed video, the talk-back audio)
//   message  detail: a data-channel message from the executor (welcome, transcript, stats...)
//   end      detail: {kind: "lost" | "failed", code, message}, at most once

/** How long (ms) the peer connection may stay "disconnected" before the executor counts as lost. */
const DISCONNECTED_GRACE_MS = 3000;

export class ServiceSession extends EventTarget {
  /**
   * ``signaling``: a Signaling; ``paired``: its ``paired`` message; ``stream``:
   * the local MediaStream (at most one audio and one video track are sent);
   * ``options``: the service's options for ``hello``; ``iceServers``: RTCIceServer list.
   */
  constructor({ signaling, paired, stream, options, iceServers = [], welcomeTimeoutMs = 30000 }) {
    super();
    this.signaling = signaling;
    this.id = paired.session;
    this.executor = paired.executor;
    this.ticket = paired.ticket;
    this.stream = stream;
    this.options = options;
    this.welcomed = false;
    this.ended = false;
    // The page's own servers (?ice=) first, then those the signaling server hands out with
    // each session (--ice-server; TURN with time-limited credentials: PROTOCOL.md, "ICE servers").
    this.pc = new RTCPeerConnection({ iceServers: [...iceServers, ...(paired.ice_servers || [])] });
    this.channel = null;
    this._offerSent = false;
    this._outgoing = [];
    this._incoming = [];
    this._disconnectTimer = null;
    const late = `${this.executor} did not start the service within ${welcomeTimeoutMs / 1000} s`;
    this._welcomeTimer = setTimeout(() => this._end("failed", "timeout", late), welcomeTimeoutMs);
    this._onSignaling = (event) => this._signalingMessage(event.detail);
    signaling.addEventListener("message", this._onSignaling);
  }

  /** Adds the tracks and the data channel, and sends the offer; candidates trickle after it. */
  async start() {
    const pc = this.pc;
    for (const kind of ["audio", "video"]) {
      const track = this.stream.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTransceiver(track, { direction: "sendrecv", streams: [this.stream] });
    }
    this.channel = pc.createDataChannel("service", { ordered: true });
    this.channel.onopen = () => this.send({ type: "hello", ticket: this.ticket, options: this.options });
    this.channel.onmessage = (event) => this._channelMessage(event.data);
    this.channel.onclose = () => this._end("lost", "channel_closed", `the data channel to ${this.executor} closed`);
    pc.ontrack = (event) => this.dispatchEvent(new CustomEvent("track", { detail: event.track }));
    pc.onicecandidate = (event) => {
      const candidate = event.candidate ? event.candidate.toJSON() : null;
      if (this._offerSent) this._sendCandidate(candidate);
      else this._outgoing.push(candidate);
    };
    pc.onconnectionstatechange = () => this._connectionState(pc.connectionState);
    await pc.setLocalDescription(await pc.createOffer());
    if (this.ended) return;
    this.signaling.send({ type: "offer", session: this.id, sdp: pc.localDescription.sdp });
    this._offerSent = true;
    this._outgoing.splice(0).forEach((c) => this._sendCandidate(c));
  }

  /** Sends a data-channel message (dropped when the channel is not open). */
  send(message) {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify(message));
  }

  /** Asks the executor to change options while running. */
  configure(options) {
    this.send({ type: "configure", options });
  }

  /** Ends the session from this side: ``bye`` to the executor, then everything closed. No ``end`` event. */
  close(reason = "closed by the page") {
    if (!this.ended) this.signaling.send({ type: "bye", session: this.id, reason: reason.slice(0, 200) });
    this.ended = true;
    this._teardown();
  }

  _sendCandidate(candidate) {
    this.signaling.send({ type: "candidate", session: this.id, candidate });
  }

  async _signalingMessage(message) {
    if (message.session !== this.id || this.ended) return;
    const pc = this.pc;
    try {
      if (message.type === "answer") {
        await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        for (const candidate of this._incoming.splice(0)) await this._addCandidate(candidate);
      } else if (message.type === "candidate") {
        if (pc.remoteDescription) await this._addCandidate(message.candidate);
        else this._incoming.push(message.candidate);
      } else if (message.type === "bye") {
        this._end("lost", "bye", message.reason || `${this.executor} ended the session`, true);
      } else if (message.type === "error") {
        // unknown_session: the server no longer holds it (its executor went): lost, not broken.
        this._end(message.code === "unknown_session" ? "lost" : "failed", message.code, message.message, true);
      }
    } catch (error) {
      this._end("failed", "webrtc", `the executor's ${message.type} could not be applied: ${error.message}`);
    }
  }

  async _addCandidate(candidate) {
    // null is the end of the executor's candidates; an empty candidate says the same to the browser.
    await this.pc.addIceCandidate(candidate || undefined);
  }

  _channelMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      console.warn("service: ignoring a message that is not JSON", text);
      return;
    }
    if (message.type === "welcome") {
      this.welcomed = true;
      clearTimeout(this._welcomeTimer);
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
    // Before welcome any error ends the session (bad options in hello, a refused ticket).
    const fatal = !this.welcomed || message.code === "service_failed" || message.code === "unauthorized";
    if (message.type === "error" && fatal) {
      this._end("failed", message.code, message.message);
    }
  }

  _connectionState(state) {
    clearTimeout(this._disconnectTimer);
    if (state === "failed") {
      const why = this.welcomed
        ? `the connection to ${this.executor} failed`
        : `no media connection could be made to ${this.executor} `
          + "(a firewall or NAT between you? the server's operator can offer a TURN server with "
          + "--ice-server turn:HOST:PORT?transport=tcp --turn-secret, or try ?ice=stun:HOST:PORT)";
      this._end("lost", "ice_failed", why);
    } else if (state === "disconnected") {
      const silent = `no packets from ${this.executor} for ${DISCONNECTED_GRACE_MS / 1000} s`;
      this._disconnectTimer = setTimeout(() => this._end("lost", "disconnected", silent), DISCONNECTED_GRACE_MS);
    }
  }

  _end(kind, code, message, byeReceived = false) {
    if (this.ended) return;
    // Before welcome the session never ran: it could not start, rather than was lost.
    if (!this.welcomed) kind = "failed";
    // The signaling server may still hold the session (a frozen executor): free its slot.
    if (!byeReceived) this.signaling.send({ type: "bye", session: this.id, reason: message.slice(0, 200) });
    this.ended = true;
    this._teardown();
    this.dispatchEvent(new CustomEvent("end", { detail: { kind, code, message } }));
  }

  _teardown() {
    clearTimeout(this._welcomeTimer);
    clearTimeout(this._disconnectTimer);
    this.signaling.removeEventListener("message", this._onSignaling);
    if (this.channel) {
      this.channel.onclose = null;
      this.channel.onmessage = null;
      this.channel.close();
    }
    this.pc.ontrack = this.pc.onicecandidate = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}
