// The users part of `#/admin` (`/users`, `$admins` only): every account,
// a form that creates one, and for each: disable or enable, reset the
// password. No answer of the server ever holds a password.

import { call } from "./api.js";
import { h } from "./dom.js";
import { answer, orRefusal } from "./rights.js";

const JSON_TYPE = "application/json";
const WHO = "$admins", WHAT = "manage users";

function userPath(login, command) {
  return `/users/${encodeURIComponent(login)}/command/${command}`;
}

/** POSTs a JSON body (or none) and answers "{login}: {what}". */
async function send(path, body, done) {
  await call(path, { method: "POST", body: body && JSON.stringify(body), headers: body ? { "Content-Type": JSON_TYPE } : {} });
  return done;
}

/** The section, or why this user may not see it; a 401 to no login is thrown (the login form). */
export async function usersSection() {
  const heading = h("h2", {}, "Users");
  const loaded = await orRefusal(() => call("/users/", { accept: JSON_TYPE }), WHO, WHAT);
  if (loaded.refusal) return h("section", { id: "users-section" }, heading, loaded.refusal);
  const body = h("tbody", {});
  const result = h("p", { id: "users-result", role: "status" });
  const act = (action) => answer(result, async () => {
    const text = await action();
    fill(await call("/users/", { accept: JSON_TYPE }));
    return text;
  }, WHO, WHAT);

  const row = (user) => {
    const toggle = user.disabled ? "enable" : "disable";
    const password = h("input", { type: "password", name: "new-password", autocomplete: "new-password", required: true });
    const reset = (event) => {
      event.preventDefault();
      act(() => send(userPath(user.loginName, "reset-password"), { newPassword: password.value },
        `${user.loginName}: password reset.`));
    };
    return h("tr", { "data-login": user.loginName },
      h("td", {}, user.loginName), h("td", {}, user.fullName), h("td", {}, (user.groups || []).join(", ")),
      h("td", {}, user.disabled ? "disabled" : "enabled"),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "toggle",
          onclick: () => act(() => send(userPath(user.loginName, toggle), null, `${user.loginName}: ${toggle}d.`)) },
        toggle === "enable" ? "Enable" : "Disable"),
        h("details", {}, h("summary", {}, "Reset password"),
          h("form", { class: "reset", onsubmit: reset },
            h("label", {}, `New password for ${user.loginName} `, password), " ", h("button", { type: "submit" }, "Set")))));
  };
  const fill = (users) => body.replaceChildren(...users.data.map(row));
  fill(loaded.value);

  return h("section", { id: "users-section" }, heading,
    h("table", { id: "users" },
      h("thead", {}, h("tr", {}, ["Login", "Full name", "Groups", "State", ""].map((name) => h("th", {}, name)))), body),
    result, createForm(act));
}

function createForm(act) {
  const field = (name, attributes = {}) => h("input", { name, ...attributes });
  const login = field("login", { required: true, autocomplete: "off" });
  const fullName = field("fullName");
  const groups = field("groups", { placeholder: "$admins, $ops" });
  const password = field("password", { type: "password", required: true, autocomplete: "new-password" });
  const submit = (event) => {
    event.preventDefault();
    const user = {
      loginName: login.value.trim(),
      fullName: fullName.value.trim() || null,
      groups: groups.value.split(",").map((group) => group.trim()).filter(Boolean),
      password: password.value,
    };
    act(async () => {
      await call("/users/", { method: "POST", body: JSON.stringify(user), headers: { "Content-Type": JSON_TYPE } });
      event.target.reset();
      return `Created ${user.loginName}.`;
    });
  };
  return h("form", { id: "user-form", class: "stack", onsubmit: submit },
    h("h3", {}, "New user"),
    h("label", {}, "Login", login), h("label", {}, "Full name", fullName),
    h("label", {}, "Groups (comma-separated)", groups), h("label", {}, "Password", password),
    h("button", { type: "submit" }, "Create the user"));
}
