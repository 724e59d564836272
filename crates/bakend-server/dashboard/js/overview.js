// Overview: how much there is (collections, records per collection, users, files, jobs) and
// what realtime is doing now (GET /api/admin/realtime: the cluster's totals, and each node's
// own figures when several servers share the database), both refreshing by themselves.

import { api } from "./api.js";
import { h, mount, stat, badge, fmtNumber, fmtClock, link, debounce } from "./dom.js";

const REALTIME = [
  ["connections", "Connections"],
  ["subscriptions", "Subscriptions"],
  ["eventsInPerSecond", "Events in / s"],
  ["framesOutPerSecond", "Frames out / s"],
  ["slowConsumerCloses", "Slow-consumer closes"],
  ["tokenExpiredCloses", "Token-expired closes"],
  ["deliveryWaitTimeouts", "Delivery wait timeouts"],
  ["queueHighWater", "Queue high water"],
];

export default async function overview(root, ctx) {
  const counts = h("div", { class: "stats", id: "counts" });
  const perCollection = h("tbody");
  const rt = h("div", { class: "stats", id: "realtime-stats" });
  const nodeRows = h("tbody");
  const nodes = h("section", { hidden: true, id: "nodes-section" },
    h("h2", {}, "Nodes ", h("span", { class: "muted" }, "(others as of their last heartbeat, at most 1 s old)")),
    h("table", { class: "grid", id: "nodes" },
      h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", { class: "num" }, "Connections"),
        h("th", { class: "num" }, "Subscriptions"), h("th", { class: "num" }, "Events in / s"),
        h("th", { class: "num" }, "Frames out / s"), h("th", {}, "NATS"),
        h("th", { class: "num" }, "Filled from journal"))),
      nodeRows));
  const updated = h("span", { class: "muted", id: "overview-updated" });
  mount(root,
    h("section", {}, h("h2", {}, "Counts ", updated), counts),
    h("section", {}, h("h2", {}, "Realtime ", h("span", { class: "muted" }, "(refreshes every 2 s)")), rt),
    nodes,
    h("section", {}, h("h2", {}, "Records per collection"),
      h("table", { class: "grid", id: "per-collection" },
        h("thead", {}, h("tr", {}, h("th", {}, "Collection"), h("th", { class: "num" }, "Records"))),
        perCollection)));

  async function loadCounts() {
    const [cols, usersPage, filesPage, jobsList] = await Promise.all([
      api("GET", "/api/admin/collections"),
      api("GET", "/api/admin/users", { query: { limit: 1 } }),
      api("GET", "/api/admin/storage", { query: { limit: 1 } }),
      api("GET", "/api/admin/jobs"),
    ]);
    const perCol = await Promise.all(cols.items.map(async (c) => {
      try {
        const page = await api("GET", `/api/${c.name}`, { query: { perPage: 1 } });
        return [c.name, page.totalItems];
      } catch {
        return [c.name, null]; // a collection whose name the system routes shadow
      }
    }));
    if (!ctx.alive) return;
    const records = perCol.reduce((n, [, c]) => n + (c || 0), 0);
    mount(counts,
      stat("Collections", fmtNumber(cols.items.length), "collections"),
      stat("Records", fmtNumber(records), "records"),
      stat("Users", fmtNumber(usersPage.total), "users"),
      stat("Files", fmtNumber(filesPage.total), "files"),
      stat("Jobs", fmtNumber(jobsList.items.length), "jobs"));
    mount(perCollection, perCol.length
      ? perCol.map(([name, n]) => h("tr", { dataset: { collection: name } },
        h("td", {}, link(`/_/collections/${name}`, name)),
        h("td", { class: "num" }, n === null ? "–" : fmtNumber(n))))
      : h("tr", {}, h("td", { colspan: 2, class: "muted" }, "No collections yet. ", link("/_/collections/new", "Create one"), ".")));
    updated.textContent = `updated ${fmtClock()}`;
  }

  async function loadRealtime() {
    const s = await api("GET", "/api/admin/realtime");
    if (!ctx.alive) return;
    mount(rt, REALTIME.map(([k, label]) => stat(label,
      k === "queueHighWater" ? `${fmtNumber(s[k])} / ${fmtNumber(s.queueCapacity)}` : fmtNumber(s[k]), k)));
    // One server: its figures are the totals above. Several: a row each.
    const list = Array.isArray(s.nodes) ? s.nodes : [];
    nodes.hidden = list.length < 2;
    mount(nodeRows, list.map((n) => {
      const nats = n.cluster?.nats || "off";
      return h("tr", { dataset: { node: n.id } },
        h("td", {}, h("span", { class: "cell id" }, n.id), n.id === s.node ? [" ", badge("this node", "ok")] : ""),
        h("td", { class: "num" }, fmtNumber(n.connections)), h("td", { class: "num" }, fmtNumber(n.subscriptions)),
        h("td", { class: "num" }, fmtNumber(n.eventsInPerSecond)), h("td", { class: "num" }, fmtNumber(n.framesOutPerSecond)),
        h("td", {}, badge(nats, nats === "connected" ? "ok" : nats === "disconnected" ? "bad" : "")),
        h("td", { class: "num" }, fmtNumber(n.cluster?.filledFromJournal ?? 0)));
    }));
  }

  const quiet = (fn) => () => fn().catch(() => {}); // a missed refresh is retried by the next
  ctx.every(2000, quiet(loadRealtime));
  ctx.every(5000, quiet(loadCounts));
  // Counts that events announce move at once.
  const soon = debounce(quiet(loadCounts), 300);
  ctx.cleanup(soon.cancel);
  for (const ch of ["system.collection.*", "auth.register", "storage.*", "job.*"]) ctx.subscribe(ch, soon);
  await Promise.all([loadCounts(), loadRealtime()]);
}
