// The chat page: wires the conversation list, the thread, the composer, the socket and voice.

import { startEditing, updateLastActions } from "./actions.js";
import { api } from "./api.js";
import { ConversationList, UNTITLED, titleFrom, titleOf } from "./conversations.js";
import { Outbox, markNotSent } from "./outbox.js";
import { ChatSocket } from "./socket.js";
import { ReplyStream } from "./replies.js";
import { ReplyResumer } from "./resume.js";
import { historyMessage, threadHooks, userMessage } from "./thread.js";
import { VoicePlayer } from "./voice.js";

const PAGE_SIZE = 50;
const config = JSON.parse(document.getElementById("chat-config").textContent);
const byId = (id) => document.getElementById(id);
const ui = {
  layout: byId("chat-layout"),
  sidebar: byId("conversations"),
  toggleSidebar: byId("toggle-sidebar"),
  newButton: byId("new-conversation"),
  title: byId("conversation-title"),
  status: byId("connection-status"),
  statusText: byId("connection-text"),
  reconnect: byId("reconnect-now"),
  scroller: byId("messages"),
  messages: byId("message-list"),
  emptyThread: byId("empty-thread"),
  loadEarlier: byId("load-earlier"),
  notice: byId("page-notice"),
  noticeText: byId("page-notice-text"),
  form: byId("composer"),
  input: byId("message-input"),
  counter: byId("char-count"),
  send: byId("send-button"),
  stop: byId("stop-button"),
  speaking: byId("speaking-indicator"),
  voice: byId("voice-toggle"),
  announcer: byId("announcer"),
  search: byId("search-input"),
  searchForm: byId("conversation-search"),
  searchStatus: byId("search-status"),
  searchMore: byId("search-more"),
  exportLinks: byId("export-links"),
  exportMarkdown: byId("export-markdown"),
  exportJson: byId("export-json"),
};

const state = { sessionId: null, oldestOffset: 0, loadToken: 0, creating: null };

const conversations = new ConversationList(byId("conversation-list"), byId("conversation-empty"), {
  onOpen: (sessionId) => openConversation(sessionId, { focusInput: true }),
  onDeleted: (sessionId) => {
    if (sessionId === state.sessionId) startDraft();
    announce("Conversation deleted.");
  },
  onError: (error) => showNotice(error.message),
});

const player = new VoicePlayer({
  onPlay: (seq, { message }) => message && message.audioPlayed(seq),
  onError: (seq, error) => showNotice(`Could not play the audio of sentence ${seq + 1}: ${error.message}`),
  onSpeaking: () => setBusy(replies.inFlight),
});

const socket = new ChatSocket(config.wsPath, {
  onFrame: (frame) => handleFrame(frame),
  onAudio: (data) => replies.handleAudio(data),
  onState: (change) => handleSocketState(change),
});

const replies = new ReplyStream({
  socket,
  player,
  thread: ui.messages,
  voiceOn: () => ui.voice.checked,
  shownSession: () => state.sessionId,
  onBusy: (busy) => setBusy(busy),
  onSettled: (reply) => {
    afterReply(reply.sessionId, reply.firstMessage);
    outbox.pump();
    updateActions();
  },
  announce: (text) => announce(text),
  showNotice: (text) => showNotice(text),
  // Retry a failed reply as a regenerate: the failed exchange is kept on the server, superseded,
  // and the message goes again (queued if the socket is not open).
  onRetry: (reply) => takeBack(reply.userElement, reply.message.element, null),
});

const outbox = new Outbox({
  canSend: () => socket.isOpen && !replies.inFlight,
  send: ({ content, sessionId, firstMessage, element }) =>
    replies.begin({ content, sessionId, firstMessage, userElement: element }),
  onFailed: () => announce("A message could not be sent."),
  boundMs: config.sendBoundMs || 20000,
});

const resumer = new ReplyResumer({ socket, replies });

