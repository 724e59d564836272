// A reference Bakend realtime client that never silently misses an event.
//
// It keeps the journal `epoch` (from `connected`) and the last `seq` received per channel,
// reconnects with exponential back-off, resubscribes every channel with `since`, reports how
// many events were recovered, and tells the application when a gap could not be replayed
// (`recovered: false`: refetch over REST). Events are deduplicated by `seq`.
//
// Browser:  <script src="resume.js"></script>  →  new BakendRealtime.ResumingClient({...})
// Node ≥ 20: const { ResumingClient } = require("./resume.js")
//            (Node 22 has a global WebSocket; on Node 20 run with --experimental-websocket or
//             pass `WebSocket` from the "ws" package.)
//
//   const client = new ResumingClient({
//     url: "ws://localhost:8080/api/realtime",
//     token: () => currentAccessToken,            // optional; a string or a function
//     onEvent: (event) => { ... },                 // every event once, in order per channel
//     onResumed: ({ channel, recovered, missed }) => { ... },
//     onStatus: (status) => { ... },               // "connecting" | "open" | "closed"
//     onSnapshot: (frame) => { ... },              // per-record subscriptions with snapshot
//     onFrame: (frame) => { ... },                 // every other frame (errors, acks)
//   });
//   client.subscribe("posts.*");
//   client.connect();
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.BakendRealtime = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  /** Whether `channel` receives `event` (exact type, trailing `.*`, or a per-record channel). */
  function matches(channel, event) {
    const types = [event.type];
    if (event.source === "collections" && event.payload && typeof event.payload.id === "string") {
      const dot = event.type.lastIndexOf(".");
      if (dot > 0) types.push(event.type.slice(0, dot) + "." + event.payload.id + event.type.slice(dot));
    }
    const wildcard = channel.endsWith(".*") ? channel.slice(0, -1) : null;
    return types.some((t) => (wildcard ? t.startsWith(wildcard) : t === channel));
  }

  const SEEN_LIMIT = 10000;

  class ResumingClient {
    constructor(options) {
      this.options = Object.assign({ initialDelayMs: 250, maxDelayMs: 10000 }, options);
      this.WebSocket = this.options.WebSocket || (typeof WebSocket !== "undefined" ? WebSocket : null);
      if (!this.WebSocket) throw new Error("no WebSocket implementation: pass options.WebSocket");
      this.channels = new Map(); // channel → { lastSeq, snapshot, replaying, missed }
      this.epoch = null;
      this.seen = new Set();
      this.seenOrder = [];
      this.ws = null;
      this.wanted = false;
      this.delay = this.options.initialDelayMs;
      this.timer = null;
    }

    /** Subscribes now (when connected) and after every reconnect. */
    subscribe(channel, opts) {
      if (!this.channels.has(channel)) {
        this.channels.set(channel, { lastSeq: null, floor: 0, snapshot: !!(opts && opts.snapshot), replaying: false, missed: 0 });
      }
      if (this.isOpen()) this.sendSubscribe(channel);
    }

    unsubscribe(channel) {
      this.channels.delete(channel);
      if (this.isOpen()) this.ws.send(JSON.stringify({ action: "unsubscribe", channel }));
    }

    /** Connects, and keeps reconnecting until `close()`. */
    connect() {
      this.wanted = true;
      if (this.ws) return;
      clearTimeout(this.timer);
      const token = typeof this.options.token === "function" ? this.options.token() : this.options.token;
      const url = this.options.url + (token ? (this.options.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : "");
      const ws = new this.WebSocket(url);
      this.ws = ws;
      this.epochKnown = false;
      this.status("connecting");
      ws.onmessage = (e) => { if (this.ws === ws) this.onMessage(typeof e.data === "string" ? e.data : String(e.data)); };
      ws.onclose = (e) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.status("closed", e.code, e.reason);
        if (this.wanted) this.scheduleReconnect();
      };
      ws.onerror = () => { /* onclose follows */ };
    }

    /** Closes and stops reconnecting (subscriptions and positions are kept for `connect()`). */
    close() {
      this.wanted = false;
      clearTimeout(this.timer);
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(1000, "bye");
      this.status("closed", 1000, "bye");
    }

    /** Drops the connection as a network failure would; the client reconnects and resumes. */
    drop() {
      const ws = this.ws;
      this.ws = null;
      if (ws) ws.close(4000, "dropped");
      this.status("closed", 4000, "dropped");
      if (this.wanted) this.scheduleReconnect();
    }

    isOpen() {
      return !!this.ws && this.ws.readyState === 1 && this.epochKnown;
    }

    scheduleReconnect() {
      clearTimeout(this.timer);
      const wait = this.delay;
      this.delay = Math.min(this.delay * 2, this.options.maxDelayMs);
      this.timer = setTimeout(() => { if (this.wanted) this.connect(); }, wait);
    }

    status(s, code, reason) {
      if (this.options.onStatus) this.options.onStatus(s, code, reason);
    }

    sendSubscribe(channel) {
      const c = this.channels.get(channel);
      const msg = { action: "subscribe", channel };
      if (c.lastSeq !== null && this.epoch) {
        msg.since = { epoch: this.epoch, seq: c.lastSeq };
        c.replaying = true;
        c.missed = 0;
      } else if (c.snapshot) {
        msg.snapshot = true;
      }
      this.ws.send(JSON.stringify(msg));
    }

    remember(seq) {
      this.seen.add(seq);
      this.seenOrder.push(seq);
      if (this.seenOrder.length > SEEN_LIMIT) this.seen.delete(this.seenOrder.shift());
    }

    onMessage(raw) {
      let m;
      try { m = JSON.parse(raw); } catch (e) { return; }
      switch (m.type) {
        case "connected": {
          const previous = this.epoch;
          this.epoch = m.epoch || null;
          this.epochKnown = true;
          this.delay = this.options.initialDelayMs;
          if (previous && this.epoch !== previous) {
            // A different history (restore from backup): positions from before mean nothing.
            for (const c of this.channels.values()) c.lastSeq = null;
            this.seen.clear();
            this.seenOrder = [];
          }
          this.status("open");
          if (this.options.onFrame) this.options.onFrame(m);
          for (const ch of this.channels.keys()) this.sendSubscribe(ch);
          return;
        }
        case "event": {
          const ev = m.event;
          const seq = typeof ev.seq === "number" ? ev.seq : null;
          if (seq !== null && this.seen.has(seq)) return;
          if (seq !== null) this.remember(seq);
          let fresh = seq === null;
          for (const [ch, c] of this.channels) {
            if (!matches(ch, ev)) continue;
            if (seq !== null && (c.lastSeq === null || seq > c.lastSeq)) c.lastSeq = seq;
            if (c.replaying) c.missed += 1;
            // Events already reflected in a snapshot of this channel are not news.
            if (seq === null || seq > c.floor) fresh = true;
          }
          if (fresh && this.options.onEvent) this.options.onEvent(ev);
          return;
        }
        case "resumed": {
          const c = this.channels.get(m.channel);
          const missed = c ? c.missed : 0;
          if (c) {
            c.replaying = false;
            if (!m.recovered) c.lastSeq = m.lastSeq; // continue from here; the app refetches
            else if (c.lastSeq === null || m.lastSeq > c.lastSeq) c.lastSeq = m.lastSeq;
          }
          if (this.options.onResumed) this.options.onResumed({ channel: m.channel, recovered: m.recovered, missed });
          return;
        }
        case "snapshot": {
          const c = this.channels.get(m.channel);
          if (c && typeof m.seq === "number") {
            c.floor = m.seq;
            if (c.lastSeq === null || m.seq > c.lastSeq) c.lastSeq = m.seq;
          }
          if (this.options.onSnapshot) this.options.onSnapshot(m);
          return;
        }
        default:
          if (this.options.onFrame) this.options.onFrame(m);
      }
    }
  }

  return { ResumingClient, matches };
});
