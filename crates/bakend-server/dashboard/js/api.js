// The session and every call to the server. The dashboard uses the public and admin HTTP APIs
// only, like any other client.
//
// Tokens live in memory and in sessionStorage (this tab only, this origin only; never in a
// cookie or a URL), so a reload keeps the session and closing the tab ends it. The access token
// is short-lived: it is refreshed shortly before it expires, and on a 401, with the refresh
// token — one refresh at a time, since refresh tokens rotate and presenting a rotated one
// revokes the whole session.

const KEY = "bakend.dashboard.session";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.isApiError = true;
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

let session = load();
let refreshing = null;
let refreshTimer = null;
let refreshes = 0;
const listeners = new Set();

function load() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return s && s.token && s.refreshToken && s.user ? s : null;
  } catch {
    return null;
  }
}

function save(s, reason) {
  session = s;
  if (s) sessionStorage.setItem(KEY, JSON.stringify(s));
  else sessionStorage.removeItem(KEY);
  scheduleRefresh();
  for (const fn of listeners) fn(s, reason);
}

/** `fn(session | null, reason)` after every change: sign-in, refresh, sign-out, expiry. */
export function onSession(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function user() {
  return session ? session.user : null;
}

export function token() {
  return session ? session.token : null;
}

/** The access token's claims (its payload is plain base64url JSON). */
function claims(t) {
  try {
    const b64 = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(b64));
  } catch {
    return {};
  }
}

/** Milliseconds until the access token should be replaced. */
function refreshDue() {
  if (!session) return Infinity;
  const { exp, iat } = claims(session.token);
  if (!exp) return Infinity;
  const lifetime = iat ? (exp - iat) * 1000 : 900_000;
  const margin = Math.min(60_000, lifetime / 4);
  return exp * 1000 - margin - Date.now();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  refreshTimer = setTimeout(() => {
    refresh().catch(() => {}); // a failure already ended the session or will be retried
  }, Math.max(1000, refreshDue()));
}

function adminOnly(u) {
  return u && u.role === "admin";
}

const NOT_ADMIN =
  "This account is not an admin. The dashboard is for admins only: an admin can change the account's role (Users), or run `bak admin create EMAIL` on the server.";

async function post(path, body, bearer) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(bearer ? { Authorization: `Bearer ${bearer}` } : {}) },
      body: JSON.stringify(body),
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server");
  }
  return parse(resp);
}

async function parse(resp) {
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  const body = type.includes("json") ? await resp.json().catch(() => null) : await resp.text();
  if (resp.ok) return body;
  const e = body && body.error && typeof body.error === "object" ? body.error : {};
  throw new ApiError(resp.status, e.code || "http_" + resp.status,
    e.message || `HTTP ${resp.status}`, e.details);
}

/**
 * Signs in (or registers, for the `BAKEND_ADMIN_EMAIL` first run). A non-admin is refused:
 * the session the server just opened is closed again and nothing is kept.
 */
export async function signIn(email, password, register = false) {
  const r = await post(register ? "/api/auth/register" : "/api/auth/login", { email, password });
  if (!adminOnly(r.user)) {
    await post("/api/auth/logout", { refreshToken: r.refreshToken }).catch(() => {});
    throw new ApiError(403, "not_admin", `${r.user.email}: ${NOT_ADMIN}`);
  }
  save({ token: r.token, refreshToken: r.refreshToken, user: r.user }, "signin");
  return r.user;
}

/** Signs out: the refresh token is revoked on the server, the tokens forgotten here. */
export async function signOut(reason = "signout") {
  const s = session;
  clearTimeout(refreshTimer);
  // Revoked before it is forgotten, so "signed out" on the page means signed out on the server.
  if (s) await post("/api/auth/logout", { refreshToken: s.refreshToken }).catch(() => {});
  save(null, reason);
}

/** Ends the session locally with a reason the sign-in page shows. */
function expire(message) {
  save(null, message);
}