// --- small page helpers -----------------------------------------------------------------

threadHooks.announce = (text) => announce(text);

function announce(text) {
  ui.announcer.textContent = "";
  setTimeout(() => (ui.announcer.textContent = text), 30);
}

function showNotice(text) {
  ui.noticeText.textContent = text;
  ui.notice.hidden = false;
}

function hideNotice() {
  ui.notice.hidden = true;
}

function nearBottom() {
  const { scrollTop, scrollHeight, clientHeight } = ui.scroller;
  return scrollHeight - scrollTop - clientHeight < 80;
}

function scrollToBottom() {
  ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

function setBusy(busy) {
  const wasBusy = ui.layout.dataset.busy === "true";
  // While EVA speaks after the text, Stop stays available and a new message may be sent.
  const speaking = !busy && replies.speaking;
  ui.layout.dataset.speaking = speaking ? "true" : "false";
  ui.speaking.hidden = !speaking;
  ui.send.hidden = busy;
  ui.stop.hidden = !busy && !speaking;
  ui.stop.disabled = false;
  ui.layout.dataset.busy = busy ? "true" : "false";
  updateActions();
  // A clicked Stop button is now hidden: keep keyboard focus in the message box, not lost on <body>.
  const lost = document.activeElement === document.body || ui.stop.contains(document.activeElement);
  if (wasBusy && !busy && lost) ui.input.focus();
}

function stopReply() {
  if (!replies.inFlight) {
    replies.stopSpeech(); // only speech is left: silence it now
    setBusy(false);
    return;
  }
  ui.stop.disabled = true;
  replies.cancel();
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
  const length = ui.input.value.length;
  const left = config.maxMessageChars - length;
  ui.counter.hidden = left > Math.min(500, config.maxMessageChars / 5);
  ui.counter.textContent = left >= 0 ? `${left} characters left` : `${-left} characters too many`;
  ui.counter.classList.toggle("over", left < 0);
}

const narrowScreen = window.matchMedia("(max-width: 760px)");

function setSidebarOpen(open, { focus = false } = {}) {
  ui.sidebar.dataset.open = open ? "true" : "false";
  ui.toggleSidebar.setAttribute("aria-expanded", open ? "true" : "false");
  if (open && focus) {
    // A drawer that opens takes the focus, on the open conversation when there is one.
    (ui.sidebar.querySelector(".conversation-open[aria-current=true]") || ui.newButton).focus();
  }
}

function showExportLinks(sessionId) {
  ui.exportLinks.hidden = !sessionId;
  if (!sessionId) return;
  const base = `/api/v1/sessions/${encodeURIComponent(sessionId)}/export`;
  ui.exportMarkdown.href = `${base}?format=markdown`;
  ui.exportJson.href = `${base}?format=json`;
  ui.exportMarkdown.setAttribute("aria-label", "Export this conversation as Markdown");
  ui.exportJson.setAttribute("aria-label", "Export this conversation as JSON");
}

// --- search (server-side: titles and messages) ------------------------------------------------

const SEARCH_DELAY_MS = 250;
let searchTimer = null;
let searchToken = 0;

async function runSearch({ more = false } = {}) {
  const query = ui.search.value.trim();
  const token = ++searchToken;
  if (!query) {
    conversations.clearSearch();
    ui.searchStatus.textContent = "";
    ui.searchMore.hidden = true;
    return;
  }
  try {
    const { shown, count } = await conversations.search(query, { more });
    if (token !== searchToken) return;
    ui.searchStatus.textContent = count === 0 ? "No conversation matches." : count === 1 ? "1 conversation matches." : `${count} conversations match.`;
    ui.searchMore.hidden = shown >= count;
  } catch (error) {
    if (token === searchToken) ui.searchStatus.textContent = `Search failed: ${error.message}`;
  }
}

function rememberConversation(sessionId) {
  showExportLinks(sessionId);
  const url = new URL(location.href);
  if (sessionId) url.searchParams.set("c", sessionId);
  else url.searchParams.delete("c");
  history.replaceState(null, "", url);
}

// --- conversations ----------------------------------------------------------------------

function leaveReply() {
  // The reply in flight belongs to the conversation being left: stop it (its end still comes).
  replies.cancel();
  player.stop();
}

function startDraft() {
  leaveReply();
  state.sessionId = null;
  state.loadToken += 1;
  conversations.setCurrent(null);
  rememberConversation(null);
  ui.title.textContent = UNTITLED;
  ui.messages.replaceChildren();
  ui.loadEarlier.hidden = true;
  ui.emptyThread.hidden = false;
  document.title = "EVA";
}

async function openConversation(sessionId, { focusInput = false } = {}) {
  if (sessionId !== state.sessionId) leaveReply();
  state.sessionId = sessionId;
  const token = ++state.loadToken;
  conversations.setCurrent(sessionId);
  rememberConversation(sessionId);
  const title = titleOf(conversations.find(sessionId));
  ui.title.textContent = title;
  document.title = `${title} · EVA`;
  ui.messages.replaceChildren();
  ui.emptyThread.hidden = true;
  ui.loadEarlier.hidden = true;
  ui.layout.dataset.loading = "true";
  setSidebarOpen(false);
  if (focusInput) ui.input.focus();
  const path = `/sessions/${encodeURIComponent(sessionId)}/messages`;
  try {
    let page = await api(`${path}?limit=${PAGE_SIZE}&offset=0`);
    if (page.count > PAGE_SIZE) page = await api(`${path}?limit=${PAGE_SIZE}&offset=${page.count - PAGE_SIZE}`);
    if (token !== state.loadToken) return;
    state.oldestOffset = Math.max(0, page.count - PAGE_SIZE);
    ui.messages.replaceChildren(...page.items.map(historyMessage));
    ui.emptyThread.hidden = page.items.length > 0;
    ui.loadEarlier.hidden = state.oldestOffset === 0;
    updateActions();
    scrollToBottom();
  } catch (error) {
    if (token !== state.loadToken) return;
    if (error.status === 404) {
      await conversations.refresh().catch(() => {});
      startDraft();
      showNotice("That conversation no longer exists.");
    } else {
      showNotice(`Could not load the messages: ${error.message}`);
    }
  } finally {
    if (token === state.loadToken) ui.layout.dataset.loading = "false";
  }
}

async function loadEarlier() {
  const sessionId = state.sessionId;
  const offset = Math.max(0, state.oldestOffset - PAGE_SIZE);
  const limit = state.oldestOffset - offset;
  try {
    const page = await api(`/sessions/${encodeURIComponent(sessionId)}/messages?limit=${limit}&offset=${offset}`);
    if (sessionId !== state.sessionId) return;
    const before = ui.scroller.scrollHeight;
    ui.messages.prepend(...page.items.map(historyMessage));
    ui.scroller.scrollTop += ui.scroller.scrollHeight - before;
    state.oldestOffset = offset;
    ui.loadEarlier.hidden = offset === 0;
  } catch (error) {
    showNotice(`Could not load earlier messages: ${error.message}`);
  }
}

async function afterReply(sessionId, firstMessage) {
  try {
    await conversations.refresh();
    const session = conversations.find(sessionId);
    if (session && !session.title && firstMessage) {
      const title = firstMessage.replace(/\s+/g, " ").trim().slice(0, 60);
      await conversations.rename(sessionId, title);
    }
    if (sessionId === state.sessionId) {
      ui.title.textContent = titleOf(conversations.find(sessionId));
      document.title = `${ui.title.textContent} · EVA`;
    }
  } catch {
    // The list refreshes again after the next reply; the chat itself is not affected.
  }
}

// --- sending ----------------------------------------------------------------------------

async function sendMessage(content, { fromInput = true } = {}) {
  content = content.trim();
  if (!content || replies.inFlight) return;
  if (content.length > config.maxMessageChars) {
    showNotice(`A message can be at most ${config.maxMessageChars} characters.`);
    return;
  }
  hideNotice();
  if (ui.voice.checked) player.unlock(); // inside the key press or click: browsers allow audio then
  // Shown at once, marked "sending…"; the outbox sends it as soon as the socket is open.
  const firstMessage = ui.messages.children.length === 0 ? content : null;
  if (fromInput) {
    ui.input.value = "";
    autosize();
  }
  ui.emptyThread.hidden = true;
  const element = userMessage(content, { createdAt: new Date().toISOString() });
  ui.messages.append(element);
  scrollToBottom();
  const entry = { content, element, firstMessage, sessionId: state.sessionId };
  if (!entry.sessionId) {
    try {
      entry.sessionId = await conversationForDraft(content);
    } catch (error) {
      showNotice(`Could not start a conversation: ${error.message}`);
      markNotSent(element, () => {
        element.remove();
        ui.input.value = content;
        autosize();
        ui.input.focus();
      });
      return;
    }
  }
  outbox.add(entry);
  updateActions();
}

// --- message actions: regenerate the last reply, edit the last message ----------------------

function updateActions() {
  updateLastActions(ui.messages, {
    enabled: !replies.inFlight && outbox.size === 0 && Boolean(state.sessionId),
    onRegenerate: (reply, user) => takeBack(user, reply, null),
    onEdit: (user) => {
      startEditing(user, user.dataset.content || "", {
        onSubmit: (text) => takeBack(user, null, text),
        onCancel: () => user.querySelector(".edit-message")?.focus(),
      });
    },
  });
}

/**
 * Regenerate (`edited` null) or edit-and-resend: the server marks the exchange superseded
 * (kept, no longer shown nor sent to the model), the page drops it, and the message goes again.
 */
async function takeBack(user, reply, edited) {
  if (replies.inFlight || !state.sessionId || !user) return;
  const sessionId = state.sessionId;
  const requestId = user.dataset.requestId || (reply && reply.dataset.requestId) || null;
  let content = user.dataset.content || "";
  if (requestId) {
    // Without a request id nothing of this exchange reached the server (refused before it began).
    try {
      const taken = await api(`/sessions/${encodeURIComponent(sessionId)}/rewind`, {
        method: "POST",
        body: { request_id: requestId },
      });
      content = taken.content;
    } catch (error) {
      if (error.code !== "message_not_found") {
        showNotice(`Could not ${edited === null ? "regenerate" : "edit"}: ${error.message}`);
        return;
      }
    }
  }
  if (sessionId !== state.sessionId) return;
  // The exchange and anything after it leave the screen.
  let node = user;
  while (node) {
    const next = node.nextElementSibling;
    node.remove();
    node = next;
  }
  announce(edited === null ? "Regenerating the reply." : "Sending the edited message.");
  await sendMessage(edited === null ? content : edited, { fromInput: false });
}

/** The conversation a draft's first message goes to: created once, titled by that message. */
function conversationForDraft(content) {
  if (!state.creating) {
    const token = state.loadToken;
    state.creating = conversations
      .create({ title: titleFrom(content) })
      .then((session) => {
        if (token === state.loadToken) {
          state.sessionId = session.session_id;
          conversations.setCurrent(session.session_id);
          rememberConversation(session.session_id);
          ui.title.textContent = titleOf(session);
          document.title = `${titleOf(session)} · EVA`;
        }
        return session.session_id;
      })
      .finally(() => {
        state.creating = null;
      });
  }
  return state.creating;
}

function handleFrame(received) {
  const frame = resumer.accept(received); // a reply resumed after a drop: resume.js
  if (!frame) return;
  if (frame.type === "cleared") {
    if (frame.session_id === state.sessionId) openConversation(state.sessionId);
    return;
  }
  const follow = frame.type === "token" && nearBottom();
  replies.handleFrame(frame);
  if (follow) requestAnimationFrame(scrollToBottom);
}

function handleSocketState({ state: socketState, delayMs }) {
  ui.status.dataset.state = socketState;
  ui.reconnect.hidden = socketState !== "waiting";
  const texts = {
    connecting: "Connecting…",
    reconnecting: "Reconnecting…",
    open: "Connected",
    waiting: `Connection lost. Retrying in ${Math.max(1, Math.round((delayMs || 0) / 1000))} s…`,
    forbidden: "This address may not open the chat connection (Origin not allowed).",
    closed: "Disconnected.",
  };
  ui.statusText.textContent = texts[socketState] || socketState;
  if (socketState === "waiting" && !resumer.holdReply()) replies.connectionLost();
  if (socketState === "open") {
    resumer.connected(); // a reply cut by the drop resumes first (resume.js) ...
    outbox.pump(); // ... then queued messages go, once no reply is in flight (outbox.js)
  }
  if (socketState === "unauthenticated") {
    location.assign(`${config.loginUrl}?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
}

// --- wiring ------------------------------------------------------------------------------

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage(ui.input.value);
});
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage(ui.input.value);
  } else if (event.key === "Escape" && (replies.inFlight || replies.speaking)) {
    event.preventDefault();
    stopReply();
  }
});
ui.input.addEventListener("input", autosize);
ui.stop.addEventListener("click", () => stopReply());
ui.newButton.addEventListener("click", () => {
  startDraft();
  setSidebarOpen(false);
  ui.input.focus();
});
ui.loadEarlier.addEventListener("click", loadEarlier);
ui.search.addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => runSearch(), SEARCH_DELAY_MS);
});
ui.searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearTimeout(searchTimer);
  runSearch();
});
ui.search.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && ui.search.value) {
    event.preventDefault();
    event.stopPropagation();
    ui.search.value = "";
    runSearch();
  }
});
ui.searchMore.addEventListener("click", () => runSearch({ more: true }));
ui.reconnect.addEventListener("click", () => socket.reconnectNow());
byId("page-notice-close").addEventListener("click", () => {
  hideNotice();
  ui.input.focus();
});
ui.toggleSidebar.addEventListener("click", () => setSidebarOpen(ui.sidebar.dataset.open !== "true", { focus: true }));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && narrowScreen.matches && ui.sidebar.dataset.open === "true") {
    setSidebarOpen(false);
    ui.toggleSidebar.focus();
  }
});
document.addEventListener("click", (event) => {
  // On a phone the open list covers the chat: a tap beside it closes it.
  const outside = !ui.sidebar.contains(event.target) && !ui.toggleSidebar.contains(event.target);
  if (narrowScreen.matches && ui.sidebar.dataset.open === "true" && outside) setSidebarOpen(false);
});
ui.voice.checked = localStorage.getItem("eva.voice") === "on";
ui.voice.addEventListener("change", () => {
  localStorage.setItem("eva.voice", ui.voice.checked ? "on" : "off");
  if (ui.voice.checked) player.unlock();
  else replies.stopSpeech();
  announce(ui.voice.checked ? "Voice on: replies will be read aloud." : "Voice off.");
});

async function boot() {
  setBusy(false);
  autosize();
  socket.connect();
  try {
    await conversations.refresh();
  } catch (error) {
    showNotice(`Could not load your conversations: ${error.message}`);
  }
  const wanted = new URL(location.href).searchParams.get("c");
  const initial = (wanted && conversations.find(wanted)) || conversations.sessions[0];
  if (initial) await openConversation(initial.session_id);
  else startDraft();
  ui.layout.dataset.ready = "true";
}

// Tests and curious people can look at the state; nothing on the page depends on this.
window.eva = { socket, state, player, replies, outbox, resumer };
boot();
