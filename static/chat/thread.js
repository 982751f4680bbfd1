// The open conversation's messages: history from the API, and the reply being streamed.

import { actionsRow, addCodeCopyButtons, copyMessageButton } from "./actions.js";
import { renderMarkdown } from "./markdown.js";

// How the thread speaks to screen readers (the page sets it: chat.js's announce).
export const threadHooks = { announce: () => {} };
const announce = (text) => threadHooks.announce(text);

const ERROR_TEXT = {
  no_backend: "No model is reachable right now.",
  upstream_error: "The model stopped with an error.",
  rate_limited: "You are sending messages too fast.",
  busy: "A reply is still being written.",
  message_too_long: "That message is too long.",
  connection_lost: "The connection dropped before the reply finished.",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "";
  const value = Number(ms);
  return value >= 1000 ? `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)} s` : `${Math.round(value)} ms`;
}

function timeLabel(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return null;
  const time = el("time", "meta-time", date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  time.dateTime = date.toISOString();
  time.title = date.toLocaleString();
  return time;
}

/** A message the person wrote: plain text, never Markdown. */
export function userMessage(content, { createdAt } = {}) {
  const item = el("li", "message message-user");
  item.dataset.role = "user";
  const heading = el("h2", "visually-hidden", "You said:");
  const bubble = el("div", "bubble");
  bubble.append(el("p", "message-text", content));
  item.append(heading, bubble);
  const time = timeLabel(createdAt);
  if (time) {
    const meta = el("p", "message-meta");
    meta.append(time);
    item.append(meta);
  }
  item.dataset.content = content;
  actionsRow(item).append(copyMessageButton(() => content, announce));
  return item;
}

/** A reply from the model; streams tokens in, then shows who answered and how fast. */
export class AssistantMessage {
  constructor({ content = "", status = "streaming", backend = "", model = "", createdAt = null } = {}) {
    this.text = content;
    this.renderPending = false;
    this.played = [];
    this.element = el("li", "message message-assistant");
    this.element.dataset.role = "assistant";
    this.element.append(el("h2", "visually-hidden", "EVA replied:"));
    this.bubble = el("div", "bubble");
    this.body = el("div", "message-body markdown");
    this.typing = el("span", "typing");
    this.typing.append(el("span", "visually-hidden", "EVA is writing"));
    for (let i = 0; i < 3; i += 1) this.typing.append(el("span", "dot"));
    this.notice = el("p", "message-notice");
    this.notice.hidden = true;
    this.error = el("div", "message-error");
    this.error.setAttribute("role", "alert");
    this.error.hidden = true;
    this.bubble.append(this.body, this.typing, this.notice, this.error);
    this.meta = el("p", "message-meta");
    this.element.append(this.bubble, this.meta);
    actionsRow(this.element).append(copyMessageButton(() => this.text, announce));
    this.setStatus(status);
    if (backend || model) this.setMeta({ backend, model, createdAt });
    else if (createdAt) this.setMeta({ createdAt });
    this.render();
  }

  setStatus(status) {
    this.status = status;
    this.element.dataset.status = status;
    const streaming = status === "streaming";
    // Screen readers hear the reply once it is complete rather than every re-render.
    this.body.setAttribute("aria-busy", streaming ? "true" : "false");
    this.typing.hidden = !(streaming && this.text === "");
  }

  start({ backend, model, request_id: requestId }) {
    this.requestId = requestId || null;
    if (requestId) this.element.dataset.requestId = requestId;
    this.setMeta({ backend, model });
  }

  appendToken(content) {
    if (typeof content !== "string" || content === "") return;
    this.text += content;
    this.typing.hidden = true;
    if (!this.renderPending) {
      this.renderPending = true;
      requestAnimationFrame(() => {
        this.renderPending = false;
        this.render();
      });
    }
  }

  render() {
    this.body.replaceChildren(renderMarkdown(this.text));
    addCodeCopyButtons(this.body, announce);
  }

  finish({ backend, model, ttft_ms: ttftMs, total_ms: totalMs, tokens, done_reason: doneReason }) {
    this.render();
    const cancelled = doneReason === "cancelled";
    this.setStatus(cancelled ? "cancelled" : "complete");
    this.setMeta({ backend, model, ttftMs, totalMs, tokens, badge: cancelled ? "Stopped" : null });
  }

  /** Show an error in place; `onRetry` (if given) re-sends the message. */
  fail({ code, message }, onRetry) {
    this.render();
    this.setStatus("error");
    this.element.dataset.errorCode = code || "error";
    this.error.replaceChildren();
    const text = el("p", "error-text");
    const summary = ERROR_TEXT[code];
    text.textContent = summary && message && summary !== message ? `${summary} ${message}` : message || summary || "Something went wrong.";
    this.error.append(text);
    if (onRetry) {
      const retry = el("button", "button retry-button", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => onRetry());
      this.error.append(retry);
    }
    this.error.hidden = false;
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = false;
  }

  audioPlayed(seq) {
    this.played.push(seq);
    this.element.dataset.audioPlayed = this.played.join(",");
    this.element.classList.add("speaking");
  }

  setMeta({ backend, model, ttftMs, totalMs, tokens, badge, createdAt }) {
    this.meta.replaceChildren();
    const parts = [];
    const who = [backend, model].filter(Boolean).join(" · ");
    if (who) parts.push(el("span", "meta-backend", who));
    if (ttftMs !== undefined && ttftMs !== null) {
      const ttft = el("span", "meta-ttft", `first token ${formatMs(ttftMs)}`);
      ttft.title = "Time to first token";
      parts.push(ttft);
    }
    if (totalMs !== undefined && totalMs !== null) {
      parts.push(el("span", "meta-total", `total ${formatMs(totalMs)}${tokens ? `, ${tokens} tokens` : ""}`));
    }
    const time = timeLabel(createdAt);
    if (time) parts.push(time);
    if (badge) parts.push(el("span", "badge", badge));
    this.meta.append(...parts);
  }
}

/** How a stored reply ended, as the live page labelled it: Stopped, Incomplete, Failed... */
export function replyBadge({ status, done_reason: doneReason }) {
  if (doneReason === "cancelled") return "Stopped";
  if (doneReason === "length") return "Cut at the length limit";
  if (status === "partial") return "Incomplete";
  if (status === "error") return "Failed";
  return null;
}

/** A stored message from GET /sessions/{id}/messages. */
export function historyMessage(item) {
  if (item.role === "user") {
    const element = userMessage(item.content, { createdAt: item.created_at });
    if (item.request_id) element.dataset.requestId = item.request_id;
    return element;
  }
  const message = new AssistantMessage({
    content: item.content,
    status: "complete",
    backend: item.backend,
    model: item.model,
    createdAt: item.created_at,
  });
  if (item.request_id) message.element.dataset.requestId = item.request_id;
  const badge = replyBadge(item);
  if (item.done_reason === "cancelled") message.setStatus("cancelled");
  else if (item.status === "partial" || item.status === "error") message.setStatus(item.status);
  if (item.status === "error" && item.done_reason) message.element.dataset.errorCode = item.done_reason;
  // Timings as they were measured, whatever the ending (a stopped reply keeps its first-token time).
  message.setMeta({
    backend: item.backend, model: item.model, createdAt: item.created_at, ttftMs: item.ttft_ms,
    totalMs: item.total_ms, badge,
  });
  return message.element;
}
