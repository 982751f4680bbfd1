// Resuming a reply after the socket dropped (the server keeps every numbered frame of a reply
// for a while: chat/replay.py).
//
// Every frame of a reply carries its number `n`. When the connection drops after a reply has
// started, the reply stays on screen, in flight; once the socket is open again the page sends
// {"type": "resume", "request_id": …, "after": <last n received>} and the server sends what was
// missed, then the rest as it comes, then `end`. A frame already received (n not above the last
// one) is dropped. The reply is shown as cut off, with its Retry button, when it cannot be
// resumed: the server no longer has it (not_found, resume_unavailable, …), it was stopped while
// nobody followed it (an `end` marked cancelled that this page did not ask for), or the
// connection stays down longer than GIVE_UP_MS.

const GIVE_UP_MS = 120000;
const RESUME_FAILURES = new Set(["not_found", "resume_unavailable", "resume_interrupted", "invalid_resume", "busy"]);

export class ReplyResumer {
  /** socket: the ChatSocket; replies: the ReplyStream whose reply in flight is resumed. */
  constructor({ socket, replies, giveUpMs = GIVE_UP_MS }) {
    Object.assign(this, { socket, replies, giveUpMs });
    this.requestId = null; // the reply whose frames are counted
    this.lastN = 0;
    this.held = null; // the reply waiting for the connection to come back
    this.resumed = null; // the reply a resume was sent for
    this.giveUpTimer = null;
  }

  /** A frame from the socket, before the page handles it: the frame to handle, or null (seen already). */
  accept(frame) {
    const reply = this.replies.current;
    if (this.resumed && reply === this.resumed && frame.type === "error" && RESUME_FAILURES.has(frame.code)) {
      this.resumed = null;
      return { type: "error", code: "connection_lost", message: "", request_id: reply.requestId };
    }
    if (typeof frame.n !== "number") return frame;
    if (frame.type === "start") {
      this.requestId = frame.request_id;
      this.lastN = frame.n;
      return frame;
    }
    if (!reply || reply.requestId !== this.requestId) return frame;
    if (frame.n <= this.lastN) return null; // received before the connection dropped
    this.lastN = frame.n;
    if (frame.type === "end" || frame.type === "error") {
      const resumed = this.resumed === reply;
      this.resumed = null;
      if (resumed && frame.type === "end" && frame.done_reason === "cancelled" && !reply.cancelling) {
        // Stopped on the server while nobody followed it: what came is kept, and Retry is offered.
        return { type: "error", code: "connection_lost", message: "", request_id: reply.requestId };
      }
    }
    return frame;
  }

  /** The connection dropped: true if the reply in flight waits to be resumed (else it is lost). */
  holdReply() {
    const reply = this.replies.current;
    if (!reply || !reply.requestId || reply.requestId !== this.requestId || reply.cancelling) return false;
    if (this.held !== reply) {
      this.held = reply;
      reply.message.showNotice("Connection lost: the reply will go on once it is back.");
      clearTimeout(this.giveUpTimer);
      this.giveUpTimer = setTimeout(() => this.giveUp(reply), this.giveUpMs);
    }
    return true;
  }

  /** The socket is open again: resume the reply held, if it is still the one in flight. */
  connected() {
    const reply = this.held;
    this.held = null;
    clearTimeout(this.giveUpTimer);
    if (!reply || this.replies.current !== reply) return;
    reply.message.notice.hidden = true;
    this.resumed = reply;
    if (!this.socket.send({ type: "resume", request_id: reply.requestId, after: this.lastN })) this.giveUp(reply);
  }

  giveUp(reply) {
    if (this.held === reply) this.held = null;
    if (this.replies.current === reply) this.replies.connectionLost();
  }
}
