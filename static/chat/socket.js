// The /ws/chat connection: JSON frames, binary audio frames, reconnection with backoff.
//
// A drop (network, server restart) is retried after 0.5 s, 1 s, 2 s ... up to 15 s, with
// jitter so that many pages do not come back at once. Close codes 4401 (not logged in any
// more) and 4403 (foreign Origin) are final: retrying cannot help.

const FINAL_CLOSE_CODES = new Set([4401, 4403]);
const PING_EVERY_MS = 25000;

export class ChatSocket {
  constructor(path, { onFrame, onAudio, onState, minDelayMs = 500, maxDelayMs = 15000 } = {}) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${location.host}${path}`;
    this.onFrame = onFrame || (() => {});
    this.onAudio = onAudio || (() => {});
    this.onState = onState || (() => {});
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.attempt = 0;
    this.ws = null;
    this.state = "idle";
    this.retryTimer = null;
    this.pingTimer = null;
    this.stopped = false;
    window.addEventListener("online", () => this.reconnectNow());
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.setState(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.attempt = 0;
      this.setState("open");
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      if (typeof event.data === "string") {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch {
          return; // not ours to understand; the protocol only sends JSON text frames
        }
        this.onFrame(frame);
      } else {
        this.onAudio(event.data);
      }
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      clearInterval(this.pingTimer);
      this.ws = null;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.stopped = true;
        this.setState(event.code === 4401 ? "unauthenticated" : "forbidden", event.code);
        return;
      }
      if (this.stopped) {
        this.setState("closed", event.code);
        return;
      }
      this.scheduleRetry(event.code);
    });
  }

  scheduleRetry(code) {
    const base = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this.attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this.attempt += 1;
    this.setState("waiting", code, delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Try again at once (the browser came back online, or the person asked). */
  reconnectNow() {
    if (this.stopped || this.isOpen || this.state === "connecting" || this.state === "reconnecting") return;
    this.connect();
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000);
  }

  setState(state, code = null, delayMs = null) {
    this.state = state;
    this.onState({ state, code, delayMs, attempt: this.attempt });
  }
}
