// The list of conversations on the side: open, new, rename, delete (through /api/v1/sessions).

import { api } from "./api.js";

export const UNTITLED = "New conversation";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A new conversation's title: its first message on one line, at most 60 characters (as the server's). */
export function titleFrom(content) {
  const line = content.replace(/\s+/g, " ").trim();
  return line.length <= 60 ? line : `${line.slice(0, 59)}…`;
}

export function titleOf(session) {
  return (session && session.title) || UNTITLED;
}

export class ConversationList {
  constructor(listElement, emptyElement, { onOpen, onDeleted, onError }) {
    this.list = listElement;
    this.empty = emptyElement;
    this.onOpen = onOpen;
    this.onDeleted = onDeleted;
    this.onError = onError;
    this.sessions = [];
    this.currentId = null;
    this.results = null; // a search's matches (shown instead of the whole list), or null
  }

  /** Search titles and messages on the server; `more` appends the next page. */
  async search(query, { more = false, pageSize = 20 } = {}) {
    const offset = more && this.results ? this.results.length : 0;
    const params = new URLSearchParams({ q: query, limit: String(pageSize), offset: String(offset) });
    const page = await api(`/search/sessions?${params}`);
    this.results = more && this.results ? [...this.results, ...page.items] : page.items;
    this.resultCount = page.count;
    this.render();
    return { shown: this.results.length, count: page.count };
  }

  clearSearch() {
    this.results = null;
    this.render();
  }

  async refresh() {
    this.sessions = await api("/sessions");
    this.render();
    return this.sessions;
  }

  find(sessionId) {
    return this.sessions.find((session) => session.session_id === sessionId) || null;
  }

  async create({ title = "" } = {}) {
    const session = await api("/sessions", { method: "POST", body: { title } });
    this.sessions = [session, ...this.sessions.filter((s) => s.session_id !== session.session_id)];
    this.render();
    return session;
  }

  async rename(sessionId, title) {
    const session = await api(`/sessions/${encodeURIComponent(sessionId)}`, { method: "PATCH", body: { title } });
    this.sessions = this.sessions.map((s) => (s.session_id === sessionId ? session : s));
    this.render();
    return session;
  }

  async remove(sessionId) {
    await api(`/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
    this.sessions = this.sessions.filter((s) => s.session_id !== sessionId);
    if (this.results) this.results = this.results.filter((s) => s.session_id !== sessionId);
    this.render();
    this.onDeleted(sessionId);
  }

  setCurrent(sessionId) {
    this.currentId = sessionId;
    for (const item of this.list.children) {
      const open = item.querySelector(".conversation-open");
      if (item.dataset.sessionId === sessionId) open.setAttribute("aria-current", "true");
      else open.removeAttribute("aria-current");
    }
  }

  render() {
    const focusedId = document.activeElement && document.activeElement.closest(".conversation")?.dataset.sessionId;
    const focusedClass = document.activeElement && document.activeElement.className;
    const shown = this.results || this.sessions;
    const renaming = this.renaming;
    const hadFocus = renaming && renaming.form.contains(document.activeElement);
    this.list.replaceChildren(...shown.map((session) => this.item(session)));
    if (renaming) {
      // A refresh (a reply just ended) must not throw away a rename being typed.
      const item = this.list.querySelector(`[data-session-id="${CSS.escape(renaming.sessionId)}"]`);
      if (item) {
        item.replaceChildren(renaming.form);
        if (hadFocus) renaming.form.querySelector("input").focus();
      } else {
        this.renaming = null;
      }
    }
    this.empty.hidden = this.results !== null || this.sessions.length > 0;
    this.setCurrent(this.currentId);
    // Re-rendering must not throw keyboard focus back to the top of the page.
    if (focusedId) {
      const item = this.list.querySelector(`[data-session-id="${CSS.escape(focusedId)}"]`);
      const target = item && (item.querySelector(`.${String(focusedClass).split(" ")[0]}`) || item.querySelector("button"));
      if (target) target.focus();
    }
  }

  item(session) {
    const title = titleOf(session);
    const item = el("li", "conversation");
    item.dataset.sessionId = session.session_id;
    const open = el("button", "conversation-open");
    open.type = "button";
    open.append(el("span", "conversation-title", title));
    if (session.message_count) {
      const count = el("span", "conversation-count", `${session.message_count}`);
      count.setAttribute("aria-label", `${session.message_count} messages`);
      open.append(count);
    }
    if (session.excerpt) open.append(el("span", "conversation-excerpt", session.excerpt));
    open.addEventListener("click", () => this.onOpen(session.session_id));
    const rename = el("button", "icon-button conversation-rename");
    rename.type = "button";
    rename.setAttribute("aria-label", `Rename “${title}”`);
    rename.title = "Rename";
    rename.append(el("span", "icon icon-edit"));
    rename.addEventListener("click", () => this.startRename(item, session));
    const remove = el("button", "icon-button conversation-delete");
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete “${title}”`);
    remove.title = "Delete";
    remove.append(el("span", "icon icon-delete"));
    remove.addEventListener("click", async () => {
      if (!window.confirm(`Delete “${title}” and all its messages?`)) return;
      try {
        await this.remove(session.session_id);
      } catch (error) {
        this.onError(error);
      }
    });
    item.append(open, rename, remove);
    return item;
  }

  startRename(item, session) {
    const form = el("form", "conversation-rename-form");
    const label = el("label", "visually-hidden", "New title");
    const input = el("input");
    input.id = `rename-${session.session_id}`;
    label.htmlFor = input.id;
    input.type = "text";
    input.maxLength = 200;
    input.value = session.title || "";
    input.placeholder = UNTITLED;
    const save = el("button", "button small", "Save");
    save.type = "submit";
    const cancel = el("button", "button small secondary", "Cancel");
    cancel.type = "button";
    form.append(label, input, save, cancel);
    const restore = () => {
      this.renaming = null;
      const host = form.parentElement;
      form.replaceWith(...saved);
      host?.querySelector(".conversation-rename")?.focus();
    };
    const saved = [...item.childNodes];
    item.replaceChildren(form);
    this.renaming = { sessionId: session.session_id, form };
    input.focus();
    input.select();
    cancel.addEventListener("click", restore);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        restore();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const title = input.value.trim();
      try {
        this.renaming = null;
        await this.rename(session.session_id, title);
        this.list.querySelector(`[data-session-id="${CSS.escape(session.session_id)}"] .conversation-open`)?.focus();
      } catch (error) {
        this.onError(error);
        restore();
      }
    });
  }
}
