// A stream's metadata (shown, and edited by those the server lets write
// it) and its deletion, soft or hard, confirmed by typing its name.

import { call, streamPath, LoginNeeded } from "./api.js";
import { h, uuid } from "./dom.js";

const ACL_ROLES = [["$r", "read"], ["$w", "write"], ["$d", "delete"], ["$mr", "read metadata"], ["$mw", "write metadata"]];

/** The metadata panel; `null` for a stream whose metadata the user may not read. */
export async function metadataPanel(name) {
  let metadata;
  try {
    metadata = await call(streamPath(name, "metadata"), { accept: "application/json" });
  } catch (error) {
    if (error instanceof LoginNeeded || /^40[34] /.test(error.message)) {
      return h("section", { id: "metadata" }, h("h2", {}, "Metadata"), h("p", { class: "muted" }, `Not shown: ${error.message}`));
    }
    throw error;
  }
  if (typeof metadata !== "object" || metadata === null) metadata = {};
  const acl = metadata.$acl || {};
  const editor = h("textarea", { name: "metadata", "aria-label": "Metadata JSON" }, JSON.stringify(metadata, null, 2));
  const result = h("p", { id: "metadata-result", role: "status" });
  editor.addEventListener("input", () => {
    try { JSON.parse(editor.value); editor.setCustomValidity(""); } catch (error) { editor.setCustomValidity(error.message); }
  });
  const save = async (submit) => {
    submit.preventDefault();
    const body = JSON.stringify([{ eventId: uuid(), eventType: "$metadata", data: JSON.parse(editor.value) }]);
    await report(result, () => call(streamPath(name, "metadata"),
      { method: "POST", headers: { "Content-Type": "application/vnd.eventstore.events+json" }, body }), "Metadata saved.");
  };
  return h("section", { id: "metadata" },
    h("h2", {}, "Metadata"),
    h("dl", { class: "figures", id: "acl" },
      ACL_ROLES.map(([role, label]) => [h("dt", {}, `${label} (${role})`),
        h("dd", {}, acl[role] === undefined ? h("span", { class: "muted" }, "default") : [].concat(acl[role]).join(", "))]),
      ["$maxCount", "$maxAge", "$tb", "$cacheControl"].filter((key) => metadata[key] !== undefined)
        .map((key) => [h("dt", {}, key), h("dd", {}, String(metadata[key]))])),
    h("details", {}, h("summary", {}, "Edit metadata"),
      h("form", { id: "metadata-form", class: "stack", onsubmit: save }, editor,
        h("button", { type: "submit" }, "Save metadata"))),
    result);
}

/** Soft and hard delete; the button stays disabled until the name is typed. */
export function deletePanel(name) {
  const typed = h("input", { name: "confirm", autocomplete: "off", "aria-label": `Type ${name} to confirm` });
  const hard = h("input", { type: "checkbox", name: "hard" });
  const button = h("button", { type: "submit", disabled: true, class: "danger" }, "Delete stream");
  const result = h("p", { id: "delete-result", role: "status" });
  typed.addEventListener("input", () => { button.disabled = typed.value !== name; });
  const remove = async (submit) => {
    submit.preventDefault();
    if (typed.value !== name) return;
    const headers = hard.checked ? { "ES-HardDelete": "true" } : {};
    await report(result, () => call(streamPath(name), { method: "DELETE", headers }),
      hard.checked ? `${name} is hard-deleted: its name can never be used again.` : `${name} is deleted; appending to it starts it again.`);
  };
  return h("section", { id: "delete" },
    h("details", {}, h("summary", {}, "Delete this stream"),
      h("form", { id: "delete-form", class: "stack", onsubmit: remove },
        h("label", {}, `Type “${name}” to confirm`, typed),
        h("label", { class: "inline" }, hard, " Hard delete (a tombstone: the stream can never be written again)"),
        button)),
    result);
}

/** Runs a write and shows its outcome (the server's error included). */
async function report(result, write, success) {
  try {
    await write();
    result.className = "";
    result.textContent = success;
  } catch (error) {
    result.className = "error";
    result.textContent = error instanceof LoginNeeded ? `Log in first: ${error.message}` : String(error.message);
  }
}
