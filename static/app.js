// The UI's entry: collects errors for the tests, maps an address the
// server opened the UI at (`/streams/{s}/…`) to a view, and routes on the
// hash so back, forward and bookmarks work.

import { LoginNeeded, loggedIn } from "./api.js";
import { h, show } from "./dom.js";
import { leave } from "./dom.js";
import { dashboard } from "./dashboard.js";
import { streams } from "./streams.js";
import { stream } from "./stream.js";
import { event } from "./event.js";
import { tail, stopTail } from "./tail.js";
import { append } from "./append.js";
import { loginForm } from "./login.js";

// Every uncaught error, for the browser tests (and a curious reader).
window.uiErrors = [];
window.addEventListener("error", (error) => window.uiErrors.push(String(error.message)));
window.addEventListener("unhandledrejection", (error) => window.uiErrors.push(String(error.reason)));

const views = { "": dashboard, streams, stream, event, tail, append, login: loginForm };

/** `/streams/{s}[/{start}[/{direction}]/{count}]` or `/streams/{s}/{n}` → a view's hash. */
function hashForPath(pathname) {
  const parts = pathname.split("/").slice(1);
  if (parts[0] !== "streams" || !parts[1]) return "#/";
  const [, name, ...rest] = parts;
  if (rest.length === 1) return `#/event/${name}/${rest[0]}`;
  if (rest.length === 2) return `#/stream/${name}/${rest[0]}/backward/${rest[1]}`;
  if (rest.length === 3) return `#/stream/${name}/${rest.join("/")}`;
  return `#/stream/${name}`;
}

async function render() {
  stopTail();
  leave();
  document.getElementById("login-link").textContent = loggedIn() ? "Log out" : "Log in";
  const [name = "", ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const view = views[name];
  try {
    if (!view) throw new Error(`No view '${name}'.`);
    await view(...args);
  } catch (error) {
    if (error instanceof LoginNeeded) {
      show(loginForm.prompt(error.message, render));
    } else {
      show(h("p", { class: "error", role: "alert" }, String(error.message || error)));
    }
  }
}

if (!location.hash && location.pathname !== "/") history.replaceState(null, "", hashForPath(location.pathname));
window.addEventListener("hashchange", render);
render();
