// `#/append[/{s}]`: writes one event and shows the server's answer.

import { call, streamPath, LoginNeeded } from "./api.js";
import { loginForm } from "./login.js";
import { h, show, route, uuid } from "./dom.js";

export async function append(name = "") {
  const stream = h("input", { name: "stream", required: true, value: name });
  const type = h("input", { name: "type", required: true });
  const data = h("textarea", { name: "data" }, "{}");
  const expected = h("input", { name: "expected", inputmode: "numeric", placeholder: "any" });
  const result = h("p", { id: "append-result", role: "status" });
  data.addEventListener("input", () => {
    try { JSON.parse(data.value); data.setCustomValidity(""); } catch (error) { data.setCustomValidity(error.message); }
  });
  const submit = async (event) => {
    event.preventDefault();
    const headers = { "Content-Type": "application/vnd.eventstore.events+json" };
    if (expected.value.trim()) headers["ES-ExpectedVersion"] = expected.value.trim();
    const body = JSON.stringify([{ eventId: uuid(), eventType: type.value, data: JSON.parse(data.value) }]);
    try {
      await call(streamPath(stream.value), { method: "POST", headers, body });
      result.className = "";
      result.replaceChildren("Appended to ", h("a", { href: route("stream", stream.value) }, stream.value), ".");
    } catch (error) {
      if (error instanceof LoginNeeded) {
        result.replaceChildren(loginForm.prompt(error.message, () => result.replaceChildren("Logged in: append again.")));
        return;
      }
      result.className = "error";
      result.textContent = String(error.message);
    }
  };
  show(h("h1", {}, "Append an event"),
    h("form", { id: "append-form", class: "stack", onsubmit: submit },
      h("label", {}, "Stream", stream),
      h("label", {}, "Event type", type),
      h("label", {}, "Data (JSON)", data),
      h("label", {}, "Expected version", expected),
      h("button", { type: "submit" }, "Append")),
    result);
}
