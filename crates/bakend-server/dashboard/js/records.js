// One collection's records: a paginated, sortable table that follows `<collection>.*` on the
// realtime socket, and forms that follow the field types. Validation errors from the server
// are shown next to their fields. Values are text everywhere (cells clip them with CSS; the
// whole value stays in the page).

import * as api from "./api.js";
import { h, mount, cell, fmtTime, confirmDanger, guard, notify, pager, debounce, fmtBytes } from "./dom.js";
import { tabs } from "./schema.js";

const PER_PAGE = [25, 50, 100];

export default async function records(root, ctx) {
  const [name] = ctx.params;
  const meta = await api.api("GET", `/api/admin/collections/${name}`);
  if (!ctx.alive) return;
  const fields = (Array.isArray(meta.definition.fields) ? meta.definition.fields : [])
    .filter((f) => f && typeof f.name === "string");
  const q = new URLSearchParams(location.search);
  const state = {
    page: Math.max(1, parseInt(q.get("page"), 10) || 1),
    perPage: PER_PAGE.includes(parseInt(q.get("perPage"), 10)) ? parseInt(q.get("perPage"), 10) : 25,
    sort: q.get("sort") || "",
  };
  const flash = new Set();

  const total = h("span", { class: "muted", id: "record-total" });
  const head = h("thead");
  const body = h("tbody", { id: "records" });
  const pages = h("div");
  const perPage = h("select", { "aria-label": "Records per page" },
    PER_PAGE.map((n) => h("option", { value: String(n), selected: n === state.perPage }, `${n} per page`)));
  perPage.addEventListener("change", () => { state.perPage = Number(perPage.value); state.page = 1; reload(); });

  mount(root,
    h("div", { class: "toolbar" }, h("h2", {}, name), tabs(name, "records"), h("div", { class: "spacer" }),
      total, perPage,
      h("button", { type: "button", class: "primary", id: "new-record", onclick: guard(() => openForm(null)) }, "New record")),
    h("div", { class: "scroll" }, h("table", { class: "grid records", id: "records-table", dataset: { collection: name } }, head, body)),
    pages);

  const columns = [
    { key: "id", label: "id" },
    ...fields.map((f) => ({ key: f.name, label: f.name, type: f.type })),
    { key: "createdAt", label: "created" },
    { key: "updatedAt", label: "updated" },
  ];

  function renderHead() {
    mount(head, h("tr", {}, columns.map((c) => {
      const dir = state.sort === c.key ? "asc" : state.sort === `-${c.key}` ? "desc" : "";
      return h("th", { class: ["sortable", dir], dataset: { key: c.key }, "aria-sort": dir ? `${dir}ending` : "none" },
        h("button", { type: "button", class: "link", onclick: () => sortBy(c.key) }, c.label, dir === "asc" ? " ▲" : dir === "desc" ? " ▼" : ""));
    }), h("th", {}, "")));
  }

  function sortBy(key) {
    state.sort = state.sort === key ? `-${key}` : state.sort === `-${key}` ? "" : key;
    state.page = 1;
    reload();
  }

  async function load() {
    const page = await api.api("GET", `/api/${name}`, { query: { page: state.page, perPage: state.perPage, sort: state.sort } });
    if (!ctx.alive) return;
    if (page.items.length === 0 && state.page > 1 && state.page > page.totalPages) {
      state.page = Math.max(1, page.totalPages);
      return load();
    }
    const query = new URLSearchParams();
    if (state.page > 1) query.set("page", state.page);
    if (state.perPage !== 25) query.set("perPage", state.perPage);
    if (state.sort) query.set("sort", state.sort);
    const qs = query.toString();
    history.replaceState(null, "", `/_/collections/${name}${qs ? "?" + qs : ""}`);
    renderHead();
    total.textContent = `${page.totalItems} record${page.totalItems === 1 ? "" : "s"}`;
    mount(body, page.items.length ? page.items.map(row) :
      h("tr", {}, h("td", { colspan: columns.length + 1, class: "muted" }, "No records.")));
    mount(pages, pager(page.page, page.totalPages, (p) => { state.page = p; reload(); }));
    flash.clear();
  }

  function row(r) {
    return h("tr", { dataset: { id: r.id }, class: flash.has(r.id) ? "flash" : "" },
      columns.map((c) => c.key === "createdAt" || c.key === "updatedAt"
        ? h("td", { class: "time", title: r[c.key] }, fmtTime(r[c.key]))
        : cell(r[c.key], c.key === "id" ? "id" : c.type)),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "small", dataset: { action: "edit" }, onclick: guard(() => openForm(r)) }, "Edit"),
        h("button", { type: "button", class: "small danger", dataset: { action: "delete" }, onclick: guard(() => remove(r)) }, "Delete")));
  }

  const reload = guard(load);
  const reloadSoon = debounce(() => load().catch(() => {}), 150);
  ctx.cleanup(reloadSoon.cancel);
  ctx.subscribe(`${name}.*`, (e) => {
    if (e.type !== "reconnected" && e.payload && e.payload.id && !e.type.endsWith(".deleted")) flash.add(e.payload.id);
    reloadSoon();
  });
  await load();

  async function remove(r) {
    const ok = await confirmDanger("Delete this record?", `Record ${r.id} of ${name} is deleted. This cannot be undone.`);
    if (!ok) return;
    await api.api("DELETE", `/api/${name}/${r.id}`);
    notify("Record deleted");
    await load();
  }

  // ---- The form -----------------------------------------------------------------------------

  async function openForm(record) {
    const controls = fields.map((f) => control(f, record ? record[f.name] : undefined));
    const formError = h("p", { class: "error", role: "alert", hidden: true });
    const save = h("button", { type: "submit", class: "primary", id: "save-record" }, record ? "Save" : "Create");
    const cancel = h("button", { type: "button", id: "cancel-record" }, "Cancel");
    const form = h("form", { class: "record-form", id: "record-form", novalidate: true },
      record ? h("p", { class: "muted" }, `id ${record.id} · created ${fmtTime(record.createdAt)} · updated ${fmtTime(record.updatedAt)}`) : null,
      controls.map((c) => c.el),
      formError,
      h("div", { class: "buttons" }, cancel, save));
    const d = h("dialog", { class: "wide" }, h("h2", {}, record ? `Edit ${name} record` : `New ${name} record`), form);
    const close = () => { d.close(); d.remove(); };
    cancel.addEventListener("click", close);
    d.addEventListener("cancel", (e) => { e.preventDefault(); close(); });

    form.addEventListener("submit", guard(async (e) => {
      e.preventDefault();
      for (const c of controls) c.setError("");
      formError.hidden = true;
      const data = {};
      let bad = false;
      for (const c of controls) {
        if (record && !c.dirty()) continue;
        try {
          const v = c.read();
          if (record || v !== null) data[c.field.name] = v;
        } catch (err) {
          c.setError(err.message);
          bad = true;
        }
      }
      if (bad) return;
      if (record && Object.keys(data).length === 0) return close();
      save.disabled = true;
      try {
        const saved = record
          ? await api.api("PUT", `/api/${name}/${record.id}`, { body: data })
          : await api.api("POST", `/api/${name}`, { body: data });
        flash.add(saved.id);
        close();
        notify(record ? "Record saved" : "Record created");
        await load();
      } catch (err) {
        if (!err || !err.isApiError) throw err;
        const unplaced = [];
        for (const d2 of err.details || []) {
          const c = controls.find((x) => x.field.name === d2.field);
          if (c) c.setError(d2.message);
          else unplaced.push(d2.message);
        }
        if (!err.details || err.details.length === 0 || unplaced.length) {
          formError.textContent = unplaced.length ? unplaced.join("; ") : err.message;
          formError.hidden = false;
        }
        const first = controls.find((c) => c.hasError());
        if (first) first.focus();
      } finally {
        save.disabled = false;
      }
    }));

    document.body.appendChild(d);
    d.showModal();
    for (const c of controls) c.prepare && c.prepare().catch(() => {});
    if (controls.length) controls[0].focus();
  }
}

