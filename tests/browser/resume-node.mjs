// The reference resuming client (examples/realtime-demo/resume.js) in Node ≥ 20 against a
// running `bak`: it subscribes, goes away while 3 posts are written, comes back, and must get
// exactly those 3 events with "recovered" — then a live one.
//
//   node --experimental-websocket resume-node.mjs <server url> <path of resume.js>
// (Node 22+ has a global WebSocket; the flag is harmless there.)

import { createRequire } from "node:module";

const [server, clientPath] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { ResumingClient } = require(clientPath);

const watchdog = setTimeout(() => fail("timed out"), 30_000);
function fail(msg) {
  console.error(`resume client (node) FAILED: ${msg}`);
  process.exit(1);
}

const post = async (title) => {
  const r = await fetch(`${server}/api/posts`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ title }),
  });
  if (r.status !== 201) fail(`POST answered ${r.status}`);
};

const events = [];
const resumes = [];
let waiters = [];
const changed = () => { const ws = waiters; waiters = []; for (const w of ws) w(); };
const until = (cond) => new Promise((resolve) => {
  const check = () => (cond() ? resolve() : waiters.push(check));
  check();
});
let open = false;

const client = new ResumingClient({
  url: server.replace(/^http/, "ws") + "/api/realtime",
  onEvent: (ev) => { events.push(ev); changed(); },
  onResumed: (r) => { resumes.push(r); changed(); },
  onStatus: (s) => { open = s === "open"; changed(); },
  onFrame: () => changed(),
});
client.subscribe("posts.*");
client.connect();
await until(() => open);
await new Promise((r) => setTimeout(r, 100)); // the subscribe ack
await post("first");
await until(() => events.length === 1);

client.close();
await until(() => !open);
for (const t of ["a", "b", "c"]) await post(t);
client.connect();
await until(() => resumes.length === 1);
const r = resumes[0];
if (!r.recovered || r.missed !== 3) fail(`resumed ${JSON.stringify(r)}`);
const titles = events.map((e) => e.payload.title);
if (titles.join(",") !== "first,a,b,c") fail(`events ${titles}`);
const seqs = events.map((e) => e.seq);
if (!seqs.every((s, i) => i === 0 || s > seqs[i - 1])) fail(`seqs ${seqs}`);
await post("live");
await until(() => events.length === 5);
if (events[4].payload.title !== "live") fail("no live event after the resume");
client.close();
clearTimeout(watchdog);
console.log("resume client (node) passed: missed 3, recovered, then live");
process.exit(0);
