// The realtime socket (docs/websocket-api.md). The token is sent in an `auth` message right
// after connecting rather than in the URL, and again after every refresh, so the connection
// outlives any one access token. A dropped connection is reopened with back-off and every
// channel subscribed again; listeners then get a `{type: "reconnected"}` call so views can
// refetch what they show.

import * as api from "./api.js";

/** Whether subscription `channel` matches event type `type` (the server's rule). */
export function matches(channel, type) {
  if (channel === type) return true;
  return channel.endsWith(".*") && type.startsWith(channel.slice(0, -1));
}

export class Live {
  /**
   * `anonymous`: do not sign the socket in. `onRaw(direction, text)`: every frame in ("in")
   * and out ("out"), for the inspector. `onState(state)`: "connecting", "open", "closed".
   */
  constructor({ anonymous = false, onRaw, onState } = {}) {
    this.anonymous = anonymous;
    this.onRaw = onRaw;
    this.onState = onState;
    this.channels = new Map(); // channel → Set of listeners
    this.ws = null;
    this.ready = false; // signed in (or anonymous) and subscriptions sent
    this.stopped = false;
    this.backoff = 500;
    this.offSession = api.onSession((s, reason) => {
      if (s && reason === "refresh" && !this.anonymous) this.send({ action: "auth", token: s.token });
    });
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.state("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/realtime`);
    this.ws = ws;
    this.ready = false;
    this.reconnecting = this.everOpen === true;
    ws.addEventListener("open", async () => {
      this.everOpen = true;
      this.backoff = 500;
      if (this.anonymous) return this.subscribed();
      try {
        this.send({ action: "auth", token: await api.freshToken() });
      } catch {
        ws.close();
      }
    });
    ws.addEventListener("message", (m) => this.frame(m.data));
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.ready = false;
      this.state("closed");
      if (!this.stopped) {
        setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, 10_000);
      }
    });
  }

  state(s) {
    this.current = s;
    if (this.onState) this.onState(s);
  }

  frame(data) {
    if (this.onRaw) this.onRaw("in", data);
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (f.type === "authenticated") return this.subscribed();
    if (f.type === "error" && ["token_expired", "invalid_token", "session_revoked"].includes(f.code) && !this.anonymous) {
      // Refreshing sends the new token over this socket (see the session listener).
      api.refresh().catch(() => {});
      return;
    }
    if (f.type === "event" && f.event) {
      for (const [channel, fns] of this.channels) {
        if (matches(channel, f.event.type)) for (const fn of fns) fn(f.event);
      }
    }
  }

  /** Signed in: (re)subscribe everything and tell listeners if this was a reconnection. */
  subscribed() {
    if (this.ready) return;
    this.ready = true;
    this.state("open");
    for (const channel of this.channels.keys()) this.send({ action: "subscribe", channel });
    if (this.reconnecting) {
      for (const fns of this.channels.values()) for (const fn of fns) fn({ type: "reconnected" });
    }
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const text = JSON.stringify(msg);
    if (this.onRaw) this.onRaw("out", text);
    this.ws.send(text);
    return true;
  }

  /** Calls `fn(event)` for every event on `channel`; returns the function that stops it. */
  subscribe(channel, fn) {
    let fns = this.channels.get(channel);
    if (!fns) {
      fns = new Set();
      this.channels.set(channel, fns);
      if (this.ready) this.send({ action: "subscribe", channel });
    }
    fns.add(fn);
    return () => {
      fns.delete(fn);
      if (fns.size === 0 && this.channels.get(channel) === fns) {
        this.channels.delete(channel);
        if (this.ready) this.send({ action: "unsubscribe", channel });
      }
    };
  }

  close() {
    this.stopped = true;
    this.offSession();
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.state("closed");
  }
}

/** The last `limit` events of some channels, kept while signed in (the live feeds). */
export class EventLog {
  constructor(limit = 200) {
    this.limit = limit;
    this.items = [];
    this.listeners = new Set();
  }

  push(e) {
    this.items.push({ at: new Date().toISOString(), event: e });
    if (this.items.length > this.limit) this.items.shift();
    for (const fn of this.listeners) fn(e);
  }

  /** `fn(event)` for each new event; returns the function that stops it. */
  listen(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}
