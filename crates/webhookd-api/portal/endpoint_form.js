// The Add / Edit endpoint dialog (SPEC §1, §9): URL, status, event types
// grouped as the catalog groups them, rate limit, delivery options
// (options.js); a refused field is marked and its reason shown under it in
// words.

import { api } from "./api.js";
import * as catalog from "./catalog.js";
import * as filter from "./filter.js";
import * as options from "./options.js";
import * as ordering from "./ordering.js";
import { $, busy, closeDialog, h, openDialog, replace } from "./ui.js";

/**
 * What the dialog needs of the page: the catalog's type names (`events`)
 * and definitions (`eventTypes`), how a call's error is shown (`attempt`),
 * and what follows a save (`saved(endpoint, edited)`).
 */
let host = null;

export function configure(hooks) {
  host = hooks;
}

export function wire() {
  $("#endpoint-form").addEventListener("submit", onSaveEndpoint);
  $("#ef-all").addEventListener("click", () => setAllEvents(true));
  $("#ef-none").addEventListener("click", () => setAllEvents(false));
  $("#ef-events").addEventListener("change", updateEventCount);
  options.wire();
  ordering.wire();
  filter.wire();
}

let editing = null;

export function open(endpoint) {
  editing = endpoint;
  const form = $("#endpoint-form");
  form.reset();
  $("#endpoint-form-error").hidden = true;
  clearFieldErrors(form);
  $("#dlg-endpoint-title").textContent = endpoint ? "Edit endpoint" : "Add endpoint";
  $("#ef-submit").textContent = endpoint ? "Save" : "Add endpoint";
  $("#ef-url").value = endpoint ? endpoint.url : "";
  $("#ef-rate").value = endpoint?.rate_limit ?? "";
  form.elements.status.value = endpoint ? endpoint.status : "enabled";
  const chosen = new Set(endpoint ? endpoint.events : []);
  replace(
    $("#ef-events"),
    [...catalog.group(host.events())].map(([group, types]) =>
      h(
        "fieldset",
        { class: "event-group" },
        h("legend", {}, group),
        types.map((type) =>
          h(
            "label",
            { class: "check" },
            h("input", { type: "checkbox", name: "events", value: type, checked: chosen.has(type) }),
            h("span", { title: catalog.describe(host.eventTypes(), type) }, type),
            // The checkbox is named by the type alone (SPEC §9); the badge
            // is for the eye, its meaning is in the title.
            catalog.isDeprecated(host.eventTypes(), type)
              ? h("span", { class: "badge badge-deprecated", "aria-hidden": "true", title: "Deprecated: producers are moving off it" }, "deprecated")
              : null,
          ),
        ),
      ),
    ),
  );
  updateEventCount();
  options.fillForm(endpoint);
  ordering.fillForm(endpoint);
  filter.fillForm(endpoint, host.events());
  openDialog($("#dlg-endpoint"), $("#ef-url"));
}

function setAllEvents(checked) {
  for (const box of $("#ef-events").querySelectorAll("input[type=checkbox]")) box.checked = checked;
  updateEventCount();
}

function updateEventCount() {
  const count = $("#ef-events").querySelectorAll("input:checked").length;
  $("#ef-count").textContent =
    count === 0 ? "None selected" : `${count} of ${host.events().length} selected`;
}

async function onSaveEndpoint(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearFieldErrors(form);
  let filtered;
  try {
    filtered = filter.readForm();
  } catch (error) {
    if (!(error instanceof filter.FilterTextError)) throw error;
    showFieldError(error);
    return;
  }
  const spec = {
    url: $("#ef-url").value.trim(),
    status: form.elements.status.value,
    events: [...$("#ef-events").querySelectorAll("input:checked")].map((box) => box.value),
    // Empty: no limit (null removes one an edit had).
    rate_limit: $("#ef-rate").value.trim() === "" ? null : Number($("#ef-rate").value),
    ...options.readForm(),
    ...ordering.readForm(),
    ...filtered,
  };
  const box = $("#endpoint-form-error");
  const target = editing;
  await busy($("#ef-submit"), async () => {
    const result = await host.attempt(box, () =>
      target ? api.updateEndpoint(target.endpoint_id, spec) : api.createEndpoint(spec),
    );
    if (!result.ok) {
      if (showFieldError(result.error)) box.hidden = true;
      return;
    }
    closeDialog($("#dlg-endpoint"));
    host.saved(result.value, Boolean(target));
  });
}

/** The form's inputs by the field names the API uses, with their labels. */
const FIELDS = {
  url: { input: "#ef-url", error: "#ef-url-error", label: "The URL" },
  rate_limit: { input: "#ef-rate", error: "#ef-rate-error", label: "The rate limit" },
  events: { input: "#ef-events", error: "#ef-events-error", label: "The events" },
  signature: { input: "#ef-signature", error: "#ef-signature-error", label: "The signature" },
  retry_schedule: { input: "#ef-schedule", error: "#ef-schedule-error", label: "The retry schedule" },
  headers: { input: "#ef-headers", error: "#ef-headers-error", label: "The headers" },
  filter: { input: "#ef-filter", error: "#ef-filter-error", label: "The filter" },
  ordered: { input: "#ef-ordered", error: "#ef-ordering_key-error", label: "Ordered" },
  ordering_key: { input: "#ef-ordering-key", error: "#ef-ordering_key-error", label: "The ordering key" },
};

/**
 * Puts a 40000 that names a field ("url: must use https", SPEC §1) next to
 * that field, in words ("The URL must use https"), and marks the field;
 * false when the answer names none (it stays in the form's alert).
 */
function showFieldError(error) {
  const [, name, rest] = /^(url|rate_limit|events|signature|retry_schedule|headers|filter|ordered|ordering_key): (.*)$/s.exec(error.message || "") || [];
  const field = FIELDS[name];
  if (!field) return false;
  const input = $(field.input);
  const slot = $(field.error);
  // "must use https" reads as a sentence after its subject; "\"x\" is not
  // a known event type" is one already.
  // A filter's problem starts with the path at fault ("data.amount: $gt
  // needs a number"): that reads after "In the filter,", not capitalised.
  slot.textContent = /^(is|are|must|needs?|has|can)\b/.test(rest)
    ? `${field.label} ${rest}`
    : name === "filter"
      ? `In the filter, ${rest}`
      : rest.charAt(0).toUpperCase() + rest.slice(1);
  slot.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.setAttribute("aria-describedby", [field.error.slice(1), input.dataset.hint].filter(Boolean).join(" "));
  // An option's error opens the options it is in.
  if (input.closest("details")) input.closest("details").open = true;
  if (name !== "events" && name !== "headers") input.focus();
  return true;
}

function clearFieldErrors(form) {
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
  for (const { input, error } of Object.values(FIELDS)) {
    $(error).hidden = true;
    const element = $(input);
    if (element.dataset.hint) element.setAttribute("aria-describedby", element.dataset.hint);
    else element.removeAttribute("aria-describedby");
  }
}
