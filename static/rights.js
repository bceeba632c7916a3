// What a view shows when the server refuses the logged-in user, and the
// answer of a button's call. The server answers such a refusal as v5 did,
// `401 Access denied` (v5 clients expect a 401, docs/security.md), as it
// answers an anonymous call that needs a login: only the first is a matter
// of rights, which logging in again as the same user cannot fix, so it
// says who may instead of showing the login form. A `403` is treated alike.

import { LoginNeeded, loggedIn } from "./api.js";
import { h } from "./dom.js";

/** Whether `error` says the logged-in user may not do what was asked. */
export function refused(error) {
  const message = String(error?.message ?? error);
  return (error instanceof LoginNeeded && loggedIn() && message.includes("Access denied")) || message.startsWith("403");
}

/** "Only `who` may `what`", with the server's own words and a way to switch user. */
export function refusal(who, what, error) {
  const detail = String(error?.message ?? "").split("\n").slice(1).join(" ").trim();
  return h("div", { class: "warning refusal", role: "alert" },
    h("p", {}, h("strong", {}, `Only ${who} may ${what}.`), " ",
      h("a", { href: "#/login" }, "Log out"), " and log in as one of them to go on."),
    detail ? h("p", { class: "muted" }, `The server says: ${detail}`) : null);
}

/**
 * Runs `action`; a refusal becomes `refusal(who, what)` (a node to show),
 * any other failure is thrown on (a 401 to an anonymous call then shows
 * the login form).
 */
export async function orRefusal(action, who, what) {
  try {
    return { value: await action() };
  } catch (error) {
    if (!refused(error)) throw error;
    return { refusal: refusal(who, what, error) };
  }
}

/**
 * Runs `action` and shows the text it answers in `result`; a failure shows
 * there too, a refusal as "Only `who` may `what`".
 */
export async function answer(result, action, who = "$admins", what = "do this") {
  try {
    result.className = "";
    result.replaceChildren(await action());
  } catch (error) {
    result.className = refused(error) ? "" : "error";
    result.replaceChildren(refused(error) ? refusal(who, what, error) : String(error.message));
  }
}
