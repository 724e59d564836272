// The dashboard's shell: sign-in or the signed-in layout (sidebar, header, one view), and the
// client-side router. Paths are real paths below /_/ (the server answers index.html for them),
// so reloads and shared links land on the same view.

import * as api from "./api.js";
import { Live, EventLog } from "./live.js";
import { h, mount, notify } from "./dom.js";
import signin from "./signin.js";
import overview from "./overview.js";
import { list as collections, create as newCollection } from "./collections.js";
import schemaView from "./schema.js";
import records from "./records.js";
import users from "./users.js";
import storage from "./storage.js";
import functions from "./functions.js";
import jobs from "./jobs.js";
import logs from "./logs.js";
import inspector from "./inspector.js";

const NAME = "([a-z][a-z0-9_]*)";
const ROUTES = [
  [/^\/_\/$/, overview, "overview", "Overview"],
  [/^\/_\/collections$/, collections, "collections", "Collections"],
  [/^\/_\/collections\/new$/, newCollection, "collections", "New collection"],
  [new RegExp(`^/_/collections/${NAME}/schema$`), schemaView, "collections", "Schema"],
  [new RegExp(`^/_/collections/${NAME}$`), records, "collections", "Records"],
  [/^\/_\/users$/, users, "users", "Users"],
  [/^\/_\/storage$/, storage, "storage", "Storage"],
  [/^\/_\/functions$/, functions, "functions", "Functions"],
  [/^\/_\/jobs$/, jobs, "jobs", "Jobs"],
  [/^\/_\/logs$/, logs, "logs", "Logs"],
  [/^\/_\/realtime$/, inspector, "realtime", "Realtime"],
];

const NAV = [
  ["/_/", "overview", "Overview"],
  ["/_/collections", "collections", "Collections"],
  ["/_/users", "users", "Users"],
  ["/_/storage", "storage", "Storage"],
  ["/_/functions", "functions", "Functions"],
  ["/_/jobs", "jobs", "Jobs"],
  ["/_/logs", "logs", "Logs"],
  ["/_/realtime", "realtime", "Realtime"],
];

const app = document.getElementById("app");
let shell = null; // {main, nav, live, feeds, status}
let current = null; // the mounted view's context

/** Everything that lives while signed in: the socket, the live feeds, the layout. */
function startShell() {
  const status = h("span", { class: "live-status", id: "live-status", dataset: { state: "connecting" } }, "connecting");
  const live = new Live({
    onState: (s) => {
      status.dataset.state = s;
      status.textContent = s === "open" ? "live" : s;
    },
  });
  const feeds = { functions: new EventLog(), jobs: new EventLog() };
  live.subscribe("function.*", (e) => e.type !== "reconnected" && feeds.functions.push(e));
  live.subscribe("job.*", (e) => e.type !== "reconnected" && feeds.jobs.push(e));
  const nav = h("nav", { class: "sidebar", "aria-label": "Sections" },
    h("div", { class: "brand" }, h("img", { src: "/_/favicon.svg", alt: "", width: 22, height: 22 }), "Bakend"),
    NAV.map(([path, key, label]) => h("a", { href: path, dataset: { section: key } }, label)));
  const main = h("main", { id: "view" });
  const who = h("span", { class: "who", id: "who" }, api.user() ? api.user().email : "");
  const header = h("header", { class: "topbar" },
    h("h1", { id: "title" }, ""), h("div", { class: "spacer" }), status, who,
    h("button", { type: "button", id: "sign-out", onclick: () => api.signOut() }, "Sign out"));
  mount(app, h("div", { class: "layout" }, nav, h("div", { class: "content" }, header, main)));
  shell = { main, nav, live, feeds, header };
}

function stopShell() {
  if (current) current.dispose();
  current = null;
  if (shell) shell.live.close();
  shell = null;
}

/** A view's context: its route parameters and cleanups that run when it is left. */
function context(params) {
  const cleanups = [];
  const { live, feeds } = shell; // a view that outlives a sign-out must not reach the next one's
  let alive = true;
  return {
    params,
    live,
    feeds,
    navigate,
    get alive() { return alive; },
    subscribe(channel, fn) { cleanups.push(live.subscribe(channel, fn)); },
    every(ms, fn) {
      const t = setInterval(() => { if (!document.hidden) fn(); }, ms);
      cleanups.push(() => clearInterval(t));
    },
    cleanup(fn) { cleanups.push(fn); },
    dispose() {
      alive = false;
      for (const fn of cleanups.splice(0)) fn();
    },
  };
}

function route() {
  if (!shell) return;
  const path = location.pathname.replace(/\/+$/, "") || "/_";
  const target = path === "/_" ? "/_/" : path;
  const found = ROUTES.find(([re]) => re.test(target));
  if (current) current.dispose();
  const root = h("div", { class: "view" });
  mount(shell.main, root);
  for (const a of shell.nav.querySelectorAll("a")) {
    a.classList.toggle("active", !!found && a.dataset.section === found[2]);
  }
  if (!found) {
    current = context([]);
    document.getElementById("title").textContent = "Not found";
    mount(root, h("p", {}, "There is no such page. "), h("a", { href: "/_/" }, "Overview"));
    return;
  }
  const [re, view, , title] = found;
  const params = target.match(re).slice(1);
  document.getElementById("title").textContent = title;
  document.title = `${title} · Bakend`;
  current = context(params);
  const ctx = current;
  Promise.resolve(view(root, ctx)).catch((e) => {
    if (!ctx.alive) return;
    if (e && e.isApiError) {
      mount(root, h("p", { class: "error", role: "alert" }, e.message));
    } else {
      mount(root, h("p", { class: "error", role: "alert" }, `Unexpected error: ${e && e.message}`));
      throw e;
    }
  });
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

// Links inside the dashboard change the view without reloading the page.
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target || a.hasAttribute("download")) return;
  const href = a.getAttribute("href");
  if (!href.startsWith("/_/")) return;
  e.preventDefault();
  if (href !== location.pathname) navigate(href);
});
window.addEventListener("popstate", route);

function showSignIn(message) {
  stopShell();
  document.title = "Sign in · Bakend";
  signin(app, { message, onSignedIn: showApp });
}

function showApp() {
  startShell();
  route();
}

let endedBecause = "";
api.onSession((s, reason) => {
  if (!s) endedBecause = ["signout", ""].includes(reason) ? "" : reason;
  if (!s && shell) showSignIn(endedBecause);
  if (s && shell) document.getElementById("who").textContent = s.user.email;
});

async function boot() {
  try {
    const u = await api.resume();
    if (u) showApp();
    else showSignIn(endedBecause);
  } catch (e) {
    showSignIn(e && e.message ? e.message : "");
    notify("Cannot reach the server", "error");
  }
}

boot();
