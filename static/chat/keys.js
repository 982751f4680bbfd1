// The API keys page: create (secret shown once, with a copy button), list, revoke.

import { api } from "./api.js";

const byId = (id) => document.getElementById(id);
const ui = {
  form: byId("create-key"),
  name: byId("key-name"),
  expiry: byId("key-expiry"),
  createError: byId("create-error"),
  newKey: byId("new-key"),
  newKeyValue: byId("new-key-value"),
  copy: byId("copy-key"),
  copyStatus: byId("copy-status"),
  dismiss: byId("dismiss-key"),
  body: byId("keys-body"),
  table: byId("keys-table"),
  empty: byId("keys-empty"),
  listError: byId("list-error"),
  announcer: byId("keys-announcer"),
  showOld: byId("show-old-keys"),
};

// The key whose secret the panel shows (hidden again as soon as that key is revoked), and
// whether revoked and expired keys are listed (the person's choice, kept in this browser).
const page = { shownKeyId: null, showOld: localStorage.getItem("eva.keys.showOld") === "on", keys: [] };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function dateCell(iso, empty) {
  const cell = el("td");
  if (!iso) {
    cell.append(el("span", "muted", empty));
    return cell;
  }
  const date = new Date(iso);
  const time = el("time", "", date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" }));
  time.dateTime = date.toISOString();
  cell.append(time);
  return cell;
}

function statusOf(key) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return "expired";
  return "active";
}

function row(key) {
  const status = statusOf(key);
  const tr = el("tr");
  tr.dataset.keyId = key.id;
  tr.dataset.status = status;
  const name = el("th", "key-name", key.name);
  name.scope = "row";
  const display = el("td");
  display.append(el("code", "", key.display));
  const scopes = el("td");
  for (const scope of key.scopes) scopes.append(el("span", "chip", scope), " ");
  const state = el("td");
  state.append(el("span", `status status-${status}`, status));
  const actions = el("td", "actions");
  if (status !== "revoked") {
    const revoke = el("button", "button danger small", "Revoke");
    revoke.type = "button";
    revoke.setAttribute("aria-label", `Revoke key “${key.name}”`);
    revoke.addEventListener("click", () => revokeKey(key));
    actions.append(revoke);
  }
  tr.append(name, display, scopes, dateCell(key.created_at, ""), dateCell(key.last_used_at, "never"),
    dateCell(key.expires_at, "never"), state, actions);
  return tr;
}

function hideSecret() {
  page.shownKeyId = null;
  ui.newKeyValue.value = "";
  ui.newKey.hidden = true;
}

function render() {
  const keys = page.keys;
  const old = keys.filter((key) => statusOf(key) !== "active");
  const shown = page.showOld ? keys : keys.filter((key) => statusOf(key) === "active");
  ui.body.replaceChildren(...shown.map(row));
  ui.empty.hidden = shown.length > 0;
  ui.empty.textContent = keys.length === 0 ? "You have no API keys yet." : "You have no active API keys.";
  ui.table.hidden = shown.length === 0;
  ui.showOld.hidden = old.length === 0;
  ui.showOld.setAttribute("aria-pressed", page.showOld ? "true" : "false");
  ui.showOld.textContent = page.showOld
    ? `Hide revoked and expired keys (${old.length})`
    : `Show revoked and expired keys (${old.length})`;
}

async function loadKeys() {
  try {
    page.keys = await api("/keys");
    const shownKey = page.keys.find((key) => key.id === page.shownKeyId);
    if (page.shownKeyId !== null && (!shownKey || statusOf(shownKey) === "revoked")) hideSecret();
    render();
    ui.listError.hidden = true;
  } catch (error) {
    ui.listError.textContent = `Could not load your keys: ${error.message}`;
    ui.listError.hidden = false;
  }
}

async function revokeKey(key) {
  if (!window.confirm(`Revoke “${key.name}”? Apps using it stop working at once.`)) return;
  try {
    await api(`/keys/${key.id}/revoke`, { method: "POST" });
    if (key.id === page.shownKeyId) hideSecret(); // its secret is worthless now: no panel left showing it
    await loadKeys();
    ui.announcer.textContent = `Key “${key.name}” revoked.`;
    ui.name.focus();
  } catch (error) {
    ui.listError.textContent = `Could not revoke the key: ${error.message}`;
    ui.listError.hidden = false;
  }
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  ui.createError.hidden = true;
  const name = ui.name.value.trim();
  const scopes = [...ui.form.querySelectorAll("input[name=scopes]:checked")].map((box) => box.value);
  const problems = [];
  if (!name) problems.push("Give the key a name.");
  if (scopes.length === 0) problems.push("Choose at least one scope.");
  if (problems.length) {
    ui.createError.textContent = problems.join(" ");
    ui.createError.hidden = false;
    ui.name.setAttribute("aria-invalid", name ? "false" : "true");
    (name ? ui.form.querySelector("input[name=scopes]") : ui.name).focus();
    return;
  }
  ui.name.setAttribute("aria-invalid", "false");
  const body = { name, scopes };
  // A date means "until the end of that day", in the person's own time zone.
  if (ui.expiry.value) body.expires_at = new Date(`${ui.expiry.value}T23:59:59`).toISOString();
  const submit = ui.form.querySelector("button[type=submit]");
  submit.disabled = true;
  try {
    const created = await api("/keys", { method: "POST", body });
    ui.form.reset();
    ui.newKeyValue.value = created.key;
    page.shownKeyId = created.id;
    ui.copyStatus.textContent = "";
    ui.newKey.hidden = false;
    ui.newKey.focus();
    await loadKeys();
  } catch (error) {
    ui.createError.textContent = error.message;
    ui.createError.hidden = false;
  } finally {
    submit.disabled = false;
  }
});

ui.copy.addEventListener("click", async () => {
  const value = ui.newKeyValue.value;
  try {
    await navigator.clipboard.writeText(value);
    ui.copyStatus.textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard permission (or not a secure context): select it for Ctrl+C instead.
    ui.newKeyValue.focus();
    ui.newKeyValue.select();
    ui.copyStatus.textContent = "Press Ctrl+C (⌘C on a Mac) to copy the selected key.";
  }
});

ui.dismiss.addEventListener("click", () => {
  hideSecret();
  ui.name.focus();
});

ui.showOld.addEventListener("click", () => {
  page.showOld = !page.showOld;
  localStorage.setItem("eva.keys.showOld", page.showOld ? "on" : "off");
  render();
});

loadKeys();
