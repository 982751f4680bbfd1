// The reply being written: sends the message, routes the socket's frames to it, stops it,
// retries it, and hands each sentence's audio to the voice player.
//
// One reply streams at a time (the server answers "busy" otherwise). A reply stays in flight
// until the server's end or error frame for it arrives, even after Stop or a change of
// conversation, so that late frames are never mistaken for the next reply.

import { AssistantMessage } from "./thread.js";

const CANCEL_GRACE_MS = 5000;

export class ReplyStream {
  /**
   * thread: the <ol> replies are added to; voiceOn(): whether to ask for audio;
   * shownSession(): the conversation on screen; onBusy(busy), onSettled(reply),
   * announce(text), showNotice(text): the page's reactions.
   */
  constructor({ socket, player, thread, voiceOn, shownSession, onBusy, onSettled, announce, showNotice, onRetry }) {
    Object.assign(this, { socket, player, thread, voiceOn, shownSession, onBusy, onSettled, announce, showNotice });
    // Retry through the page (onRetry(reply)): it takes the failed exchange back on the server first.
    this.onRetry = onRetry || null;
    this.current = null;
    this.pendingAudio = null;
    this.spoken = null; // { requestId, message }: the reply whose speech may go on after its end
  }

  /** Speech of a finished reply is still coming or playing. */
  get speaking() {
    return this.spoken !== null || this.player.speaking;
  }

  /** Stop, Esc or Voice off while EVA speaks after the text: silence now, tell the server. */
  stopSpeech() {
    this.player.stop();
    if (this.spoken) {
      this.spoken = null;
      this.socket.send({ type: "cancel" });
    }
  }

  get inFlight() {
    return this.current !== null;
  }

  begin({ content, sessionId, firstMessage = null, userElement = null }) {
    const message = new AssistantMessage();
    // A queued message of a conversation left meanwhile still goes; its reply is shown there.
    if (sessionId === this.shownSession()) this.thread.append(message.element);
    const reply = { message, content, firstMessage, sessionId, userElement, cancelTimer: null, voice: this.voiceOn() };
    this.current = reply;
    this.pendingAudio = null;
    this.player.stop(); // a new message interrupts speech (the server stops it too: barge-in)
    this.spoken = null;
    this.onBusy(true);
    const sent = this.socket.send({ type: "message", content, session_id: sessionId, voice: this.voiceOn() });
    if (!sent) this.fail(reply, { code: "connection_lost", message: "" });
  }

  cancel() {
    const reply = this.current;
    if (!reply || reply.cancelling) return;
    reply.cancelling = true;
    this.player.stop();
    const endLocally = () => {
      if (this.current === reply) this.finish(reply, { ...reply.started, done_reason: "cancelled" });
    };
    if (this.socket.send({ type: "cancel" })) reply.cancelTimer = setTimeout(endLocally, CANCEL_GRACE_MS);
    else endLocally();
  }

  /** The socket dropped: the reply in flight cannot finish any more. */
  connectionLost() {
    if (this.current) this.fail(this.current, { code: "connection_lost", message: "" });
  }

  handleFrame(frame) {
    const reply = this.current;
    switch (frame.type) {
      case "start":
        if (!reply) return;
        reply.requestId = frame.request_id;
        if (reply.userElement && frame.request_id) reply.userElement.dataset.requestId = frame.request_id;
        reply.started = { backend: frame.backend, model: frame.model };
        reply.message.start(frame);
        break;
      case "token":
        if (reply) reply.message.appendToken(frame.content);
        break;
      case "audio": {
        // Speech goes on after the text's end: its frames name the reply they belong to.
        let owner = null;
        if (this.isFor(reply, frame)) owner = reply;
        else if (this.spoken && frame.request_id === this.spoken.requestId) owner = this.spoken;
        this.pendingAudio = owner ? { frame, message: owner.message } : null;
        break;
      }
      case "speech_end":
      case "speech_stopped":
        if (this.spoken && this.spoken.requestId === frame.request_id) this.spoken = null;
        if (frame.type === "speech_stopped") this.player.stop();
        this.onBusy(Boolean(this.current));
        break;
      case "end":
        if (this.isFor(reply, frame)) this.finish(reply, frame);
        break;
      case "error":
        this.handleError(reply, frame);
        break;
      default:
        break; // pong, cleared (the page's), and frame types this page does not know yet
    }
  }

  /** A binary frame: the audio announced by the last `audio` frame. */
  handleAudio(data) {
    const pending = this.pendingAudio;
    this.pendingAudio = null;
    if (!pending || !this.voiceOn()) return;
    this.player.enqueue(pending.frame.seq, data, { message: pending.message, text: pending.frame.text });
  }

  handleError(reply, frame) {
    if (frame.code === "nothing_to_cancel") return; // Stop pressed as the reply ended: nothing to say
    if (frame.code === "tts_unavailable") {
      // The text goes on; only the voice is missing.
      if (reply) reply.message.showNotice(`Voice is unavailable: ${frame.message}`);
      else this.showNotice(`Voice is unavailable: ${frame.message}`);
      return;
    }
    if (this.isFor(reply, frame)) {
      if (reply.userElement && frame.request_id) reply.userElement.dataset.requestId = frame.request_id;
      this.fail(reply, frame);
      this.announce(`Error: ${frame.message}`);
    } else {
      this.showNotice(frame.message || "The server reported an error.");
    }
  }

  isFor(reply, frame) {
    return Boolean(reply) && (!frame.request_id || !reply.requestId || frame.request_id === reply.requestId);
  }

  finish(reply, frame) {
    if (reply.voice && frame.done_reason !== "cancelled") this.spoken = { requestId: reply.requestId, message: reply.message };
    reply.message.finish(frame);
    this.settle(reply);
    this.announce(frame.done_reason === "cancelled" ? "Reply stopped." : "Reply complete.");
  }

  fail(reply, frame) {
    reply.message.fail(frame, () => this.retry(reply));
    this.settle(reply);
  }

  settle(reply) {
    clearTimeout(reply.cancelTimer);
    if (this.current === reply) this.current = null;
    this.pendingAudio = null;
    this.onBusy(false);
    this.onSettled(reply);
  }

  retry(reply) {
    if (this.current) {
      this.showNotice("Wait for the current reply to finish, or stop it, before retrying.");
      return;
    }
    if (this.onRetry && reply.userElement) {
      if (reply.sessionId === this.shownSession()) this.onRetry(reply);
      return;
    }
    if (!this.socket.isOpen) {
      this.showNotice("Not connected right now: retry once the connection is back.");
      this.socket.reconnectNow();
      return;
    }
    if (reply.sessionId !== this.shownSession()) return;
    reply.message.element.remove();
    this.begin({
      content: reply.content, sessionId: reply.sessionId, firstMessage: reply.firstMessage, userElement: reply.userElement,
    });
  }
}