/** A form control for one field: its element, how to read the value, whether it changed. */
function control(f, value) {
  const id = `field-${f.name}`;
  const errorEl = h("div", { class: "field-error", id: `${id}-error`, dataset: { errorFor: f.name }, role: "alert" });
  let input;
  let read;
  let prepare = null;
  let extra = null;
  const emptyNull = () => (input.value === "" ? null : input.value);
  switch (f.type) {
    case "text":
      input = h("textarea", { id, rows: 4, value: value ?? "" });
      read = emptyNull;
      break;
    case "json":
      input = h("textarea", { id, rows: 6, class: "json", spellcheck: "false", value: value === null || value === undefined ? "" : JSON.stringify(value, null, 2) });
      read = () => {
        if (input.value.trim() === "") return null;
        try {
          return JSON.parse(input.value);
        } catch (e) {
          throw new Error(`Not valid JSON: ${e.message}`);
        }
      };
      break;
    case "integer":
    case "float":
      input = h("input", { id, type: "number", step: f.type === "integer" ? "1" : "any", value: value ?? "" });
      read = () => {
        if (input.validity.badInput) throw new Error("Not a number");
        if (input.value === "") return null;
        return Number(input.value);
      };
      break;
    case "boolean":
      input = h("select", { id },
        h("option", { value: "", selected: value !== true && value !== false }, "— (null)"),
        h("option", { value: "true", selected: value === true }, "true"),
        h("option", { value: "false", selected: value === false }, "false"));
      read = () => (input.value === "" ? null : input.value === "true");
      break;
    case "datetime":
      input = h("input", { id, type: "datetime-local", step: "1", value: toLocalInput(value) });
      extra = h("span", { class: "hint" }, "your local time; stored in UTC");
      read = () => {
        if (input.value === "") return null;
        const d = new Date(input.value);
        return Number.isNaN(d.getTime()) ? input.value : d.toISOString();
      };
      break;
    case "relation": {
      const list = h("datalist", { id: `${id}-options` });
      input = h("input", { id, type: "text", list: `${id}-options`, value: value ?? "", placeholder: `id of a ${f.collection || "?"} record`, autocomplete: "off" });
      extra = list;
      read = emptyNull;
      prepare = async () => mount(list, await relationOptions(f.collection));
      break;
    }
    case "file": {
      const list = h("datalist", { id: `${id}-options` });
      input = h("input", { id, type: "text", list: `${id}-options`, value: value ?? "", placeholder: "file id (fil_…)", autocomplete: "off" });
      const picker = h("input", { type: "file", class: "visually-hidden", "aria-label": `Upload a file for ${f.name}` });
      const progress = h("progress", { max: 100, value: 0, hidden: true });
      const upload = h("button", { type: "button", class: "small", onclick: () => picker.click() }, "Upload…");
      picker.addEventListener("change", guard(async () => {
        const file = picker.files[0];
        if (!file) return;
        progress.hidden = false;
        const meta = await api.upload(file, "protected", (sent, totalBytes) => { progress.value = (100 * sent) / totalBytes; });
        progress.value = 100;
        input.value = meta.id;
        notify(`Uploaded ${meta.filename} (${fmtBytes(meta.size)})`);
      }));
      extra = h("span", {}, list, upload, picker, progress);
      read = emptyNull;
      prepare = async () => {
        const { items } = await api.api("GET", "/api/admin/storage", { query: { limit: 100 } });
        mount(list, items.map((x) => h("option", { value: x.id }, `${x.filename} (${x.mimeType}, ${x.visibility})`)));
      };
      break;
    }
    default:
      input = h("input", { id, type: "text", value: value ?? "" });
      read = emptyNull;
  }
  const initial = input.value;
  input.setAttribute("aria-describedby", errorEl.id);
  const el = h("div", { class: "form-field", dataset: { field: f.name } },
    h("label", { for: id }, f.name, h("span", { class: "type" }, ` ${f.type}${f.required ? ", required" : ""}`)),
    input, extra, errorEl);
  return {
    field: f,
    el,
    read,
    prepare,
    dirty: () => input.value !== initial,
    focus: () => input.focus(),
    hasError: () => errorEl.textContent !== "",
    setError(message) {
      errorEl.textContent = message;
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

/** Choices for a relation field: up to 100 ids of the target, labelled. */
async function relationOptions(target) {
  if (target === "users") {
    const { items } = await api.api("GET", "/api/admin/users", { query: { limit: 100 } });
    return items.map((u) => h("option", { value: u.id }, u.email));
  }
  const page = await api.api("GET", `/api/${target}`, { query: { perPage: 100 } });
  return page.items.map((r) => {
    const label = Object.entries(r).find(([k, v]) => typeof v === "string" && !["id", "createdAt", "updatedAt"].includes(k));
    return h("option", { value: r.id }, label ? label[1].slice(0, 80) : r.id);
  });
}

/** An ISO time as a `datetime-local` value in local time. */
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}
