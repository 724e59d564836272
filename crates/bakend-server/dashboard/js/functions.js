// Functions: the loaded triggers with their invocation and failure counts, and the live feed of
// `function.*` events (admins receive them with their errors). The feed is collected from
// sign-in on, so it also shows what happened before this page was opened.

import * as api from "./api.js";
import { h, mount, fmtClock, fmtNumber, debounce, badge } from "./dom.js";

/**
 * A live list of events from `log` (an EventLog), newest first; `describe(event)` gives
 * [kind, title, details…] for one event.
 */
export function feed(ctx, log, describe, id) {
  const list = h("ol", { class: "feed", id });
  const onlyFailures = h("input", { type: "checkbox", id: `${id}-failures` });
  const empty = h("li", { class: "muted" }, "Nothing yet: events appear here as they happen.");

  function item({ at, event }) {
    const [kind, title, ...details] = describe(event);
    return h("li", { class: ["feed-item", kind], dataset: { type: event.type } },
      h("div", { class: "feed-head" }, h("time", { datetime: at }, fmtClock(event.timestamp || at)), " ",
        badge(event.type, kind), " ", h("span", {}, title)),
      details.filter(Boolean).map((d) => h("pre", { class: "feed-detail" }, d)));
  }

  function show(x) {
    return !onlyFailures.checked || x.event.type.endsWith(".failed");
  }

  function render() {
    const shown = log.items.filter(show).slice().reverse();
    mount(list, shown.length ? shown.map(item) : empty);
  }

  onlyFailures.addEventListener("change", render);
  ctx.cleanup(log.listen(() => {
    const last = log.items[log.items.length - 1];
    if (!last || !show(last)) return;
    if (list.firstChild === empty) list.replaceChildren();
    list.prepend(item(last));
    while (list.children.length > log.limit) list.lastChild.remove();
  }));
  render();
  return h("div", {}, h("label", { class: "inline" }, onlyFailures, " failures only"), list);
}

export default async function functions(root, ctx) {
  const body = h("tbody", { id: "triggers" });
  mount(root,
    h("section", {}, h("h2", {}, "Triggers"),
      h("table", { class: "grid", id: "triggers-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Trigger"), h("th", {}, "Event"),
          h("th", { class: "num" }, "Invocations"), h("th", { class: "num" }, "Failures"))),
        body)),
    h("section", {}, h("h2", {}, "Live feed ", h("span", { class: "muted" }, "function.*")),
      feed(ctx, ctx.feeds.functions, describe, "function-feed")));

  async function load() {
    const { items } = await api.api("GET", "/api/admin/functions");
    if (!ctx.alive) return;
    mount(body, items.length ? items.map((t) => h("tr", { dataset: { file: t.filePath } },
      h("td", {}, h("span", { class: "cell" }, t.filePath)),
      h("td", {}, t.collection ? `${t.type}(${t.collection})` : t.type),
      h("td", {}, t.eventType),
      h("td", { class: "num" }, fmtNumber(t.invocations)),
      h("td", { class: ["num", t.failures ? "bad" : ""] }, fmtNumber(t.failures))))
      : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No triggers: add TypeScript files to functions/ (docs/functions.md).")));
  }

  const soon = debounce(() => load().catch(() => {}), 300);
  ctx.cleanup(soon.cancel);
  ctx.cleanup(ctx.feeds.functions.listen(soon));
  ctx.every(10_000, soon);
  await load();
}

function describe(e) {
  const p = e.payload || {};
  const kind = e.type.endsWith(".failed") ? "bad" : e.type.endsWith(".completed") ? "ok" : "muted";
  return [kind, `${p.filePath || "?"} on ${p.eventType || "?"}`, p.error];
}
