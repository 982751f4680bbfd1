// What a person can do with a message: copy it (or one of its code blocks), regenerate the
// last reply, edit and resend the last message of their own.
//
// Regenerate and edit replace what is on screen: the server keeps the earlier exchange, marked
// superseded (POST /api/v1/sessions/{id}/rewind), and no longer lists it nor sends it to the
// model; the JSON export with include_superseded=true still has it.

const CONFIRM_MS = 2000;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Put `text` on the clipboard; resolves true when it is there. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

function setLabel(button, text) {
  const label = button.querySelector(".action-label");
  if (label) label.textContent = text;
  else button.dataset.shown = text; // a code block's button: its text is drawn by CSS, outside the reply's text
}

function confirmCopied(button, ok, announce) {
  const before = button.dataset.label;
  button.dataset.copied = ok ? "true" : "false";
  setLabel(button, ok ? "Copied" : "Copy failed");
  announce(ok ? "Copied to the clipboard." : "Could not copy: the browser refused the clipboard.");
  clearTimeout(button.copyTimer);
  button.copyTimer = setTimeout(() => {
    setLabel(button, before);
    delete button.dataset.copied;
  }, CONFIRM_MS);
}

function actionButton(className, label, ariaLabel, icon) {
  const button = el("button", `message-action ${className}`);
  button.type = "button";
  button.dataset.label = label;
  if (ariaLabel) button.setAttribute("aria-label", ariaLabel);
  if (icon) button.append(el("span", `icon ${icon}`));
  button.append(el("span", "action-label", label));
  return button;
}

/** A "Copy" button for a message; `text()` gives what to copy at the moment of the click. */
export function copyMessageButton(text, announce) {
  const button = actionButton("copy-message", "Copy", "Copy message", "icon-copy");
  button.addEventListener("click", async () => confirmCopied(button, await copyText(text()), announce));
  return button;
}

/** Give every code block inside `root` a "Copy code" button (once each). */
export function addCodeCopyButtons(root, announce) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.querySelector(".copy-code")) continue;
    const button = el("button", "message-action copy-code");
    button.type = "button";
    button.dataset.label = "Copy code";
    button.dataset.shown = "Copy code";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", async () => {
      const code = pre.querySelector("code");
      confirmCopied(button, await copyText(code ? code.textContent : pre.textContent), announce);
    });
    pre.append(button);
  }
}

/** The message's row of actions (created on first use). */
export function actionsRow(element) {
  let row = element.querySelector(":scope > .message-actions");
  if (!row) {
    row = el("div", "message-actions");
    element.append(row);
  }
  return row;
}

/**
 * Show Regenerate on the last reply and Edit on the last message of the person, and only
 * there; none while a reply is in flight or messages wait to be sent.
 */
export function updateLastActions(thread, { enabled, onRegenerate, onEdit }) {
  for (const old of thread.querySelectorAll(".regenerate, .edit-message")) old.remove();
  if (!enabled) return;
  const items = [...thread.children];
  const last = items[items.length - 1];
  if (!last) return;
  const lastUser = [...items].reverse().find((item) => item.dataset.role === "user");
  if (last.dataset.role === "assistant" && last.dataset.status !== "streaming") {
    const button = actionButton("regenerate", "Regenerate", "Regenerate reply", null);
    button.addEventListener("click", () => onRegenerate(last, lastUser));
    actionsRow(last).append(button);
  }
  if (lastUser && lastUser.dataset.sendState !== "sending") {
    const button = actionButton("edit-message", "Edit", "Edit message", "icon-edit");
    button.addEventListener("click", () => onEdit(lastUser));
    actionsRow(lastUser).append(button);
  }
}

/** Turn the user message `element` into a small form; `onSubmit(text)` resends it edited. */
export function startEditing(element, content, { onSubmit, onCancel }) {
  const form = el("form", "edit-form");
  const label = el("label", "visually-hidden", "Edit your message");
  const input = el("textarea");
  input.id = `edit-${Date.now()}`;
  label.htmlFor = input.id;
  input.value = content;
  input.rows = Math.min(8, content.split("\n").length + 1);
  const send = el("button", "button primary small", "Send edited");
  send.type = "submit";
  const cancel = el("button", "button secondary small", "Cancel");
  cancel.type = "button";
  const buttons = el("div", "edit-buttons");
  buttons.append(cancel, send);
  form.append(label, input, buttons);
  const hidden = [...element.children];
  for (const child of hidden) child.hidden = true;
  element.append(form);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
  const close = () => {
    form.remove();
    for (const child of hidden) child.hidden = false;
  };
  cancel.addEventListener("click", () => {
    close();
    onCancel();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
      onCancel();
    } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    close();
    onSubmit(text);
  });
}
