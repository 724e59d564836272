// Drives examples/realtime-demo/client.html in headless Chromium against a running `bak`.
//
//   node demo.mjs <server url> <path of client.html> <screenshot path>
//
// (or BAKEND_URL, DEMO_CLIENT_HTML, DEMO_SCREENSHOT). Uses the system Chromium
// (CHROMIUM_PATH, default /usr/bin/chromium) through playwright-core; no browser is downloaded.
// Exits 0 when every step passed, 1 with a message naming the failed step otherwise.

import { chromium } from "playwright-core";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [serverArg, htmlArg, shotArg] = process.argv.slice(2);
const server = (serverArg || process.env.BAKEND_URL || "").replace(/\/+$/, "");
const htmlPath = htmlArg || process.env.DEMO_CLIENT_HTML;
const shotPath = shotArg || process.env.DEMO_SCREENSHOT;
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const TOTAL_MS = Number(process.env.DEMO_TIMEOUT_MS || 60_000);
const STEP_MS = 15_000;

function fail(msg) {
  console.error(`browser demo FAILED: ${msg}`);
  process.exit(1);
}

if (!server || !htmlPath || !shotPath) {
  fail("usage: node demo.mjs <server url> <path of client.html> <screenshot path>");
}
if (!existsSync(htmlPath)) fail(`no such file: ${htmlPath}`);
if (!existsSync(executablePath)) fail(`Chromium not found at ${executablePath}`);

// Never hang: whatever is going on, the process ends after TOTAL_MS.
const watchdog = setTimeout(() => {
  console.error(`browser demo FAILED: global timeout of ${TOTAL_MS} ms (last step: ${step})`);
  process.exit(1);
}, TOTAL_MS);

let step = "launch Chromium";
let browser;
let page;
const consoleLines = [];

async function logText() {
  return page.locator("#log").innerText();
}

async function waitForLog(needle, what) {
  step = what;
  try {
    await page.waitForFunction(
      (n) => document.getElementById("log").textContent.includes(n),
      needle,
      { timeout: STEP_MS },
    );
  } catch (e) {
    throw new Error(`${what}: "${needle}" did not appear in #log within ${STEP_MS} ms`);
  }
  console.log(`ok: ${what}`);
}

async function waitForStatus(user, what) {
  step = what;
  // data-state="open" once the server's `connected` frame arrived; data-user is the email or "".
  try {
    await page.waitForFunction(
      (u) => {
        const s = document.getElementById("status");
        return s.dataset.state === "open" && s.dataset.user === u;
      },
      user,
      { timeout: STEP_MS },
    );
  } catch (e) {
    const s = await page.locator("#status").innerText().catch(() => "?");
    throw new Error(`${what}: status is "${s}", expected connected as ${user || "anonymous"}`);
  }
  console.log(`ok: ${what} (status: ${await page.locator("#status").innerText()})`);
}

async function main() {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: STEP_MS,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  console.log(`ok: launched Chromium ${browser.version()}`);
  page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(STEP_MS);
  page.on("console", (m) => consoleLines.push(`[console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));

  step = "open client.html";
  const url = `${pathToFileURL(resolve(htmlPath)).href}?server=${encodeURIComponent(server)}&dropMs=4000`;
  await page.goto(url);
  const field = await page.inputValue("#server");
  if (field !== server) throw new Error(`?server= not applied: field is "${field}"`);
  console.log(`ok: opened ${url}`);

  // Anonymous: connect, subscribe, create a post over REST, see its event.
  step = "connect anonymously";
  await page.click("#connect");
  await waitForStatus("", "connected anonymously");
  await waitForLog("subscribed: posts.*", "subscribed to posts.*");

  const title = `Hello from Chromium ${Date.now()}`;
  step = "create a post";
  await page.fill("#post-title", title);
  await page.click("#create-post");
  await waitForLog(`posts.created: ${title}`, "posts.created event shown in the page");

  // A simulated network drop: posts written while the page is offline arrive after it
  // reconnects, followed by the summary "missed 3 events, recovered".
  step = "simulate a network drop";
  await page.click("#drop");
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "closed");
  const missed = [];
  for (let i = 0; i < 3; i++) {
    const t = `While offline ${i} ${Date.now()}`;
    const r = await fetch(`${server}/api/posts`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ title: t }),
    });
    if (r.status !== 201) throw new Error(`creating a post while offline: HTTP ${r.status}`);
    missed.push(t);
  }
  console.log("ok: 3 posts created while the page was offline");
  await waitForLog("posts.*: missed 3 events, recovered", "resumed after the drop with the 3 missed events");
  for (const t of missed) await waitForLog(`posts.created: ${t}`, `missed post shown: ${t}`);
  const text = await logText();
  // The replayed events come first, then the `resumed` summary.
  if (text.indexOf(missed[2]) > text.indexOf("missed 3 events")) {
    throw new Error("the resume summary came before the replayed posts");
  }
  for (const t of missed) {
    if (text.split(t).length !== 2) throw new Error(`post "${t}" shown ${text.split(t).length - 1} times`);
  }

  // The protected collection refuses anonymous writes.
  step = "create a note anonymously";
  await page.fill("#note-text", "anonymous note");
  await page.click("#create-note");
  await waitForLog("POST /api/notes → 401", "anonymous note refused with 401");

  // Signed in: register through the form, the socket reconnects with ?token=.
  const email = `demo-${Date.now()}@example.com`;
  step = "register";
  await page.fill("#email", email);
  await page.fill("#password", "correct horse battery");
  await page.click("#register");
  await waitForStatus(email, "reconnected with ?token= as the new user");
  await waitForLog("subscribed: notes.*", "subscribed to notes.*");

  const note = `private note ${Date.now()}`;
  step = "create a note";
  await page.fill("#note-text", note);
  await page.click("#create-note");
  await waitForLog(`notes.created: ${note}`, "notes.created event shown to its owner");
  if ((await logText()).includes("anonymous note")) {
    throw new Error("the refused anonymous note was stored or delivered");
  }

  step = "list notes over REST";
  await page.click("#list-notes");
  await waitForLog(`my notes: ${note}`, "owner reads the note over REST with the bearer token");

  step = "check for errors";
  const errors = (await page.locator("#log .error").allInnerTexts()).filter(
    (l) => !l.includes("POST /api/notes → 401"),
  );
  if (errors.length) throw new Error(`the page logged errors:\n${errors.join("\n")}`);

  step = "screenshot";
  mkdirSync(dirname(resolve(shotPath)), { recursive: true });
  await page.screenshot({ path: shotPath, fullPage: true });
  console.log(`ok: screenshot saved to ${shotPath}`);
}

try {
  await main();
  console.log("browser demo passed");
  await browser.close();
  clearTimeout(watchdog);
  process.exit(0);
} catch (e) {
  console.error(`browser demo FAILED at step "${step}": ${e && e.message ? e.message : e}`);
  if (page) {
    const text = await logText().catch(() => null);
    if (text !== null) console.error(`--- page #log ---\n${text}\n-----------------`);
    if (shotPath) {
      const failShot = shotPath.replace(/(\.png)?$/, "-failed.png");
      await page
        .screenshot({ path: failShot, fullPage: true })
        .then(() => console.error(`failure screenshot: ${failShot}`))
        .catch(() => {});
    }
  }
  for (const l of consoleLines) console.error(l);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
