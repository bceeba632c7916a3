// The one HTTP client of the UI: the public API with the tab's login.
// Credentials stay in sessionStorage (this tab only) and go out as
// `Authorization: Basic`; `X-Requested-With` makes the server answer a 401
// without a `Basic` challenge, so the browser shows no dialog of its own.

const KEY = "eventfeed-ui.authorization";
export const ATOM_JSON = "application/vnd.eventstore.atom+json";

/** A 401: the view shows the login form. */
export class LoginNeeded extends Error {}

export function login(user, password) {
  const utf8 = new TextEncoder().encode(`${user}:${password}`);
  sessionStorage.setItem(KEY, "Basic " + btoa(String.fromCharCode(...utf8)));
}
export function logout() { sessionStorage.removeItem(KEY); }
export function loggedIn() { return sessionStorage.getItem(KEY) !== null; }

/** The headers every call sends: `Accept`, the UI's marker and the login. */
export function headersFor(accept, headers = {}) {
  const sent = { Accept: accept, "X-Requested-With": "eventfeed-ui", ...headers };
  const authorization = sessionStorage.getItem(KEY);
  if (authorization) sent.Authorization = authorization;
  return sent;
}

/** Throws for a refused answer: `LoginNeeded` for a 401, else its status and reason. */
export async function check(response) {
  if (response.status === 401) throw new LoginNeeded(await reason(response));
  if (!response.ok) throw new Error(`${response.status} ${await reason(response)}`);
  return response;
}

/** Calls the API; answers the parsed JSON (or text), throws on failure. */
export async function call(path, { method = "GET", accept = ATOM_JSON, body, headers = {} } = {}) {
  const response = await check(await fetch(path, { method, headers: headersFor(accept, headers), body, cache: "no-cache" }));
  const type = response.headers.get("Content-Type") || "";
  if (response.status === 204 || (method !== "GET" && !type.includes("json"))) {
    return { status: response.status, location: response.headers.get("Location") };
  }
  return type.includes("json") ? response.json() : response.text();
}

async function reason(response) {
  const text = await response.text().catch(() => "");
  return (response.statusText || "") + (text ? `: ${text.slice(0, 300)}` : "");
}

/** The path of a stream's resource: `streamPath("a b", "0/forward/20")`. */
export function streamPath(stream, rest = "") {
  return `/streams/${encodeURIComponent(stream)}${rest ? "/" + rest : ""}`;
}

/** Only the path of one of the feed's absolute links, so calls stay on this origin. */
export function pathOf(uri) {
  const url = new URL(uri, location.href);
  return url.pathname + url.search;
}
