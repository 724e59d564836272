// Jobs: schedule, next run, last outcome and run history per job, "Run now", and the live feed
// of `job.*` events.

import * as api from "./api.js";
import { h, mount, fmtTime, guard, notify, badge, debounce } from "./dom.js";
import { feed } from "./functions.js";

const STATUS = { completed: "ok", failed: "bad", running: "warn" };

export default async function jobs(root, ctx) {
  const body = h("tbody", { id: "jobs" });
  const history = h("section", { id: "job-history", hidden: true });
  let open = null; // the job whose history is shown
  mount(root,
    h("section", {}, h("h2", {}, "Jobs"),
      h("table", { class: "grid", id: "jobs-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Schedule"), h("th", {}, "Next run"),
          h("th", {}, "Last run"), h("th", {}, ""))),
        body)),
    history,
    h("section", {}, h("h2", {}, "Live feed ", h("span", { class: "muted" }, "job.*")),
      feed(ctx, ctx.feeds.jobs, describe, "job-feed")));

  const path = (name) => `/api/admin/jobs/${encodeURIComponent(name)}`;

  async function load() {
    const { items } = await api.api("GET", "/api/admin/jobs");
    const runs = await Promise.all(items.map((j) => api.api("GET", `${path(j.name)}/runs`).then((r) => r.items, () => [])));
    if (!ctx.alive) return;
    mount(body, items.length ? items.map((j, i) => row(j, runs[i])) :
      h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No jobs: add TypeScript files to jobs/ (docs/jobs.md).")));
    if (open) showHistory(open, runs[items.findIndex((j) => j.name === open)] || []);
  }

  function row(j, runs) {
    const last = runs[runs.length - 1];
    const run = h("button", { type: "button", class: "small primary", dataset: { action: "run" }, disabled: j.running }, j.running ? "Running…" : "Run now");
    run.addEventListener("click", guard(async () => {
      run.disabled = true;
      run.textContent = "Running…";
      open = j.name;
      try {
        const r = await api.api("POST", `${path(j.name)}/run`);
        notify(`${j.name}: ${r.status}${r.error ? ` (${r.error})` : ""}`, r.status === "failed" ? "error" : "info");
      } finally {
        if (ctx.alive) await load();
      }
    }));
    const show = h("button", { type: "button", class: "small", dataset: { action: "history" }, onclick: () => {
      open = j.name;
      showHistory(j.name, runs);
    } }, `History (${runs.length})`);
    return h("tr", { dataset: { job: j.name } },
      h("td", {}, h("span", { class: "cell" }, j.name), h("div", { class: "hint" }, j.filePath)),
      h("td", {}, h("code", {}, j.schedule), h("div", { class: "hint" }, j.timezone)),
      h("td", { class: "time" }, j.running ? badge("running", "warn") : fmtTime(j.nextRun)),
      h("td", {}, last ? [badge(last.status, STATUS[last.status]), " ", fmtTime(last.startedAt)] : h("span", { class: "muted" }, "never")),
      h("td", { class: "actions" }, run, show));
  }

  function showHistory(name, runs) {
    history.hidden = false;
    // Runs name their node when several servers share the database: a column then.
    const nodes = runs.some((r) => r.node);
    mount(history,
      h("h2", {}, `Runs of ${name} `, h("span", { class: "muted" }, "newest first")),
      h("table", { class: "grid", id: "runs-table", dataset: { job: name } },
        h("thead", {}, h("tr", {}, h("th", {}, "Status"), h("th", {}, "Trigger"), h("th", { class: "num" }, "Attempt"),
          h("th", {}, "Started"), h("th", { class: "num" }, "Duration"), nodes ? h("th", {}, "Node") : null,
          h("th", {}, "Error"), h("th", {}, "Run id"))),
        h("tbody", {}, runs.length ? runs.slice().reverse().map((r) => h("tr", { dataset: { run: r.runId, status: r.status, trigger: r.trigger } },
          h("td", {}, badge(r.status, STATUS[r.status])), h("td", {}, r.trigger), h("td", { class: "num" }, r.attempt),
          h("td", { class: "time" }, fmtTime(r.startedAt)), h("td", { class: "num" }, r.durationMs === undefined ? "" : `${r.durationMs} ms`),
          nodes ? h("td", { class: "run-node" }, h("span", { class: "cell id" }, r.node || "")) : null,
          h("td", {}, r.error ? h("span", { class: "cell wide" }, r.error) : ""),
          h("td", {}, h("span", { class: "cell id" }, r.runId))))
          : h("tr", {}, h("td", { colspan: nodes ? 8 : 7, class: "muted" }, "No runs yet.")))));
  }

  const soon = debounce(() => load().catch(() => {}), 300);
  ctx.cleanup(soon.cancel);
  ctx.cleanup(ctx.feeds.jobs.listen(soon));
  ctx.every(15_000, soon);
  await load();
}

function describe(e) {
  const p = e.payload || {};
  const kind = e.type.endsWith(".failed") ? "bad" : e.type.endsWith(".completed") ? "ok" : "muted";
  const took = p.durationMs !== undefined ? ` in ${p.durationMs} ms` : "";
  return [kind, `${p.name || "?"}${p.attempt ? ` (attempt ${p.attempt})` : ""}${took}`, p.error];
}
