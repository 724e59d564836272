// The collection editor: fields, options and permissions, for a new collection or an existing
// one. Editing previews the migration first (PUT …?dryRun=true: the planner `bak migrate` and
// the admin API use), and applies exactly the definition it previewed.
//
// The form edits a copy of the stored definition in place. A control writes its key only when
// it is changed, so whatever the form does not show — unknown keys, indexes, rule expressions —
// goes back to the server as it came. "Edit as JSON" shows (and edits) all of it.

import { api, ApiError } from "./api.js";
import { h, mount, link, guard, notify, badge } from "./dom.js";

const TYPES = ["string", "text", "integer", "float", "boolean", "datetime", "json", "relation", "file"];
const OPS = ["create", "read", "update", "delete"];
const RULES = ["public", "authenticated", "owner", "admin"];
const MIN_MAX = new Set(["string", "text", "integer", "float"]);
const REGEX = new Set(["string", "text"]);

/** The Records / Schema tabs of one collection. */
export function tabs(name, active) {
  return h("nav", { class: "tabs" },
    h("a", { href: `/_/collections/${name}`, class: active === "records" ? "active" : "" }, "Records"),
    h("a", { href: `/_/collections/${name}/schema`, class: active === "schema" ? "active" : "" }, "Schema"));
}

export default async function schemaView(root, ctx) {
  const [name] = ctx.params;
  const [meta, all] = await Promise.all([
    api("GET", `/api/admin/collections/${name}`),
    api("GET", "/api/admin/collections"),
  ]);
  if (!ctx.alive) return;
  editor(root, ctx, {
    mode: "edit",
    definition: meta.definition,
    collections: all.items.map((c) => c.name),
    onDone: () => ctx.navigate(`/_/collections/${name}/schema`, { replace: true }),
  });
}

/**
 * `mode`: "create" or "edit"; `definition`: the stored definition (left untouched);
 * `collections`: names for relation targets; `onDone(name)` after a create or apply.
 */
