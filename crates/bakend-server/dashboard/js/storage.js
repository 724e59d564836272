// Storage: upload with progress, browse, preview, download, delete. Protected files are fetched
// with the token and shown from `blob:` URLs; no token ever goes into a URL. A preview is made
// only for raster images and plain text, re-typed by the page, so a stored HTML or SVG file is
// never rendered as a document (and opening a preview in a new tab cannot run it).

import * as api from "./api.js";
import { h, mount, fmtTime, fmtBytes, confirmDanger, guard, notify, pager, badge, dialog, debounce } from "./dom.js";

const LIMIT = 50;
const IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"]);
const TEXT = new Set(["text/plain", "text/csv", "application/json"]);
const TEXT_PREVIEW_BYTES = 256 * 1024;

export default async function storage(root, ctx) {
  let page = 1;
  const picker = h("input", { type: "file", id: "upload-file", "aria-label": "File to upload" });
  const visibility = h("select", { id: "upload-visibility", "aria-label": "Visibility" },
    h("option", { value: "protected", selected: true }, "protected (owner and admins)"),
    h("option", { value: "public" }, "public (anyone with the id)"));
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const status = h("span", { id: "upload-status", class: "muted", "aria-live": "polite" });
  const uploadButton = h("button", { type: "submit", class: "primary", id: "upload-button" }, "Upload");
  const form = h("form", { class: "upload", id: "upload-form" }, picker, visibility, uploadButton, progress, status);
  const body = h("tbody", { id: "files" });
  const pages = h("div");
  const total = h("span", { class: "muted" });

  form.addEventListener("submit", guard(async (e) => {
    e.preventDefault();
    const file = picker.files[0];
    if (!file) {
      status.textContent = "Choose a file first.";
      return;
    }
    uploadButton.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `0% of ${fmtBytes(file.size)}`;
    try {
      const meta = await api.upload(file, visibility.value, (sent, size) => {
        progress.value = Math.round((100 * sent) / size);
        status.textContent = `${progress.value}% of ${fmtBytes(size)}`;
      });
      progress.value = 100;
      status.textContent = `Uploaded ${meta.filename} (${fmtBytes(meta.size)}, ${meta.visibility})`;
      picker.value = "";
      page = 1;
      await load();
    } catch (err) {
      status.textContent = err && err.isApiError ? `Upload failed: ${err.message}` : "Upload failed";
      throw err;
    } finally {
      uploadButton.disabled = false;
    }
  }));

  mount(root,
    h("section", {}, h("h2", {}, "Upload"), form),
    h("section", {},
      h("div", { class: "toolbar" }, h("h2", {}, "Files"), h("div", { class: "spacer" }), total),
      h("div", { class: "scroll" }, h("table", { class: "grid", id: "files-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", { class: "num" }, "Size"),
          h("th", {}, "Visibility"), h("th", {}, "Owner"), h("th", {}, "Uploaded"), h("th", {}, "id"), h("th", {}, ""))),
        body)),
      pages));

  async function load() {
    const r = await api.api("GET", "/api/admin/storage", { query: { limit: LIMIT, offset: (page - 1) * LIMIT } });
    if (!ctx.alive) return;
    total.textContent = `${r.total} file${r.total === 1 ? "" : "s"}`;
    mount(body, r.items.length ? r.items.map(row) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No files.")));
    mount(pages, pager(page, Math.max(1, Math.ceil(r.total / LIMIT)), (p) => { page = p; load().catch(() => {}); }));
  }

  function row(f) {
    return h("tr", { dataset: { id: f.id } },
      h("td", {}, h("span", { class: "cell", title: f.filename }, f.filename)),
      h("td", {}, h("span", { class: "cell" }, f.mimeType)),
      h("td", { class: "num" }, fmtBytes(f.size)),
      h("td", {}, badge(f.visibility, f.visibility === "public" ? "warn" : "muted")),
      h("td", {}, h("span", { class: "cell id" }, f.userId || "")),
      h("td", { class: "time" }, fmtTime(f.createdAt)),
      h("td", {}, h("span", { class: "cell id" }, f.id)),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "small", dataset: { action: "preview" }, onclick: guard(() => preview(f)) }, "Preview"),
        h("button", { type: "button", class: "small", dataset: { action: "download" }, onclick: guard(() => download(f)) }, "Download"),
        h("button", { type: "button", class: "small danger", dataset: { action: "delete" }, onclick: guard(() => remove(f)) }, "Delete")));
  }

  async function preview(f) {
    let content;
    let url = null;
    if (IMAGES.has(f.mimeType)) {
      const blob = await api.fetchBlob(`/api/storage/${f.id}`);
      url = URL.createObjectURL(new Blob([blob], { type: f.mimeType }));
      content = h("img", { src: url, alt: f.filename, class: "preview", id: "preview-image" });
    } else if (TEXT.has(f.mimeType) && f.size <= TEXT_PREVIEW_BYTES) {
      const blob = await api.fetchBlob(`/api/storage/${f.id}`);
      content = h("pre", { class: "preview", id: "preview-text" }, await blob.text());
    } else {
      content = h("p", { class: "muted", id: "preview-none" }, `No preview for ${f.mimeType}: download it instead.`);
    }
    await dialog(f.filename, h("div", {}, content, h("p", { class: "muted" }, `${f.mimeType} · ${fmtBytes(f.size)} · ${f.visibility}`)),
      [{ label: "Close", value: "close" }], { wide: true });
    if (url) URL.revokeObjectURL(url);
  }

  async function download(f) {
    const blob = await api.fetchBlob(`/api/storage/${f.id}`);
    // Typed as plain bytes: the browser saves it, it never renders it.
    const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
    h("a", { href: url, download: f.filename }).click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  async function remove(f) {
    const ok = await confirmDanger(`Delete ${f.filename}?`,
      "The file is deleted. Records that reference it keep the dangling id.");
    if (!ok) return;
    await api.api("DELETE", `/api/storage/${f.id}`);
    notify(`${f.filename} deleted`);
    await load();
  }

  const soon = debounce(() => load().catch(() => {}), 200);
  ctx.cleanup(soon.cancel);
  ctx.subscribe("storage.*", soon);
  await load();
}
