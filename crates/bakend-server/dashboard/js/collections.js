// Collections: the list (with delete) and the page that defines a new one.

import { api } from "./api.js";
import { h, mount, link, fmtTime, confirmDanger, guard, notify } from "./dom.js";
import { editor } from "./schema.js";

export async function list(root, ctx) {
  const body = h("tbody");
  mount(root,
    h("div", { class: "toolbar" }, h("a", { href: "/_/collections/new", class: "button primary", id: "new-collection" }, "New collection")),
    h("table", { class: "grid", id: "collections" },
      h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Fields"),
        h("th", {}, "Permissions (create / read / update / delete)"), h("th", {}, "Updated"), h("th", {}, ""))),
      body));

  async function load() {
    const { items } = await api("GET", "/api/admin/collections");
    if (!ctx.alive) return;
    mount(body, items.length ? items.map(row) : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No collections yet.")));
  }

  function row(c) {
    const def = c.definition || {};
    const perms = def.permissions && typeof def.permissions === "object" ? def.permissions : {};
    const rule = (op) => (op in perms ? (typeof perms[op] === "string" ? perms[op] : JSON.stringify(perms[op])) : "public");
    return h("tr", { dataset: { collection: c.name } },
      h("td", {}, link(`/_/collections/${c.name}`, c.name)),
      h("td", { class: "num" }, Array.isArray(def.fields) ? def.fields.length : "–"),
      h("td", {}, h("span", { class: "cell" }, ["create", "read", "update", "delete"].map(rule).join(" / "))),
      h("td", { class: "time" }, fmtTime(c.updatedAt)),
      h("td", { class: "actions" },
        link(`/_/collections/${c.name}`, "Records"), " ",
        link(`/_/collections/${c.name}/schema`, "Schema"), " ",
        h("button", { type: "button", class: "danger small", dataset: { action: "delete" }, onclick: guard(() => remove(c.name)) }, "Delete")));
  }

  async function remove(name) {
    const ok = await confirmDanger(`Delete collection ${name}?`,
      "The table and every record in it are dropped, and its file in collections/ is removed. Files its records reference are kept.",
      { typed: name });
    if (!ok) return;
    await api("DELETE", `/api/admin/collections/${name}`);
    notify(`Collection ${name} deleted`);
    await load();
  }

  ctx.subscribe("system.collection.*", () => load().catch(() => {}));
  await load();
}

export async function create(root, ctx) {
  const { items } = await api("GET", "/api/admin/collections");
  if (!ctx.alive) return;
  editor(root, ctx, {
    mode: "create",
    definition: { name: "", fields: [] },
    collections: items.map((c) => c.name),
    onDone: (name) => ctx.navigate(`/_/collections/${name}`),
  });
}
