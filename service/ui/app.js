// The dashboard: a hash router over views. A view is {nav, title, render(main, params, ctx)}, where
// render may return a cleanup function (stop polling, abort a stream). To add a page, write a module
// exporting such a view and add one entry to ROUTES (and a nav link).

import { clearKey, getKey, onUnauthorized, setKey } from "./api.js";
import { compareView } from "./compare.js";
import { compareNewView } from "./compare-new.js";
import { comparesView } from "./compares.js";
import { clear, h } from "./dom.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { submitView } from "./submit.js";

const ROUTES = [
  { pattern: /^#\/jobs\/([^/?]+)$/, view: jobView, params: (m) => ({ id: decodeURIComponent(m[1]) }) },
  { pattern: /^#\/jobs(?:\?(.*))?$/, view: jobsView, params: (m) => Object.fromEntries(new URLSearchParams(m[1] || "")) },
  { pattern: /^#\/new$/, view: submitView, params: () => ({}) },
  { pattern: /^#\/compare\/new$/, view: compareNewView, params: () => ({}) },
  { pattern: /^#\/compare\/([^/?]+)$/, view: compareView, params: (m) => ({ id: decodeURIComponent(m[1]) }) },
  { pattern: /^#\/compare$/, view: comparesView, params: () => ({}) },
];
const DEFAULT_HASH = "#/jobs";

const main = document.getElementById("main");
const toastBox = document.getElementById("toast");
let cleanup = null;
let toastTimer = null;

export function toast(message, kind = "info") {
  toastBox.textContent = message;
  toastBox.className = `toast ${kind}`;
  toastBox.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toastBox.hidden = true;
  }, 5000);
}

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

const ctx = { toast, navigate };

function stop() {
  if (cleanup) {
    try {
      cleanup();
    } catch (err) {
      console.error(err);
    }
  }
  cleanup = null;
}

function renderLogin(message) {
  stop();
  document.getElementById("signout").hidden = true;
  document.title = "reluswap: sign in";
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
    placeholder: "API key", size: "40" });
  const form = h("form", { class: "card login", id: "login-form" },
    h("h1", {}, "API key"),
    h("p", { class: "muted" },
      "Every request to the API carries this key as a bearer token. It is kept in this tab's session storage only."),
    message ? h("p", { class: "error" }, message) : null,
    h("label", { for: "api-key" }, "Key"),
    h("div", { class: "row" }, input, h("button", { type: "submit", class: "primary" }, "Continue")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    setKey(key);
    route();
  });
  clear(main).append(form);
  input.focus();
}

function route() {
  if (!getKey()) {
    renderLogin();
    return;
  }
  document.getElementById("signout").hidden = false;
  const hash = location.hash || DEFAULT_HASH;
  for (const r of ROUTES) {
    const m = hash.match(r.pattern);
    if (!m) continue;
    stop();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.view === r.view.nav);
    }
    document.title = `reluswap: ${r.view.title}`;
    clear(main);
    const result = r.view.render(main, r.params(m), ctx);
    cleanup = typeof result === "function" ? result : null;
    return;
  }
  location.replace(DEFAULT_HASH);
}

onUnauthorized(() => {
  clearKey();
  renderLogin("The API refused this key (401). Enter a valid key.");
});

document.getElementById("signout").addEventListener("click", () => {
  clearKey();
  renderLogin();
});
window.addEventListener("hashchange", route);
route();