export function editor(root, ctx, { mode, definition, collections, onDone }) {
  const editing = mode === "edit";
  const stored = new Set((definition.fields || []).map((f) => f && f.name));
  const hadPermissions = Object.prototype.hasOwnProperty.call(definition, "permissions");
  let def = structuredClone(definition);
  let rows = [];
  let jsonMode = false;
  let previewed = null; // the JSON text of the definition the shown plan is for

  const errors = h("div", { class: "errors", id: "schema-errors", role: "alert", hidden: true });
  const fieldsBody = h("tbody", { id: "fields" });
  const planBox = h("section", { class: "plan", id: "plan", hidden: true });
  const json = h("textarea", { class: "json", id: "definition-json", rows: 20, spellcheck: "false", "aria-label": "Definition as JSON" });
  const formPart = h("div", {});
  const jsonPart = h("div", { hidden: true }, h("p", { class: "muted" }, "The whole definition, including keys the form does not show."), json);
  const modeButton = h("button", { type: "button", id: "json-toggle" }, "Edit as JSON");
  const nameInput = h("input", { type: "text", id: "collection-name", value: def.name || "", placeholder: "e.g. posts", pattern: "[a-z][a-z0-9_]*", required: true, "aria-label": "Collection name" });
  nameInput.addEventListener("input", () => { def.name = nameInput.value.trim(); changed(); });

  function rowFor(f) {
    let orig = null;
    if (editing && f && stored.has(f.name)) orig = f.name;
    else if (editing && f && stored.has(f.renamedFrom)) orig = f.renamedFrom;
    const hadRenamedFrom = !!f && Object.prototype.hasOwnProperty.call(f, "renamedFrom");
    return { field: f, orig, hadRenamedFrom, origRenamedFrom: f ? f.renamedFrom : undefined };
  }
  rows = (def.fields || []).map(rowFor);

  function changed() {
    if (previewed !== null) {
      previewed = null;
      mount(planBox, h("p", { class: "muted" }, "The definition changed since the preview: preview again before applying."));
    }
    errors.hidden = true;
  }

  // ---- Fields -----------------------------------------------------------------------------

  function renderFields() {
    def.fields = rows.map((r) => r.field);
    mount(fieldsBody, rows.length ? rows.map((r, i) => fieldRow(r, i)) :
      h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No fields yet.")));
  }

  function fieldRow(r, i) {
    const f = r.field;
    if (!f || typeof f !== "object") {
      return h("tr", {}, h("td", { colspan: 6, class: "muted" }, `Not a field object: ${JSON.stringify(f)} (edit as JSON)`));
    }
    const name = h("input", { type: "text", class: "fname", value: f.name ?? "", placeholder: "field_name", "aria-label": "Field name" });
    name.addEventListener("input", () => {
      f.name = name.value.trim();
      if (r.orig && f.name !== r.orig) f.renamedFrom = r.orig;
      else if (r.orig) {
        if (r.hadRenamedFrom) f.renamedFrom = r.origRenamedFrom;
        else delete f.renamedFrom;
      }
      renamed.hidden = !(r.orig && f.name !== r.orig);
      changed();
    });
    const renamed = h("div", { class: "hint", hidden: !(r.orig && f.name !== r.orig) }, `renamed from ${r.orig}: its data is kept`);
    const known = TYPES.includes(f.type);
    const type = h("select", { class: "ftype", "aria-label": "Field type" },
      known ? null : h("option", { value: String(f.type), selected: true }, String(f.type)),
      TYPES.map((t) => h("option", { value: t, selected: f.type === t }, t)));
    const options = h("div", { class: "options" });
    type.addEventListener("change", () => {
      f.type = type.value;
      // Options the new type does not take would only be refused by the server.
      if (!MIN_MAX.has(f.type)) { delete f.min; delete f.max; }
      if (!REGEX.has(f.type)) delete f.regex;
      if (f.type !== "relation") delete f.collection;
      else if (!f.collection) f.collection = "users";
      if (f.type === "json") delete f.unique;
      delete f.default; // a default must be a value of the new type: set it again
      renderOptions();
      unique.disabled = f.type === "json";
      unique.checked = f.unique === true;
      changed();
    });
    const required = flag(f, "required", "Required");
    const unique = flag(f, "unique", "Unique");
    unique.disabled = f.type === "json";

    function renderOptions() {
      const parts = [];
      if (f.type === "relation") {
        const targets = ["users", ...collections.filter((c) => c !== "users")];
        if (f.collection && !targets.includes(f.collection)) targets.push(f.collection);
        const sel = h("select", { class: "ftarget", "aria-label": "Relation target" },
          targets.map((t) => h("option", { value: t, selected: f.collection === t }, t)));
        sel.addEventListener("change", () => { f.collection = sel.value; changed(); });
        parts.push(h("label", {}, "→ ", sel));
      }
      if (MIN_MAX.has(f.type)) parts.push(numberOption(f, "min"), numberOption(f, "max"));
      if (REGEX.has(f.type)) parts.push(textOption(f, "regex", "regex", "none"));
      parts.push(defaultOption(f));
      mount(options, parts);
    }
    renderOptions();

    const up = h("button", { type: "button", class: "small", title: "Move up", disabled: i === 0, onclick: () => move(i, -1) }, "↑");
    const down = h("button", { type: "button", class: "small", title: "Move down", disabled: i === rows.length - 1, onclick: () => move(i, 1) }, "↓");
    const remove = h("button", { type: "button", class: "small danger", title: "Remove field", onclick: () => {
      rows.splice(i, 1);
      renderFields();
      changed();
    } }, "Remove");
    return h("tr", { dataset: { field: f.name ?? "" } },
      h("td", {}, name, renamed), h("td", {}, type),
      h("td", {}, required), h("td", {}, unique),
      h("td", {}, options), h("td", { class: "actions" }, up, down, remove));
  }

  function move(i, by) {
    const [r] = rows.splice(i, 1);
    rows.splice(i + by, 0, r);
    renderFields();
    changed();
  }

  function flag(f, key, label) {
    const box = h("input", { type: "checkbox", class: `f${key}`, checked: f[key] === true, "aria-label": label });
    box.addEventListener("change", () => {
      if (box.checked) f[key] = true;
      else delete f[key];
      changed();
    });
    return box;
  }

  function numberOption(f, key) {
    const input = h("input", { type: "number", step: "any", class: `f${key} narrow`, value: f[key] ?? "", "aria-label": key });
    input.addEventListener("input", () => {
      if (input.value === "") delete f[key];
      else f[key] = Number(input.value);
      changed();
    });
    return h("label", {}, `${key} `, input);
  }

  function textOption(f, key, label, placeholder) {
    const input = h("input", { type: "text", class: `f${key}`, value: f[key] ?? "", placeholder, "aria-label": label });
    input.addEventListener("input", () => {
      if (input.value === "") delete f[key];
      else f[key] = input.value;
      changed();
    });
    return h("label", {}, `${label} `, input);
  }

  function defaultOption(f) {
    const has = Object.prototype.hasOwnProperty.call(f, "default");
    const input = h("input", { type: "text", class: "fdefault", value: has ? JSON.stringify(f.default) : "", placeholder: "none", "aria-label": "Default (JSON)" });
    input.addEventListener("input", () => {
      const v = input.value.trim();
      if (v === "") delete f.default;
      else {
        try {
          f.default = JSON.parse(v);
        } catch {
          f.default = v; // a bare word: a string default
        }
      }
      changed();
    });
    return h("label", { title: "The value new records get without one, as JSON (\"draft\", 0, true)" }, "default ", input);
  }

  // ---- Permissions ------------------------------------------------------------------------

  function permissionInputs() {
    const perms = def.permissions && typeof def.permissions === "object" ? def.permissions : null;
    return h("div", { class: "permissions", id: "permissions" },
      h("datalist", { id: "rule-keywords" }, RULES.map((r) => h("option", { value: r }))),
      OPS.map((op) => {
        const cur = perms && Object.prototype.hasOwnProperty.call(perms, op) ? perms[op] : undefined;
        const plain = cur === undefined || typeof cur === "string";
        const input = h("input", { type: "text", list: "rule-keywords", name: op, class: "rule",
          value: plain ? cur ?? "" : JSON.stringify(cur), placeholder: "public (default)",
          readonly: !plain, title: plain ? "" : "Not a plain rule: edit it as JSON", "aria-label": `${op} rule` });
        input.addEventListener("input", () => {
          const v = input.value.trim();
          if (v === "") {
            if (def.permissions && typeof def.permissions === "object") delete def.permissions[op];
            if (def.permissions && !hadPermissions && Object.keys(def.permissions).length === 0) delete def.permissions;
          } else {
            if (!def.permissions || typeof def.permissions !== "object") def.permissions = {};
            def.permissions[op] = v;
          }
          changed();
        });
        return h("label", {}, h("span", {}, op), input);
      }));
  }

  // ---- JSON mode ----------------------------------------------------------------------------

  function currentDefinition() {
    if (!jsonMode) return def;
    try {
      return JSON.parse(json.value);
    } catch (e) {
      throw new ApiError(400, "invalid_json", `The JSON is not valid: ${e.message}`);
    }
  }

  modeButton.addEventListener("click", () => {
    if (!jsonMode) {
      json.value = JSON.stringify(def, null, 2);
      jsonMode = true;
    } else {
      let parsed;
      try {
        parsed = JSON.parse(json.value);
      } catch (e) {
        showErrors(new ApiError(400, "invalid_json", `The JSON is not valid: ${e.message}`));
        return;
      }
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
        showErrors(new ApiError(400, "invalid_json", "A definition is a JSON object"));
        return;
      }
      def = parsed;
      if (!Array.isArray(def.fields)) def.fields = [];
      rows = def.fields.map(rowFor);
      jsonMode = false;
      renderForm();
    }
    formPart.hidden = jsonMode;
    jsonPart.hidden = !jsonMode;
    modeButton.textContent = jsonMode ? "Back to the form" : "Edit as JSON";
  });
  json.addEventListener("input", changed);

  function renderForm() {
    nameInput.value = def.name || "";
    mount(formPart,
      editing ? null : h("label", { class: "block" }, "Name", nameInput),
      h("h3", {}, "Fields"),
      h("table", { class: "grid fields" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Required"),
          h("th", {}, "Unique"), h("th", {}, "Options"), h("th", {}, ""))),
        fieldsBody),
      h("button", { type: "button", id: "add-field", onclick: () => {
        rows.push(rowFor({ name: "", type: "string" }));
        renderFields();
        changed();
        const inputs = fieldsBody.querySelectorAll("input.fname");
        if (inputs.length) inputs[inputs.length - 1].focus();
      } }, "Add field"),
      h("h3", {}, "Permissions"),
      h("p", { class: "muted" }, "Who may create, read, update and delete records: public, authenticated, owner (the record's user_id), admin, or an expression such as published = true || user_id = @request.auth.id (docs/auth.md). Empty means public."),
      permissionInputs());
    renderFields();
  }

  // ---- Errors, preview, apply ---------------------------------------------------------------

  function showErrors(e) {
    const lines = e.details && e.details.length
      ? e.details.map((d) => d.message || `${d.field}: ${d.rule}`)
      : String(e.message).split("; ");
    mount(errors, h("strong", {}, e.details && e.details.length ? "Refused:" : "Not accepted:"),
      h("ul", {}, lines.map((l) => h("li", {}, l))));
    errors.hidden = false;
  }

  async function run(fn) {
    errors.hidden = true;
    try {
      await fn();
    } catch (e) {
      if (e && e.isApiError) showErrors(e);
      else throw e;
    }
  }

  const OUTCOME = {
    unchanged: ["No changes", "muted"],
    ready: ["Ready to apply", "ok"],
    needsForce: ["Needs force", "warn"],
    blocked: ["Blocked by existing records", "bad"],
  };

  async function preview() {
    const d = currentDefinition();
    const text = JSON.stringify(d);
    const plan = await api("PUT", `/api/admin/collections/${encodeURIComponent(definition.name)}`, { query: { dryRun: "true" }, body: d });
    previewed = text;
    renderPlan(plan, text);
  }

  function renderPlan(plan, text) {
    const [label, kind] = OUTCOME[plan.outcome] || [plan.outcome, ""];
    const accept = h("input", { type: "checkbox", id: "accept-force" });
    const apply = h("button", { type: "button", class: "primary", id: "apply",
      disabled: !["ready", "unchanged"].includes(plan.outcome),
      onclick: guard(() => run(() => applyPlan(text, false))) }, "Apply");
    const force = h("button", { type: "button", class: "danger", id: "apply-force", disabled: true,
      onclick: guard(() => run(() => applyPlan(text, true))) }, "Apply with force");
    accept.addEventListener("change", () => { force.disabled = !accept.checked; });
    mount(planBox,
      h("h3", {}, "Migration plan ", badge(label, kind)),
      plan.changes.length
        ? h("ul", { id: "plan-changes" }, plan.changes.map((c) => h("li", {}, c)))
        : h("p", { class: "muted", id: "plan-changes" }, "The definition is the same as the stored one."),
      plan.rebuild ? h("p", { class: "warn", id: "plan-rebuild" }, "The table will be rebuilt: every row is copied to a new table in one transaction (other writes wait until it is done).") : null,
      plan.blockers.length ? h("table", { class: "grid", id: "plan-blockers" },
        h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Problem"), h("th", { class: "num" }, "Records"),
          h("th", {}, "Examples"), h("th", {}, "With force"))),
        h("tbody", {}, plan.blockers.map((b) => h("tr", {},
          h("td", {}, b.field), h("td", {}, `${b.rule}: ${b.problem}`), h("td", { class: "num" }, b.count),
          h("td", {}, h("span", { class: "cell wide" }, b.samples.join(", "))),
          h("td", {}, b.force ? b.force : h("strong", {}, "cannot be forced")))))) : null,
      h("div", { class: "buttons" }, apply,
        plan.outcome === "needsForce"
          ? [h("label", { class: "accept" }, accept, " I accept what force does to these records"), force]
          : null));
    planBox.hidden = false;
  }

  async function applyPlan(text, force) {
    if (previewed !== text) throw new ApiError(400, "stale", "The definition changed since the preview: preview again.");
    const name = definition.name;
    await api("PUT", `/api/admin/collections/${encodeURIComponent(name)}`, { query: force ? { force: "true" } : {}, body: JSON.parse(text) });
    notify(`Collection ${name} updated`);
    onDone(name);
  }

  async function createCollection() {
    const d = currentDefinition();
    const c = await api("POST", "/api/admin/collections", { body: d });
    notify(`Collection ${c.name} created`);
    onDone(c.name);
  }

  const actions = editing
    ? h("div", { class: "buttons" }, h("button", { type: "button", class: "primary", id: "preview", onclick: guard(() => run(preview)) }, "Preview changes"), modeButton)
    : h("div", { class: "buttons" }, h("button", { type: "button", class: "primary", id: "create", onclick: guard(() => run(createCollection)) }, "Create collection"), modeButton);

  renderForm();
  mount(root,
    editing ? h("div", { class: "toolbar" }, h("h2", {}, definition.name), tabs(definition.name, "schema")) : h("h2", {}, "New collection"),
    formPart, jsonPart, errors, actions, planBox,
    editing ? null : h("p", { class: "muted" }, "The definition is written to collections/<name>.json. ", link("/_/collections", "Back to collections")));
}
