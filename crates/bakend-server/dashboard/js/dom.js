// Building the page. Every element of the dashboard is made by `h`, which only ever creates
// elements and text nodes: a value from the server becomes text, never markup. The page's
// Content-Security-Policy (Trusted Types) makes `innerHTML` and friends throw, so there is no
// other way to put HTML in the page by accident.

// Attributes that would turn a value into a navigation or a resource load are only accepted
// for URLs the dashboard makes itself.
const SAFE_URL = /^(\/_\/|\/api\/|blob:|#)/;

/** `h("tr", {class: "x", onclick: fn}, child, "text", [more])` → an element. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) {
      if (typeof v !== "function") throw new TypeError(`${k} must be a function`);
      el.addEventListener(k.slice(2), v);
    } else if (k === "style") throw new TypeError("no style attributes (CSP): use a class");
    else if ((k === "href" || k === "src" || k === "action") && !SAFE_URL.test(String(v))) {
      throw new TypeError(`refusing ${k}=${String(v).slice(0, 40)}`);
    } else if (k in PROPERTIES) el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

// Set as DOM properties (their attribute is only the initial value, or they are booleans).
const PROPERTIES = { value: 1, checked: 1, disabled: 1, selected: 1, hidden: 1, open: 1, indeterminate: 1 };

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces `el`'s content. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A link inside the dashboard (handled by the router, see main.js). */
export function link(path, ...children) {
  return h("a", { href: path }, ...children);
}

/** A record value as one line of text: strings as they are, the rest as JSON. */
export function text(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** A table cell showing all of `v`, clipped by CSS (`.cell`); the full value is in the DOM. */
export function cell(v, cls) {
  const t = text(v);
  return h("td", { class: cls }, h("span", { class: ["cell", v === null || v === undefined ? "null" : ""], title: t }, t));
}

/** A timestamp in local time, `2026-12-04 15:59:28`: short, sortable, one line in a table. */
export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function fmtClock(iso) {
  const d = iso ? new Date(iso) : new Date();
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function fmtBytes(n) {
  if (typeof n !== "number") return "";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function fmtNumber(n) {
  return typeof n === "number" ? n.toLocaleString() : "–";
}

// ---- Notices -----------------------------------------------------------------------------

let toasts;

/** A short message in the corner; errors stay until dismissed or replaced by the next few. */
export function notify(message, kind = "info") {
  if (!toasts) {
    toasts = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
    document.body.appendChild(toasts);
  }
  const t = h("div", { class: ["toast", kind] }, h("span", {}, message),
    h("button", { class: "link", "aria-label": "Dismiss", onclick: () => t.remove() }, "×"));
  toasts.appendChild(t);
  while (toasts.children.length > 4) toasts.firstChild.remove();
  if (kind !== "error") setTimeout(() => t.remove(), 4000);
  return t;
}

/**
 * Wraps an event handler: an API error (or an unreachable server) becomes a notice. Anything
 * else is a bug: it is shown and rethrown, so it surfaces as an uncaught error (the browser
 * tests fail on those).
 */
export function guard(fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      notify(errorText(e), "error");
      if (!(e && e.isApiError)) throw e;
    }
  };
}

export function errorText(e) {
  if (e && e.isApiError) return e.message;
  return `Unexpected error: ${e && e.message ? e.message : e}`;
}

// ---- Dialogs -----------------------------------------------------------------------------

/**
 * A modal `<dialog>` with `body` and buttons; resolves with the value of the button that
 * closed it (`null` for Escape / Cancel). `buttons`: [{label, value, kind, disabled}].
 */
export function dialog(title, body, buttons, { wide = false, onOpen } = {}) {
  return new Promise((resolve) => {
    const btns = buttons.map((b) =>
      h("button", { type: "button", class: b.kind || "", value: b.value, disabled: b.disabled,
        onclick: () => finish(b.value) }, b.label));
    const d = h("dialog", { class: wide ? "wide" : "" },
      h("h2", {}, title), body, h("div", { class: "buttons" }, btns));
    let done = false;
    function finish(v) {
      if (done) return;
      done = true;
      d.close();
      d.remove();
      resolve(v);
    }
    d.addEventListener("cancel", (e) => { e.preventDefault(); finish(null); });
    document.body.appendChild(d);
    d.showModal();
    if (onOpen) onOpen(d, btns, finish);
  });
}

/**
 * Asks before something that cannot be undone. With `typed`, the confirm button stays disabled
 * until that text is typed.
 */
export async function confirmDanger(title, message, { confirm = "Delete", typed } = {}) {
  const input = typed ? h("input", { type: "text", autocomplete: "off", "aria-label": `Type ${typed} to confirm` }) : null;
  const body = h("div", {}, h("p", {}, message),
    typed ? h("label", {}, "Type ", h("code", {}, typed), " to confirm", input) : null);
  const v = await dialog(title, body, [
    { label: "Cancel", value: "cancel" },
    { label: confirm, value: "ok", kind: "danger", disabled: !!typed },
  ], {
    onOpen: (d, btns) => {
      if (input) {
        input.addEventListener("input", () => { btns[1].disabled = input.value !== typed; });
        input.focus();
      } else btns[1].focus();
    },
  });
  return v === "ok";
}

/** A labelled value for the summary cards. */
export function stat(label, value, key) {
  return h("div", { class: "stat" }, h("div", { class: "value", dataset: { stat: key } }, value), h("div", { class: "label" }, label));
}

/** A small status label. */
export function badge(textValue, kind) {
  return h("span", { class: ["badge", kind] }, textValue);
}

/** A pager: « page x of y » with previous/next. */
export function pager(page, totalPages, go) {
  return h("div", { class: "pager" },
    h("button", { type: "button", disabled: page <= 1, onclick: () => go(page - 1) }, "‹ Previous"),
    h("span", {}, `Page ${page} of ${Math.max(totalPages, 1)}`),
    h("button", { type: "button", disabled: page >= totalPages, onclick: () => go(page + 1) }, "Next ›"));
}

/** Runs `fn` at most once per `ms`, after the last call. */
export function debounce(fn, ms) {
  let t = null;
  const wrapped = (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
  wrapped.cancel = () => clearTimeout(t);
  return wrapped;
}
