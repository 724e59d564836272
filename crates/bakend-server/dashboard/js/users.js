// Users: list, change role, delete. The server refuses to demote or delete the last admin
// (409); the page says so next to the user.

import * as api from "./api.js";
import { h, mount, fmtTime, confirmDanger, guard, notify, pager } from "./dom.js";

const ROLES = ["admin", "authenticated", "public"];
const LIMIT = 50;

export default async function users(root, ctx) {
  let page = 1;
  const body = h("tbody", { id: "users" });
  const pages = h("div");
  const total = h("span", { class: "muted" });
  mount(root,
    h("div", { class: "toolbar" }, h("p", { class: "muted" }, "A role change applies to the user's next request and to their open realtime connections."), h("div", { class: "spacer" }), total),
    h("table", { class: "grid", id: "users-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Email"), h("th", {}, "Role"), h("th", {}, "Created"), h("th", {}, "id"), h("th", {}, ""))),
      body),
    pages);

  async function load() {
    const r = await api.api("GET", "/api/admin/users", { query: { limit: LIMIT, offset: (page - 1) * LIMIT } });
    if (!ctx.alive) return;
    const totalPages = Math.max(1, Math.ceil(r.total / LIMIT));
    total.textContent = `${r.total} user${r.total === 1 ? "" : "s"}`;
    mount(body, r.items.map(row));
    mount(pages, pager(page, totalPages, (p) => { page = p; load().catch(() => {}); }));
  }

  function row(u) {
    const me = api.user() && api.user().id === u.id;
    const message = h("div", { class: "field-error", role: "alert" });
    const role = h("select", { "aria-label": `Role of ${u.email}`, class: "role" },
      ROLES.map((r) => h("option", { value: r, selected: u.role === r }, r)));
    role.addEventListener("change", guard(async () => {
      message.textContent = "";
      try {
        const updated = await api.api("PATCH", `/api/admin/users/${u.id}`, { body: { role: role.value } });
        u.role = updated.role;
        notify(`${u.email} is now ${updated.role}`);
      } catch (e) {
        role.value = u.role;
        if (e && e.isApiError) message.textContent = e.status === 409 ? `${e.message}: make another account an admin first.` : e.message;
        else throw e;
      }
    }));
    const del = h("button", { type: "button", class: "small danger", dataset: { action: "delete" }, onclick: guard(async () => {
      message.textContent = "";
      const ok = await confirmDanger(`Delete ${u.email}?`,
        "The account, its sessions and every file it uploaded are deleted. Records it owns keep its id.");
      if (!ok) return;
      try {
        await api.api("DELETE", `/api/admin/users/${u.id}`);
        notify(`${u.email} deleted`);
        await load();
      } catch (e) {
        if (e && e.isApiError) message.textContent = e.status === 409 ? `${e.message}: make another account an admin first.` : e.message;
        else throw e;
      }
    }) }, "Delete");
    return h("tr", { dataset: { email: u.email, id: u.id } },
      h("td", {}, h("span", { class: "cell" }, u.email), me ? h("span", { class: "badge muted" }, "you") : null),
      h("td", {}, role, message),
      h("td", { class: "time" }, fmtTime(u.createdAt)),
      h("td", {}, h("span", { class: "cell id" }, u.id)),
      h("td", { class: "actions" }, del));
  }

  ctx.subscribe("auth.register", () => load().catch(() => {}));
  await load();
}
