// Drives examples/live-tasks/index.html in headless Chromium against a running `bak`: the
// page's list of open tasks of project X must equal the REST list after every change —
// completing, reopening and reassigning tasks, and after a dropped connection.
//
//   node live-tasks.mjs <server url> <path of index.html>
//
// Uses the system Chromium (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core.
// Exits 0 when every step passed ("live tasks passed"), 1 with the failed step otherwise.

import { chromium } from "playwright-core";
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [serverArg, htmlArg] = process.argv.slice(2);
const server = (serverArg || "").replace(/\/+$/, "");
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const STEP_MS = 15_000;
let step = "start";
let page;
let browser;

function fail(msg) {
  console.error(`live tasks FAILED: ${msg}`);
  process.exit(1);
}
if (!server || !htmlArg || !existsSync(htmlArg)) fail("usage: node live-tasks.mjs <server url> <index.html>");
const watchdog = setTimeout(() => fail(`global timeout (last step: ${step})`), 90_000);

async function rest(method, path, body) {
  const r = await fetch(server + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}

const key = (t) => `${t.id}|${t.title}|${t.assignee ?? ""}`;

async function expected() {
  const f = encodeURIComponent("project = 'X' && done = false");
  const list = await rest("GET", `/api/tasks?filter=${f}&perPage=1000`);
  return list.items.map(key).sort();
}

async function shown() {
  return page.$$eval("#tasks li", (lis) =>
    lis.map((li) => `${li.dataset.id}|${li.dataset.title}|${li.dataset.assignee}`).sort());
}

/// Waits until the page's list equals the REST list.
async function matches(what) {
  step = what;
  const want = await expected();
  const deadline = Date.now() + STEP_MS;
  let got;
  while (Date.now() < deadline) {
    got = await shown();
    if (JSON.stringify(got) === JSON.stringify(want)) {
      console.log(`ok: ${what} (${want.length} open task(s))`);
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: page shows ${JSON.stringify(got)}, REST has ${JSON.stringify(want)}`);
}

async function main() {
  const made = {};
  for (const [name, project, done, assignee] of [
    ["a", "X", false, "ann"], ["b", "X", false, "bob"], ["c", "X", true, "ann"],
    ["d", "Y", false, "cat"], ["e", "X", false, null], ["f", "Y", true, "bob"],
  ]) {
    made[name] = await rest("POST", "/api/tasks", { title: `task ${name}`, project, done, assignee });
  }
  browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
  page = await browser.newPage();
  page.setDefaultTimeout(STEP_MS);
  const url = `${pathToFileURL(resolve(htmlArg)).href}?server=${encodeURIComponent(server)}&project=X&dropMs=3000`;
  step = "open the page";
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "open");
  await matches("the snapshot shows the open tasks of X");

  await rest("PUT", `/api/tasks/${made.a.id}`, { done: true });
  await matches("completing a task removes it");
  await rest("PUT", `/api/tasks/${made.c.id}`, { done: false });
  await matches("reopening a task adds it");
  await rest("PUT", `/api/tasks/${made.b.id}`, { project: "Y" });
  await rest("PUT", `/api/tasks/${made.d.id}`, { project: "X" });
  await matches("moving tasks between projects");
  await rest("PUT", `/api/tasks/${made.e.id}`, { assignee: "dan" });
  await matches("reassigning a task updates it");
  await rest("POST", "/api/tasks", { title: "task g", project: "X", done: false, assignee: "eve" });
  await rest("DELETE", `/api/tasks/${made.c.id}`);
  await matches("creating and deleting tasks");

  step = "drop the connection";
  await page.click("#drop");
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "closed");
  await rest("PUT", `/api/tasks/${made.d.id}`, { done: true });
  await rest("PUT", `/api/tasks/${made.a.id}`, { done: false, assignee: "fay" });
  await rest("POST", "/api/tasks", { title: "task h", project: "X", done: false });
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "open",
    null, { timeout: STEP_MS });
  await matches("after reconnecting with since, the missed changes are applied");
  step = "check the resume";
  const log = await page.locator("#log").innerText();
  if (!log.includes("resumed: recovered")) throw new Error(`no resume in the log:\n${log}`);
  if (log.split("snapshot:").length !== 2) throw new Error(`expected exactly one snapshot:\n${log}`);
  const errors = await page.locator("#log .error").allInnerTexts();
  if (errors.length) throw new Error(`the page logged errors:\n${errors.join("\n")}`);
}

try {
  await main();
  console.log("live tasks passed");
  await browser.close();
  clearTimeout(watchdog);
  process.exit(0);
} catch (e) {
  console.error(`live tasks FAILED at step "${step}": ${e && e.message ? e.message : e}`);
  if (page) console.error(await page.locator("#log").innerText().catch(() => ""));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
