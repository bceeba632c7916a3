// The fields of a subscription group's settings, for the form that creates
// a group and the one that edits it: the settings people change most, by
// v5's names (docs/subscriptions.md); the others keep their values.

import { h } from "./dom.js";

/** v5's defaults, which a new group starts from. */
export const DEFAULTS = {
  startFrom: 0,
  namedConsumerStrategy: "RoundRobin",
  messageTimeoutMilliseconds: 10000,
  maxRetryCount: 10,
  maxSubscriberCount: 10,
  resolveLinktos: false,
};

const STRATEGIES = ["RoundRobin", "DispatchToSingle", "Pinned"];

const LABELS = {
  startFrom: "Start from (an event number, -1 for only new events; $all: a position)",
  namedConsumerStrategy: "Strategy",
  messageTimeoutMilliseconds: "Message timeout (ms)",
  maxRetryCount: "Retries before a message is parked",
  maxSubscriberCount: "Most consumers at once (0: no limit)",
  resolveLinktos: "Resolve links (deliver the events that $ce- and $et- link to)",
};

/** A number as typed, or the text itself (a `$all` position is 32 hex digits). */
function numberOr(text) {
  return /^-?\d+$/.test(text.trim()) ? Number(text) : text.trim();
}

/**
 * The fields for `config` (a group's `config`, or the defaults), and
 * `read()`: `config` with the fields' values.
 */
export function settingsFields(config = DEFAULTS) {
  const inputs = {};
  const fields = Object.keys(DEFAULTS).map((name) => {
    const value = config[name] ?? DEFAULTS[name];
    if (name === "namedConsumerStrategy") {
      inputs[name] = h("select", { name }, STRATEGIES.map((strategy) =>
        h("option", { value: strategy, selected: strategy === value }, strategy)));
    } else if (typeof DEFAULTS[name] === "boolean") {
      inputs[name] = h("input", { name, type: "checkbox", checked: value });
      return h("label", { class: "inline" }, inputs[name], LABELS[name]);
    } else {
      const numeric = name !== "startFrom";
      inputs[name] = h("input", { name, value, required: true, inputmode: "numeric",
        type: numeric ? "number" : "text", min: numeric ? 0 : null });
    }
    return h("label", {}, LABELS[name], inputs[name]);
  });
  const read = () => {
    const settings = { ...config };
    for (const [name, input] of Object.entries(inputs)) {
      settings[name] = input.type === "checkbox" ? input.checked
        : input.tagName === "SELECT" ? input.value : numberOr(input.value);
    }
    return settings;
  };
  return { fields, read };
}
