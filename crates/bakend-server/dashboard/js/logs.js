// Logs: the server's recent log entries (GET /api/admin/logs, the last 500 in memory) with a
// level filter, following new lines by polling. Entries have no id, so new ones are found by
// lining the fresh tail up with the last entry already shown.

import * as api from "./api.js";
import { h, mount, fmtClock } from "./dom.js";

const LEVELS = ["DEBUG", "INFO", "WARN", "ERROR"];
const key = (e) => `${e.timestamp}\u0000${e.level}\u0000${e.message}`;

export default async function logs(root, ctx) {
  let entries = [];
  const level = h("select", { id: "log-level", "aria-label": "Lowest level" },
    LEVELS.map((l) => h("option", { value: l, selected: l === "DEBUG" }, `${l} and above`)));
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const filter = h("input", { type: "search", id: "log-filter", placeholder: "Filter…", "aria-label": "Filter lines" });
  const list = h("ol", { class: "log", id: "log-lines" });
  const count = h("span", { class: "muted" });
  mount(root,
    h("div", { class: "toolbar" }, level, h("label", { class: "inline" }, follow, " follow"), filter, h("div", { class: "spacer" }), count),
    list);

  function line(e) {
    return h("li", { class: ["log-line", e.level.toLowerCase()], dataset: { level: e.level } },
      h("time", { datetime: e.timestamp }, fmtClock(e.timestamp)), " ",
      h("span", { class: "level" }, e.level), " ",
      h("span", { class: "message" }, e.message));
  }

  function visible(e) {
    const f = filter.value.trim().toLowerCase();
    return !f || e.message.toLowerCase().includes(f);
  }

  function render() {
    mount(list, entries.filter(visible).map(line));
    count.textContent = `${entries.length} entries`;
    scroll();
  }

  function scroll() {
    if (follow.checked) list.scrollTop = list.scrollHeight;
  }

  async function poll(reset) {
    const { items } = await api.api("GET", "/api/admin/logs", { query: { limit: 500, level: level.value } });
    if (!ctx.alive) return;
    if (reset || entries.length === 0) {
      entries = items;
      return render();
    }
    const last = key(entries[entries.length - 1]);
    let at = -1;
    for (let i = items.length - 1; i >= 0; i--) {
      if (key(items[i]) === last) { at = i; break; }
    }
    if (at === -1) {
      // The ring moved past everything shown: start again from what it holds now.
      entries = items;
      return render();
    }
    const fresh = items.slice(at + 1);
    if (fresh.length === 0) return;
    entries.push(...fresh);
    if (entries.length > 2000) entries.splice(0, entries.length - 2000);
    for (const e of fresh) if (visible(e)) list.appendChild(line(e));
    while (list.children.length > 2000) list.firstChild.remove();
    count.textContent = `${entries.length} entries`;
    scroll();
  }

  level.addEventListener("change", () => poll(true).catch(() => {}));
  filter.addEventListener("input", render);
  follow.addEventListener("change", scroll);
  ctx.every(2000, () => { if (follow.checked) poll(false).catch(() => {}); });
  await poll(true);
}
