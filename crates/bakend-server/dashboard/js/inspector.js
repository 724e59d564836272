// Realtime inspector: a socket of its own, signed in as you or anonymous, to subscribe to any
// channel and watch every frame in and out as it arrives — what people otherwise do with wscat.
// Anonymous mode shows what a signed-out client would receive.

import { Live } from "./live.js";
import { h, mount, fmtClock } from "./dom.js";

const MAX_FRAMES = 500;

export default function inspector(root, ctx) {
  let sock = null;
  const subs = new Map(); // channel → stop function
  const channel = h("input", { type: "text", id: "inspect-channel", placeholder: "posts.*  ·  posts.rec_1.*  ·  job.*", autocomplete: "off", "aria-label": "Channel" });
  const identity = h("select", { id: "inspect-identity", "aria-label": "Connect as" },
    h("option", { value: "me", selected: true }, "as me (admin)"),
    h("option", { value: "anonymous" }, "anonymously"));
  const state = h("span", { class: "live-status", id: "inspect-state", dataset: { state: "connecting" } }, "connecting");
  const subList = h("ul", { class: "chips", id: "inspect-subscriptions" });
  const frames = h("ol", { class: "frames", id: "inspect-frames" });
  const pause = h("input", { type: "checkbox", id: "inspect-pause" });
  const raw = h("textarea", { id: "inspect-raw", rows: 2, spellcheck: "false", placeholder: "{\"action\":\"ping\"}", "aria-label": "Message to send" });
  const form = h("form", { class: "toolbar", id: "inspect-form" }, channel,
    h("button", { type: "submit", class: "primary", id: "inspect-subscribe" }, "Subscribe"), identity, state);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const c = channel.value.trim();
    if (!c || subs.has(c)) return;
    subs.set(c, sock.subscribe(c, () => {}));
    channel.value = "";
    renderSubs();
  });
  identity.addEventListener("change", () => connect());

  function renderSubs() {
    mount(subList, [...subs.keys()].map((c) => h("li", { class: "chip" }, h("code", {}, c),
      h("button", { type: "button", class: "link", "aria-label": `Unsubscribe ${c}`, onclick: () => {
        const stop = subs.get(c);
        subs.delete(c);
        if (stop) stop();
        renderSubs();
      } }, "×"))));
  }

  function frame(direction, text) {
    if (pause.checked) return;
    let shown = text;
    let type = "";
    try {
      const parsed = JSON.parse(text);
      // The page's own token is not for the screen.
      if (parsed && parsed.action === "auth" && direction === "out") parsed.token = "(your access token)";
      shown = JSON.stringify(parsed, null, 2);
      type = parsed.type || parsed.action || "";
    } catch {
      // not JSON: shown as it came
    }
    frames.prepend(h("li", { class: ["frame", direction], dataset: { type } },
      h("div", { class: "feed-head" }, h("time", {}, fmtClock()), direction === "in" ? " ← server " : " → client ", h("strong", {}, type)),
      h("pre", {}, shown)));
    while (frames.children.length > MAX_FRAMES) frames.lastChild.remove();
  }

  function connect() {
    if (sock) sock.close();
    sock = new Live({
      anonymous: identity.value === "anonymous",
      onRaw: frame,
      onState: (s) => { state.dataset.state = s; state.textContent = s; },
    });
    // Channels subscribed before carry over to the new socket.
    for (const c of subs.keys()) subs.set(c, sock.subscribe(c, () => {}));
  }

  const send = h("button", { type: "button", id: "inspect-send", onclick: () => {
    try {
      JSON.parse(raw.value);
    } catch {
      frame("out", `(not sent: not JSON) ${raw.value}`);
      return;
    }
    if (!sock.ws || sock.ws.readyState !== WebSocket.OPEN) return frame("out", "(not sent: not connected)");
    frame("out", raw.value);
    sock.ws.send(raw.value);
  } }, "Send");

  mount(root,
    h("p", { class: "muted" }, "Subscribe to any channel and watch the frames arrive. Wildcards end a channel: posts.*, job.*, system.*. Per-record channels: posts.<id>.*."),
    form,
    subList,
    h("div", { class: "toolbar" }, raw, send, h("label", { class: "inline" }, pause, " pause"),
      h("button", { type: "button", onclick: () => frames.replaceChildren() }, "Clear")),
    frames);
  connect();
  ctx.cleanup(() => { if (sock) sock.close(); });
}
