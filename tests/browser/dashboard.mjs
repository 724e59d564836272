// Drives the admin dashboard (/_/) in headless Chromium against a running `bak`, one section
// after another on one page (crates/bak/tests/it/dashboard.rs starts the server and this
// script).
//
//   node dashboard.mjs <server url> <project dir> <bak binary> <screenshot dir>
//
// Uses the system Chromium (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core.
// Every section saves a screenshot in the screenshot dir. Any uncaught error in the page, and any
// Content-Security-Policy violation, fails the run. Exits 0 when every section passed, 1 with
// the failed section otherwise. DASHBOARD_ONLY=name,name runs the sign-in and those sections.

import { chromium } from "playwright-core";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [serverArg, project, bak, shots] = process.argv.slice(2);
const server = (serverArg || "").replace(/\/+$/, "");
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const TOTAL_MS = Number(process.env.DASHBOARD_TIMEOUT_MS || 240_000);
const STEP_MS = 15_000;
// How many servers share the database (dashboard.rs starts a second one on PostgreSQL).
const NODES = Number(process.env.DASHBOARD_NODES || 1);
const ADMIN = "admin@example.com";
const USER = "user@example.com";
const PASSWORD = "correct horse battery";
const SESSION_KEY = "bakend.dashboard.session";

if (!server || !project || !bak || !shots) {
  console.error("usage: node dashboard.mjs <server url> <project dir> <bak binary> <screenshot dir>");
  process.exit(1);
}
mkdirSync(shots, { recursive: true });

let section = "start";
const watchdog = setTimeout(() => {
  console.error(`dashboard test FAILED: global timeout of ${TOTAL_MS} ms (section: ${section})`);
  process.exit(1);
}, TOTAL_MS);

let browser;
let page;
const pageErrors = [];
const consoleLines = [];
let adminToken = null;

// ---- helpers ---------------------------------------------------------------------------------

function check(cond, message) {
  if (!cond) throw new Error(message);
}

