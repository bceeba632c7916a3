// The login form: the server's own users, kept in this tab only.

import { login, logout, loggedIn } from "./api.js";
import { h, show } from "./dom.js";

/** `#/login`: log out if logged in, else ask. */
export async function loginForm() {
  if (loggedIn()) {
    logout();
    show(h("p", {}, "Logged out."));
    document.getElementById("login-link").textContent = "Log in";
    return;
  }
  show(loginForm.prompt("", () => { location.hash = "#/"; }));
}

/** The form, shown wherever a call answered 401; `then` runs after login. */
loginForm.prompt = (reason, then) => {
  const user = h("input", { name: "user", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = (event) => {
    event.preventDefault();
    login(user.value, password.value);
    then();
  };
  return h("form", { id: "login-form", class: "stack", onsubmit: submit },
    h("h1", {}, "Log in"),
    reason ? h("p", { class: "muted" }, "The server asks for a login: ", reason) : null,
    h("label", {}, "User", user),
    h("label", {}, "Password", password),
    h("button", { type: "submit" }, "Log in"));
};
