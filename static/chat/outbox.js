// Messages typed before they can go out: while the socket connects or reconnects, or while an
// earlier queued message's reply is still being written.
//
// Each message is shown at once, marked "sending…", and sent when the socket is open and no
// reply is in flight: in the order typed, each exactly once (it leaves the queue as it is
// handed to the socket). A message still waiting after `boundMs` is marked "Not sent" with a
// Retry button, and so is every message queued behind it (sending those first would break the
// order); its text stays on screen. Retry puts it back at the end of the queue.

export class Outbox {
  /**
   * canSend(): whether a message may go now (socket open, no reply in flight);
   * send(entry): hand it over (ReplyStream.begin); onFailed(entry): it was marked not sent.
   */
  constructor({ canSend, send, onFailed = () => {}, boundMs = 20000 }) {
    Object.assign(this, { canSend, send, onFailed, boundMs });
    this.queue = [];
  }

  get size() {
    return this.queue.length;
  }

  /** Queue `entry` ({ content, sessionId, element, ... }) and send what can go. */
  add(entry) {
    entry.timer = setTimeout(() => this.expire(entry), this.boundMs);
    this.queue.push(entry);
    markSending(entry.element);
    this.pump();
  }

  /** Send the next message if it can go now (call when the socket opens or a reply settles). */
  pump() {
    if (this.queue.length === 0 || !this.canSend()) return;
    const entry = this.queue.shift();
    clearTimeout(entry.timer);
    markSent(entry.element);
    this.send(entry);
  }

  expire(entry) {
    const at = this.queue.indexOf(entry);
    if (at === -1) return;
    const late = this.queue.splice(at);
    for (const waiting of late) {
      clearTimeout(waiting.timer);
      markNotSent(waiting.element, () => this.add(waiting));
      this.onFailed(waiting);
    }
  }

  /** Forget queued messages of a conversation that no longer exists (they stay marked not sent). */
  dropSession(sessionId) {
    const gone = this.queue.filter((entry) => entry.sessionId === sessionId);
    this.queue = this.queue.filter((entry) => entry.sessionId !== sessionId);
    for (const entry of gone) {
      clearTimeout(entry.timer);
      markNotSent(entry.element, null);
    }
  }
}

function statusLine(element) {
  let line = element.querySelector(".send-state");
  if (!line) {
    line = document.createElement("p");
    line.className = "send-state";
    element.append(line);
  }
  return line;
}

export function markSending(element) {
  if (!element) return;
  element.dataset.sendState = "sending";
  const line = statusLine(element);
  line.replaceChildren(document.createTextNode("Sending…"));
}

export function markSent(element) {
  if (!element) return;
  element.dataset.sendState = "sent";
  element.querySelector(".send-state")?.remove();
}

/** Show `element` as not sent; `onRetry` (when given) sends it again. */
export function markNotSent(element, onRetry) {
  if (!element) return;
  element.dataset.sendState = "failed";
  const line = statusLine(element);
  line.setAttribute("role", "alert");
  line.replaceChildren(document.createTextNode("Not sent: the connection was not ready. "));
  if (onRetry) {
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "button small retry-send";
    retry.textContent = "Retry sending";
    retry.addEventListener("click", () => {
      line.removeAttribute("role");
      onRetry();
    });
    line.append(retry);
  }
}