async function rest(method, path, { token, body, form } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(server + path, { method, headers, body: form || (body !== undefined ? JSON.stringify(body) : undefined) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

async function expectStatus(r, status, what) {
  check(r.status === status, `${what}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  return r.json;
}

/** Polls `fn(arg)` in the page (through the protocol, so the page's CSP does not apply). */
async function waitUntil(fn, arg, what, ms = STEP_MS) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await page.evaluate(fn, arg).catch((e) => `evaluate failed: ${e.message}`);
    if (last === true) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} (waited ${ms} ms; last: ${JSON.stringify(last)})`);
}

async function waitText(selector, needle, what, ms = STEP_MS) {
  await waitUntil(([sel, n]) => {
    const el = document.querySelector(sel);
    return !!el && el.textContent.includes(n);
  }, [selector, needle], `${what}: "${needle}" not in ${selector}`, ms);
}

async function go(sectionKey) {
  await page.click(`nav a[data-section="${sectionKey}"]`);
  await waitUntil((k) => document.querySelector(`nav a.active`)?.dataset.section === k, sectionKey, `navigate to ${sectionKey}`);
}

async function confirmDialog(label = "Delete") {
  const button = page.locator("dialog[open] .buttons button", { hasText: label });
  await button.waitFor();
  await button.click();
}

async function signInAsAdmin() {
  const r = await expectStatus(await rest("POST", "/api/auth/login", { body: { email: ADMIN, password: PASSWORD } }), 200, "admin login over REST");
  adminToken = r.token;
}

function assertNoPageErrors() {
  if (pageErrors.length) throw new Error(`uncaught errors in the page:\n${pageErrors.join("\n")}`);
}

async function assertNoCspViolations() {
  const v = await page.evaluate(() => window.__cspViolations || []);
  check(v.length === 0, `Content-Security-Policy violations: ${JSON.stringify(v)}`);
}

// A 16×16 PNG (opaque blue square).
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAFklEQVR42mPQz79HEmIY1TCqYfhqAABWG3wQAVrYewAAAABJRU5ErkJggg==",
  "base64");

// ---- sections ---------------------------------------------------------------------------------

const firstLoad = { requests: 0, encoded: 0, decoded: 0 };

async function signIn() {
  await expectStatus(await rest("POST", "/api/auth/register", { body: { email: USER, password: PASSWORD } }), 201, "register the non-admin");

  // What the first page load costs (everything /_/ sends before anyone signs in).
  const responses = [];
  const onResponse = (r) => { if (r.url().startsWith(`${server}/_/`)) responses.push(r); };
  page.on("response", onResponse);
  await page.goto(`${server}/_/`);
  await page.locator("#signin-form").waitFor();
  await page.waitForLoadState("networkidle");
  page.off("response", onResponse);
  for (const r of responses) {
    const sizes = await r.request().sizes();
    const body = await r.body().catch(() => Buffer.alloc(0));
    firstLoad.requests++;
    firstLoad.encoded += sizes.responseBodySize;
    firstLoad.decoded += body.length;
  }
  console.log(`first load: ${firstLoad.requests} requests, ${firstLoad.encoded} bytes on the wire (body, gzip), ${firstLoad.decoded} bytes decoded`);

  // First run: no admin exists; the page says how to make one.
  const help = await page.locator("#first-run").innerText();
  check(help.includes("bak admin create") && help.includes("BAKEND_ADMIN_EMAIL"), `first-run help: ${help}`);

  // A non-admin is refused with a clear message, and nothing is kept.
  await page.fill("#email", USER);
  await page.fill("#password", PASSWORD);
  await page.press("#password", "Enter");
  await waitText("#signin-error", "not an admin", "non-admin refused");
  check(await page.evaluate((k) => sessionStorage.getItem(k), SESSION_KEY) === null, "a refused sign-in left a session behind");
  await page.screenshot({ path: join(shots, "01-sign-in-refused.png") });

  // Make the first admin the documented way, while the server runs.
  const made = spawnSync(bak, ["admin", "create", ADMIN, "--password-stdin"], { cwd: project, input: `${PASSWORD}\n`, encoding: "utf8" });
  check(made.status === 0, `bak admin create: ${made.status} ${made.stderr}`);

  await page.fill("#email", ADMIN);
  await page.fill("#password", PASSWORD);
  await page.press("#password", "Enter");
  await page.locator("#view").waitFor();
  await waitUntil(() => document.getElementById("live-status")?.dataset.state === "open", null, "realtime socket open");
  await signInAsAdmin();
}

async function overview() {
  for (let i = 0; i < 3; i++) {
    await expectStatus(await rest("POST", "/api/posts", { body: { title: `Seed post ${i}`, views: i } }), 201, "seed post");
  }
  await go("collections");
  await go("overview");
  const cols = (await rest("GET", "/api/admin/collections", { token: adminToken })).json.items.length;
  const stat = (k) => `[data-stat="${k}"]`;
  await waitUntil(([sel, n]) => document.querySelector(sel)?.textContent === n, [stat("collections"), String(cols)], "collection count");
  await waitUntil((sel) => document.querySelector(sel)?.textContent === "2", stat("users"), "user count");
  await waitUntil((sel) => document.querySelector(sel)?.textContent === "1", stat("jobs"), "job count");
  await waitUntil((sel) => document.querySelector(sel)?.textContent === "0", stat("files"), "file count");
  await waitUntil(() => document.querySelector('tr[data-collection="posts"] td.num')?.textContent === "3", null, "posts count");
  await waitUntil(() => Number(document.querySelector('[data-stat="connections"]')?.textContent) >= 1, null, "realtime connections");
  if (NODES > 1) {
    // A row per node (the other one's from its heartbeat), this one marked.
    await waitUntil((n) => !document.getElementById("nodes-section").hidden
      && document.querySelectorAll("#nodes tbody tr[data-node]").length === n, NODES, "a row per node");
    const marked = await page.locator("#nodes tbody tr", { hasText: "this node" }).count();
    check(marked === 1, `${marked} rows marked "this node"`);
  } else {
    check(await page.locator("#nodes-section").isHidden(), "one server shows a nodes table");
  }
}

async function collectionCreate() {
  await go("collections");
  await page.click("#new-collection");
  await page.fill("#collection-name", "dash_items");
  await page.click("#add-field");
  await page.locator("#fields input.fname").nth(0).fill("label");
  await page.click("#add-field");
  await page.locator("#fields input.fname").nth(1).fill("qty");
  await page.locator("#fields select.ftype").nth(1).selectOption("integer");
  await page.click("#create");
  await page.locator('#records-table[data-collection="dash_items"]').waitFor();
  const file = join(project, "collections", "dash_items.json");
  check(existsSync(file), `${file} was not written`);
  const def = JSON.parse(readFileSync(file, "utf8"));
  check(JSON.stringify(def.fields.map((f) => [f.name, f.type])) === JSON.stringify([["label", "string"], ["qty", "integer"]]), `collections/dash_items.json: ${JSON.stringify(def)}`);
  await go("collections");
  await page.locator('#collections tr[data-collection="dash_items"]').waitFor();
}

async function collectionEdit() {
  // Blockers first: a record whose label is not a number, then label → integer.
  await expectStatus(await rest("POST", "/api/dash_items", { token: adminToken, body: { label: "abc", qty: 1 } }), 201, "dash_items record");
  await page.click('#collections tr[data-collection="dash_items"] a[href$="/schema"]');
  await page.locator('#fields tr[data-field="label"] select.ftype').selectOption("integer");
  await page.click("#preview");
  await waitText("#plan-blockers", '"abc"', "the blocking record is named");
  await waitText("#plan", "Needs force", "outcome");
  check(await page.locator("#apply").isDisabled(), "Apply must wait for force");
  await page.screenshot({ path: join(shots, "04-collection-edit-blocked.png"), fullPage: true });

  // posts carries keys the form does not show; change a field's type and preview.
  await go("collections");
  await page.click('#collections tr[data-collection="posts"] a[href$="/schema"]');
  await page.locator('#fields tr[data-field="views"] select.ftype').selectOption("float");
  await page.click("#preview");
  await waitText("#plan-changes", 'changes the type of field "views" from integer to float', "plan preview");
  await page.locator("#plan-rebuild").waitFor();
  await waitText("#plan", "Ready to apply", "outcome");
  const before = (await rest("GET", "/api/admin/collections/posts", { token: adminToken })).json.definition;
  check(before.fields.find((f) => f.name === "views").type === "integer", "the preview applied the change");
  await page.screenshot({ path: join(shots, "04-collection-edit-plan.png"), fullPage: true });
  // The file in collections/ is written before the PUT answers (not before the change shows in
  // a GET), so the checks below wait for the dashboard's own PUT.
  const put = page.waitForResponse((r) => r.request().method() === "PUT"
    && r.url().startsWith(`${server}/api/admin/collections/posts`) && !r.url().includes("dryRun"));
  await page.click("#apply");
  const putStatus = (await put).status();
  check(putStatus === 200, `PUT /api/admin/collections/posts: HTTP ${putStatus}`);
  const after = (await rest("GET", "/api/admin/collections/posts", { token: adminToken })).json.definition;
  const views = after.fields.find((f) => f.name === "views");
  check(views.type === "float", `not applied: ${JSON.stringify(views)}`);
  // The round trip kept what the form does not show.
  check(JSON.stringify(after["x-ui"]) === JSON.stringify(before["x-ui"]), `x-ui lost: ${JSON.stringify(after)}`);
  check(JSON.stringify(after.indexes) === JSON.stringify(before.indexes), `indexes lost: ${JSON.stringify(after)}`);
  check(views["x-hint"] === "counter", `a field's unknown key was lost: ${JSON.stringify(views)}`);
  check(JSON.stringify(after.permissions) === JSON.stringify(before.permissions), "permissions changed");
  check(!("renamedFrom" in views), "renamedFrom added without a rename");
  const onDisk = JSON.parse(readFileSync(join(project, "collections", "posts.json"), "utf8"));
  check(onDisk["x-ui"] && onDisk.indexes && onDisk.fields.find((f) => f.name === "views").type === "float", `collections/posts.json: ${JSON.stringify(onDisk)}`);
}

async function records() {
  await page.locator('a[href="/_/collections/posts"]').first().click();
  await page.locator('#records-table[data-collection="posts"]').waitFor();
  await page.click("#new-record");
  await page.locator("#record-form").waitFor();
  await page.fill("#field-body", "written in the form");
  await page.click("#save-record");
  await waitText('[data-error-for="title"]', "required", "validation error next to its field");
  await page.screenshot({ path: join(shots, "05-records-validation.png") });
  const title = `Made in the dashboard ${Date.now()}`;
  await page.fill("#field-title", title);
  await page.fill("#field-views", "7");
  await page.selectOption("#field-published", "true");
  await page.fill("#field-meta", '{"tags": ["a", "b"]}');
  await page.click("#save-record");
  await page.locator("#record-form").waitFor({ state: "detached" });
  const row = page.locator("#records tr", { hasText: title });
  await row.waitFor();
  const id = await row.getAttribute("data-id");
  const created = await expectStatus(await rest("GET", `/api/posts/${id}`), 200, "the created record");
  check(created.views === 7 && created.published === true && created.meta.tags.length === 2 && created.body === "written in the form", `stored: ${JSON.stringify(created)}`);

  await row.locator('[data-action="edit"]').click();
  await page.locator("#record-form").waitFor();
  const edited = `${title} (edited)`;
  await page.fill("#field-title", edited);
  await page.click("#save-record");
  await page.locator("#records tr", { hasText: edited }).waitFor();
  const after = await expectStatus(await rest("GET", `/api/posts/${id}`), 200, "the edited record");
  check(after.title === edited && after.views === 7 && after.body === "written in the form", `edit changed more than the title: ${JSON.stringify(after)}`);

  await page.locator(`#records tr[data-id="${id}"] [data-action="delete"]`).click();
  await confirmDialog("Delete");
  await page.locator(`#records tr[data-id="${id}"]`).waitFor({ state: "detached" });
  await expectStatus(await rest("GET", `/api/posts/${id}`), 404, "the deleted record");
}

async function recordsLive() {
  await page.evaluate(() => { window.__sameDocument = true; });
  const title = `Live from REST ${Date.now()}`;
  await expectStatus(await rest("POST", "/api/posts", { body: { title } }), 201, "REST create");
  await page.locator("#records tr", { hasText: title }).waitFor({ timeout: 5000 });
  check(await page.evaluate(() => window.__sameDocument === true), "the page was reloaded");
  // This section's screenshot is the one in docs/dashboard.md: the table from its start, no notices.
  await page.evaluate(() => {
    document.querySelector("#records-table").parentElement.scrollLeft = 0;
    for (const t of document.querySelectorAll(".toast")) t.remove();
  });
}

async function users() {
  await go("users");
  const userRow = page.locator(`#users tr[data-email="${USER}"]`);
  await userRow.waitFor();
  await userRow.locator("select.role").selectOption("public");
  const end = Date.now() + STEP_MS;
  let role;
  do {
    const list = (await rest("GET", "/api/admin/users", { token: adminToken })).json.items;
    role = list.find((u) => u.email === USER).role;
    if (role === "public") break;
    await new Promise((r) => setTimeout(r, 100));
  } while (Date.now() < end);
  check(role === "public", `role is ${role}`);
  // The last admin cannot be demoted: the 409 is shown, the select goes back.
  const adminRow = page.locator(`#users tr[data-email="${ADMIN}"]`);
  await adminRow.locator("select.role").selectOption("public");
  await waitText(`#users tr[data-email="${ADMIN}"] .field-error`, "last admin", "the last-admin guard");
  check(await adminRow.locator("select.role").inputValue() === "admin", "the select did not go back to admin");
}

async function storage() {
  await go("storage");
  // A file large enough for progress events.
  const big = Buffer.alloc(3 * 1024 * 1024, 7);
  await page.evaluate(() => {
    window.__progress = [];
    new MutationObserver(() => {
      const p = document.getElementById("upload-progress");
      if (p && !p.hidden) window.__progress.push(p.value);
    }).observe(document.getElementById("upload-form"), { attributes: true, subtree: true, characterData: true, childList: true });
  });
  await page.setInputFiles("#upload-file", { name: "big.bin", mimeType: "application/octet-stream", buffer: big });
  await page.click("#upload-button");
  await waitText("#upload-status", "Uploaded big.bin", "upload finished");
  const seen = await page.evaluate(() => window.__progress);
  check(seen.length > 0 && seen[seen.length - 1] === 100 && await page.locator("#upload-progress").isVisible(), `progress not shown: ${JSON.stringify(seen)}`);
  await page.locator('#files tr', { hasText: "big.bin" }).waitFor();

  await page.setInputFiles("#upload-file", { name: "pixel.png", mimeType: "image/png", buffer: PNG });
  await page.click("#upload-button");
  await waitText("#upload-status", "Uploaded pixel.png", "image upload");
  const row = page.locator("#files tr", { hasText: "pixel.png" });
  await row.waitFor();
  check((await row.innerText()).includes("protected"), "visibility not shown");
  await row.locator('[data-action="preview"]').click();
  await page.locator("#preview-image").waitFor();
  await waitUntil(() => {
    const img = document.getElementById("preview-image");
    return img.src.startsWith("blob:") && img.complete && img.naturalWidth === 16;
  }, null, "protected image preview through a blob: URL");
  await page.screenshot({ path: join(shots, "08-storage-preview.png") });
  await confirmDialog("Close");
  const id = await row.getAttribute("data-id");
  await row.locator('[data-action="delete"]').click();
  await confirmDialog("Delete");
  await page.locator(`#files tr[data-id="${id}"]`).waitFor({ state: "detached" });
  await expectStatus(await rest("GET", `/api/storage/${id}`, { token: adminToken }), 404, "the deleted file");
}

async function jobs() {
  await go("jobs");
  await page.locator('#jobs tr[data-job="tick"] [data-action="run"]').click();
  const run = page.locator('#runs-table tr[data-trigger="manual"][data-status="completed"]');
  await run.waitFor();
  await page.locator('#job-feed li[data-type="job.completed"]').waitFor();
  // On PostgreSQL each run names the node that ran it; one server on SQLite has no column.
  const node = run.locator("td.run-node");
  if (NODES > 1) check(/\S/.test(await node.innerText()), "the run's node is not shown");
  else check(await node.count() === 0, "a node column on SQLite");
}

async function functions() {
  await go("functions");
  await page.locator('#triggers tr').first().waitFor();
  await expectStatus(await rest("POST", "/api/boom", { body: { note: "from the test" } }), 201, "boom record");
  await waitText("#function-feed", "boom failed for from the test", "function failure in the live feed");
  await page.locator('#function-feed li[data-type="function.failed"]').first().waitFor();
}

async function logs() {
  await go("logs");
  const name = `logmark_${Date.now()}`;
  await expectStatus(await rest("POST", "/api/admin/collections", { token: adminToken, body: { name, fields: [{ name: "x", type: "string" }] } }), 201, "create a collection over REST");
  await waitText("#log-lines", `Collection created: ${name}`, "the log line this test caused", 10_000);
}

async function realtime() {
  await go("realtime");
  await waitUntil(() => document.getElementById("inspect-state")?.dataset.state === "open", null, "inspector socket open");
  await page.fill("#inspect-channel", "posts.*");
  await page.press("#inspect-channel", "Enter");
  await page.locator('#inspect-frames li[data-type="subscribed"]').waitFor();
  const title = `Seen by the inspector ${Date.now()}`;
  await expectStatus(await rest("POST", "/api/posts", { body: { title } }), 201, "REST create");
  await waitText("#inspect-frames", title, "the frame in the inspector");
}

async function xss() {
  // Hostile values everywhere a value can show up; none may run, all must show as text.
  const img = (tag) => `<img src=x onerror="window.__pwned='${tag}'">`;
  // No double quotes: multipart encodes them in filenames.
  const filename = "<img src=x onerror=window.__pwned=7>.html";
  const upload = new FormData();
  upload.append("visibility", "protected");
  upload.append("file", new Blob(["<script>window.__pwned='file body'</script>"], { type: "text/html" }), filename);
  const file = await expectStatus(await rest("POST", "/api/storage/upload", { token: adminToken, form: upload }), 201, "hostile upload");
  const post = await expectStatus(await rest("POST", "/api/posts", { token: adminToken, body: {
    title: img("title"),
    body: "<script>window.__pwned='body'</script>",
    link: "javascript:window.__pwned='link'",
    meta: { html: img("json"), [img("key")]: 1 },
    cover: file.id,
  } }), 201, "hostile post");
  await expectStatus(await rest("POST", "/api/boom", { body: { note: img("function") } }), 201, "hostile function failure");
  await waitText("#inspect-frames", "onerror", "hostile frame shown in the inspector");

  const clean = async (where) => {
    await page.waitForTimeout(200);
    const r = await page.evaluate(() => ({
      pwned: window.__pwned,
      imgs: document.querySelectorAll('img[src="x"]').length,
      inlineScripts: [...document.scripts].filter((s) => !s.src.includes("/_/js/")).length,
      jsLinks: document.querySelectorAll('a[href^="javascript:"]').length,
    }));
    check(r.pwned === undefined && r.imgs === 0 && r.inlineScripts === 0 && r.jsLinks === 0, `${where}: ${JSON.stringify(r)}`);
    assertNoPageErrors();
    await assertNoCspViolations();
  };
  await clean("realtime inspector");

  await go("collections");
  await page.locator('a[href="/_/collections/posts"]').first().click();
  const row = page.locator(`#records tr[data-id="${post.id}"]`);
  await row.waitFor();
  check((await row.innerText()).includes(img("title")), "the title is not shown as text");
  await clean("records table");
  await row.locator('[data-action="edit"]').click();
  await page.locator("#record-form").waitFor();
  check(await page.inputValue("#field-title") === img("title"), "the form does not hold the value as it is");
  await clean("record form");
  await page.screenshot({ path: join(shots, "13-xss-record-form.png") });
  await page.click("#cancel-record");

  await go("storage");
  const fileRow = page.locator(`#files tr[data-id="${file.id}"]`);
  await fileRow.waitFor();
  check((await fileRow.innerText()).includes(filename), "the filename is not shown as text");
  await fileRow.locator('[data-action="preview"]').click();
  await page.locator("#preview-none").waitFor();
  await clean("storage preview of an HTML file");
  await confirmDialog("Close");

  await go("functions");
  await waitText("#function-feed", img("function"), "the hostile error as text");
  await clean("functions feed");
  await go("logs");
  await waitText("#log-lines", img("function"), "the hostile log line as text", 10_000);
  await clean("logs");
  for (const s of ["overview", "collections", "users", "jobs"]) {
    await go(s);
    await page.waitForTimeout(300);
    await clean(s);
  }
  await go("storage");
  await clean("storage");
}

async function session() {
  // accessTokenTtl is 20 s in this project: by now the page has replaced its token, over REST
  // and on its socket, without a new sign-in.
  await waitUntil(() => Number(document.documentElement.dataset.sessionRefreshes || 0) >= 1, null, "the access token was refreshed", 30_000);
  await go("overview");
  await waitUntil(() => document.querySelector('[data-stat="users"]')?.textContent === "2", null, "API calls after a refresh");
  await waitUntil(() => document.getElementById("live-status")?.dataset.state === "open", null, "socket still signed in");
}

async function signOut() {
  const refreshToken = await page.evaluate((k) => JSON.parse(sessionStorage.getItem(k)).refreshToken, SESSION_KEY);
  await page.click("#sign-out");
  await page.locator("#signin-form").waitFor();
  check(await page.evaluate((k) => sessionStorage.getItem(k), SESSION_KEY) === null, "the session outlived the sign-out");
  const r = await rest("POST", "/api/auth/refresh", { body: { refreshToken } });
  check(r.status === 401, `the refresh token still works after sign-out: ${r.status}`);
}

const SECTIONS = [
  ["sign-in", signIn],
  ["overview", overview],
  ["collection-create", collectionCreate],
  ["collection-edit", collectionEdit],
  ["records", records],
  ["records-live", recordsLive],
  ["users", users],
  ["storage", storage],
  ["jobs", jobs],
  ["functions", functions],
  ["logs", logs],
  ["realtime", realtime],
  ["xss", xss],
  ["session", session],
  ["sign-out", signOut],
];

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  console.log(`ok: launched Chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, locale: "en-US", timezoneId: "UTC" });
  page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ""}`);
    });
  });
  page.on("pageerror", (e) => pageErrors.push(`${e.name}: ${e.message}\n${e.stack || ""}`));
  page.on("console", (m) => consoleLines.push(`[console.${m.type()}] ${m.text()}`));

  const only = (process.env.DASHBOARD_ONLY || "").split(",").filter(Boolean);
  let n = 0;
  for (const [name, fn] of SECTIONS) {
    n++;
    if (only.length && name !== "sign-in" && !only.includes(name)) continue;
    section = name;
    const t0 = Date.now();
    await fn();
    assertNoPageErrors();
    await assertNoCspViolations().catch((e) => { if (name !== "sign-out") throw e; });
    await page.screenshot({ path: join(shots, `${String(n).padStart(2, "0")}-${name}.png`), fullPage: true });
    console.log(`ok: ${name} (${Date.now() - t0} ms)`);
  }
}

try {
  await main();
  console.log(`first-load-gzip-bytes=${firstLoad.encoded} first-load-bytes=${firstLoad.decoded} first-load-requests=${firstLoad.requests}`);
  console.log("dashboard test passed");
  await browser.close();
  clearTimeout(watchdog);
  process.exit(0);
} catch (e) {
  // The page's own lines first, the failure last: what a truncated CI log keeps is its end.
  for (const l of consoleLines.slice(-40)) console.error(l);
  for (const l of pageErrors) console.error(`[pageerror] ${l}`);
  if (page) {
    await page.screenshot({ path: join(shots, `failed-${section}.png`), fullPage: true })
      .then(() => console.error(`failure screenshot: ${join(shots, `failed-${section}.png`)}`)).catch(() => {});
  }
  console.error(`dashboard test FAILED in section "${section}": ${e && e.message ? e.message : e}`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
