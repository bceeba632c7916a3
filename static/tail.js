// `#/tail/{s}`: new events as they are appended, over Server-Sent Events
// read with `fetch` (not `EventSource`, which cannot send the login), so
// any stream the user may read can be tailed, `$all` included.
//
// Events are queued as they arrive and drawn a few times a second (in an
// animation frame), at most WINDOW of them: one layout of the table per
// draw instead of one per event or per frame keeps the page responsive at
// thousands of events a second; older rows are dropped from the bottom. While paused,
// events are still received and counted, and the newest are drawn on
// resume. `window.tailStats` counts what arrived, what was drawn and what
// was passed over for newer events (drawn + skipped = arrived, once drawn).

import { streamPath, headersFor, check, LoginNeeded } from "./api.js";
import { loginForm } from "./login.js";
import { h, show, route, time, onLeave } from "./dom.js";

/** The rows kept on screen. */
const WINDOW = 200;
/** How often queued events are drawn, in milliseconds: new ones show
 * well within a second, and the table is laid out 5 times a second. */
const DRAW_EVERY = 200;
/** The rate is counted over the last few seconds. */
const RATE_SECONDS = 5;

export async function tail(name) {
  const stats = { received: 0, shown: 0, skipped: 0 };
  window.tailStats = stats;
  const body = h("tbody", {});
  const status = h("p", { class: "muted", id: "tail-status", role: "status" }, "Waiting for events…");
  const rate = h("span", { id: "tail-rate" }, "0");
  const pause = h("button", { type: "button", id: "tail-pause", "aria-pressed": "false" }, "Pause");
  const controller = new AbortController();
  let queue = [];
  let paused = false;
  let frame = 0;
  const arrivals = [];

  const draw = () => {
    frame = 0;
    if (paused || !queue.length) return;
    const newest = queue.slice(-WINDOW);
    stats.skipped += queue.length - newest.length;
    queue = [];
    const rows = document.createDocumentFragment();
    for (let i = newest.length - 1; i >= 0; i--) rows.append(row(newest[i]));
    body.prepend(rows);
    stats.shown += newest.length;
    while (body.childElementCount > WINDOW) body.lastElementChild.remove();
    status.textContent = `${stats.received} events since opened.`;
  };
  const received = (entry) => {
    stats.received++;
    arrivals.push(performance.now());
    queue.push(entry);
    if (queue.length > WINDOW * 4) {
      stats.skipped += queue.length - WINDOW;
      queue = queue.slice(-WINDOW);
    }
    if (!frame && !paused) frame = setTimeout(() => requestAnimationFrame(draw), DRAW_EVERY);
  };
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) draw();
  });
  const ticker = setInterval(() => {
    const since = performance.now() - RATE_SECONDS * 1000;
    while (arrivals.length && arrivals[0] < since) arrivals.shift();
    rate.textContent = (arrivals.length / RATE_SECONDS).toFixed(1);
  }, 500);
  onLeave(() => { controller.abort(); clearInterval(ticker); clearTimeout(frame); });

  show(h("h1", {}, "Live tail: ", h("a", { href: route("stream", name) }, name)),
    h("p", { class: "toolbar" }, pause, " ", rate, " events/s"),
    status,
    h("table", { id: "tail" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Stream"), h("th", {}, "Type"), h("th", {}, "Time"))), body));
  follow(name, received, status, controller.signal);
}

function row(entry) {
  return h("tr", {},
    h("td", {}, h("a", { href: route("event", entry.streamId, entry.eventNumber) }, entry.eventNumber)),
    h("td", {}, entry.streamId), h("td", {}, entry.eventType), h("td", {}, time(entry.updated)));
}

/** Reads the stream's Server-Sent Events until aborted; reconnects after
 * a dropped connection from the last id seen, as `EventSource` would. */
async function follow(name, received, status, signal) {
  let lastId = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const headers = headersFor("text/event-stream", lastId === null ? {} : { "Last-Event-ID": lastId });
      const response = await check(await fetch(streamPath(name), { headers, signal, cache: "no-store" }));
      delay = 500;
      for await (const message of messages(response.body, signal)) {
        if (message.id !== undefined) lastId = message.id;
        if (message.data) received(JSON.parse(message.data));
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof LoginNeeded) {
        status.replaceChildren(loginForm.prompt(error.message, () => window.dispatchEvent(new HashChangeEvent("hashchange"))));
        return;
      }
      if (/^4\d\d /.test(error.message)) {
        status.className = "error";
        status.textContent = `The server refused the live tail: ${error.message}`;
        return;
      }
      status.textContent = `Connection lost (${error.message}); reconnecting…`;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

/** The messages of a `text/event-stream` body: `{id, data}` per blank-line-ended block. */
async function* messages(stream, signal) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let rest = "";
  let message = {};
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const lines = (rest + value).split("\n");
    rest = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
      if (line === "") {
        if (message.data !== undefined || message.id !== undefined) yield message;
        message = {};
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") message.data = message.data === undefined ? text : `${message.data}\n${text}`;
        else if (field === "id") message.id = text;
      }
    }
  }
}
