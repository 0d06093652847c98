// The console's shell: the session, sign-in, the operator's app picker, and a router over
// location.hash. The secret typed to sign in is sent once and never kept: the session lives
// in an HttpOnly cookie the page cannot read.

import { views } from "./views.js";

export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.field = body?.error?.field;
    this.kind = body?.error?.kind;
  }
}

// A console API call; state-changing ones carry the CSRF header.
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") init.headers["X-Pigeon-Console"] = "1";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/console/api/" + path, init);
  let data = null;
  try { data = await r.json(); } catch { data = null; }
  if (!r.ok) {
    const e = new ApiError(r.status, data);
    if (r.status === 401 && path !== "session") {
      state.session = { signed_in: false };
      render();
    }
    throw e;
  }
  return data;
}

export const state = { session: null, timer: null };

export const main = () => document.getElementById("main");

export function show(...nodes) {
  main().replaceChildren(...nodes);
}

export function time(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toLocaleString();
}

// Runs `fn` now and every `ms` while the current view stays.
export function every(ms, fn) {
  clearInterval(state.timer);
  const run = () => Promise.resolve().then(fn).catch((e) => {
    if (e instanceof ApiError && e.status === 401) return;
    clearInterval(state.timer);
    show(h("div", { class: "error-box", role: "alert" }, e.message));
  });
  run();
  state.timer = setInterval(run, ms);
}

function signInView() {
  const operatorOn = state.session?.operator_enabled;
  let mode = "app";
  const error = h("div", { id: "sign-in-error", role: "alert", hidden: true });
  const appFields = h("div", { id: "app-fields" },
    h("label", {}, "App key", h("input", { name: "app_key", id: "app_key", autocomplete: "username", required: true })),
    h("label", {}, "Master secret", h("input", { name: "master_secret", id: "master_secret", type: "password", autocomplete: "current-password", required: true })));
  const tokenFields = h("div", { id: "token-fields", hidden: true },
    h("label", {}, "Operator token", h("input", { name: "token", id: "token", type: "password", autocomplete: "current-password" })));
  const tabs = h("div", { class: "tabs", role: "group", "aria-label": "Sign in as" });
  const tab = (name, label) => h("button", { type: "button", id: `tab-${name}`, "aria-pressed": String(name === mode),
    onclick: () => {
      mode = name;
      appFields.hidden = name !== "app";
      tokenFields.hidden = name !== "operator";
      for (const b of tabs.children) b.setAttribute("aria-pressed", String(b.id === `tab-${name}`));
    } }, label);
  tabs.append(tab("app", "An app"));
  if (operatorOn) tabs.append(tab("operator", "Operator"));
  const form = h("form", { class: "stack", id: "sign-in-form", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const fd = new FormData(form);
    const body = mode === "operator"
      ? { token: fd.get("token") }
      : { app_key: fd.get("app_key"), master_secret: fd.get("master_secret") };
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      state.session = await api("POST", "session", body);
      form.reset();
      if (!location.hash || location.hash === "#/" || location.hash === "#/sign-in") location.hash = "#/pushes";
      render();
    } catch (e) {
      error.className = "error-box";
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  } }, appFields, tokenFields, error, h("button", { type: "submit", id: "sign-in" }, "Sign in"));
  show(h("div", { class: "card sign-in" }, h("h1", {}, "Sign in to Pigeon"), tabs, form,
    operatorOn ? null : h("p", { class: "muted" }, "Operator sign-in is off (no console_token set).")));
}

async function pickAppView() {
  const { apps } = await api("GET", "apps");
  const list = h("ul", { id: "apps" }, apps.map((a) => h("li", {},
    h("button", { type: "button", class: "secondary", "data-app": a.app_key, onclick: async () => {
      const picked = await api("PUT", "session/app", { app_key: a.app_key });
      state.session.app_key = picked.app_key;
      state.session.app_name = picked.app_name;
      location.hash = "#/pushes";
      render();
    } }, `${a.name} `, h("code", {}, a.app_key)), ` — ${a.devices} devices`)));
  show(h("h1", {}, "Pick an app"), apps.length ? list : h("p", {}, "No apps yet: create one with pigeon app create."));
}

function header() {
  const s = state.session;
  const signedIn = s?.signed_in;
  document.getElementById("nav").hidden = !signedIn || !s.app_key;
  document.getElementById("who").hidden = !signedIn;
  if (!signedIn) return;
  const label = s.kind === "operator" ? "Operator" : "App";
  document.getElementById("who-app").textContent =
    s.app_key ? `${label} · ${s.app_name ?? ""} (${s.app_key})` : label;
  document.getElementById("switch-app").hidden = s.kind !== "operator";
  const view = (location.hash.split("/")[1] || "pushes");
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view || (view === "push" && a.dataset.view === "pushes")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

export async function render() {
  clearInterval(state.timer);
  if (!state.session) state.session = await api("GET", "session");
  header();
  if (!state.session.signed_in) return signInView();
  if (!state.session.app_key) return pickAppView();
  const [, name = "pushes", ...rest] = location.hash.split("/");
  const view = views[name] ?? views.pushes;
  try {
    await view(...rest.map(decodeURIComponent));
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    show(h("div", { class: "error-box", role: "alert" }, e.message));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api("DELETE", "session");
  state.session = { signed_in: false, operator_enabled: state.session?.operator_enabled };
  location.hash = "#/sign-in";
  render();
});
document.getElementById("switch-app").addEventListener("click", () => {
  state.session.app_key = null;
  render();
});
window.addEventListener("hashchange", () => render());
render();