/** A new token pair; at most one request in flight. */
export function refresh() {
  if (!session) return Promise.reject(new ApiError(401, "unauthorized", "Not signed in"));
  if (!refreshing) {
    const presented = session.refreshToken;
    refreshing = (async () => {
      try {
        const r = await post("/api/auth/refresh", { refreshToken: presented });
        if (!adminOnly(r.user)) {
          await post("/api/auth/logout", { refreshToken: r.refreshToken }).catch(() => {});
          expire(NOT_ADMIN);
          throw new ApiError(403, "not_admin", NOT_ADMIN);
        }
        refreshes++;
        document.documentElement.dataset.sessionRefreshes = String(refreshes);
        save({ token: r.token, refreshToken: r.refreshToken, user: r.user }, "refresh");
        return r.token;
      } catch (e) {
        if (e.status === 401) expire("Your session has ended. Please sign in again.");
        else if (e.status === 0) scheduleRetry();
        throw e;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

function scheduleRetry() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), 5000);
}

/** A token good for at least a few more seconds (refreshing first if needed). */
export async function freshToken() {
  if (!session) throw new ApiError(401, "unauthorized", "Not signed in");
  const { exp } = claims(session.token);
  if (exp && exp * 1000 - Date.now() < 3000) await refresh();
  return session.token;
}

/**
 * `api("GET", "/api/admin/users", {query: {limit: 50}})` → the parsed JSON (null for 204).
 * A 401 refreshes the token once and retries; a 403 from the admin API means this account is
 * no longer an admin, which ends the session.
 */
export async function api(method, path, { body, query, signal } = {}) {
  let url = path;
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
    const s = q.toString();
    if (s) url += "?" + s;
  }
  for (let attempt = 0; ; attempt++) {
    const t = await freshToken();
    let resp;
    try {
      resp = await fetch(url, {
        method,
        headers: {
          Authorization: `Bearer ${t}`,
          ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        credentials: "omit",
        signal,
      });
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "Cannot reach the server");
    }
    if (resp.status === 401 && attempt === 0 && session) {
      await refresh();
      continue;
    }
    if (resp.status === 403 && path.startsWith("/api/admin/")) {
      expire("This account is no longer an admin.");
    }
    return parse(resp);
  }
}

/** A file's bytes, fetched with the token (never a token in a URL). */
export async function fetchBlob(path) {
  for (let attempt = 0; ; attempt++) {
    const t = await freshToken();
    let resp;
    try {
      resp = await fetch(path, { headers: { Authorization: `Bearer ${t}` }, credentials: "omit" });
    } catch {
      throw new ApiError(0, "network", "Cannot reach the server");
    }
    if (resp.status === 401 && attempt === 0) {
      await refresh();
      continue;
    }
    if (!resp.ok) await parse(resp);
    return resp.blob();
  }
}

/**
 * Uploads a file with progress: `onProgress(sentBytes, totalBytes)`. XMLHttpRequest, because
 * fetch cannot report upload progress.
 */
export async function upload(file, visibility, onProgress) {
  for (let attempt = 0; ; attempt++) {
    const t = await freshToken();
    const result = await new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/storage/upload");
      xhr.setRequestHeader("Authorization", `Bearer ${t}`);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      });
      xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
      xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
      const form = new FormData();
      form.append("visibility", visibility);
      form.append("file", file, file.name);
      xhr.send(form);
    });
    if (result.status === 401 && attempt === 0) {
      await refresh();
      continue;
    }
    if (result.status === 201) return result.body;
    if (result.status === 0) throw new ApiError(0, "network", "Cannot reach the server");
    const e = result.body && result.body.error ? result.body.error : {};
    throw new ApiError(result.status, e.code || "http_" + result.status, e.message || `HTTP ${result.status}`, e.details);
  }
}

/** Checks a stored session at start: the server must still know it, as an admin. */
export async function resume() {
  if (!session) return null;
  try {
    const r = await api("GET", "/api/auth/me");
    if (!adminOnly(r.user)) {
      await signOut(NOT_ADMIN);
      return null;
    }
    session.user = r.user;
    save(session, "resume");
    return r.user;
  } catch (e) {
    if (e.status === 401) expire("Your session has ended. Please sign in again.");
    else if (e.status !== 0) await signOut("");
    if (e.status === 0) throw e;
    return null;
  }
}
