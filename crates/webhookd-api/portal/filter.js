// An endpoint's payload filter (SPEC §15): the dialog part that edits it as
// JSON and previews it against a sample event — the server decides
// (POST /v2/filter-preview), so the filter language lives in one place —
// and the line of the Delivery options card that shows it.

import { api, ApiError } from "./api.js";
import { $, busy, h, icon, replace } from "./ui.js";

/** A filter the dialog cannot send: its text is not a JSON object. */
export class FilterTextError extends Error {}

/** The card's line for the filter. */
export function fact(endpoint) {
  return h(
    "div",
    { class: "fact" },
    h("dt", {}, "Payload filter"),
    h(
      "dd",
      {},
      endpoint.filter
        ? h("pre", { class: "filter-view", id: "ep-filter" }, JSON.stringify(endpoint.filter, null, 2))
        : h("span", { class: "muted" }, "None: every event of its types"),
    ),
  );
}

/** Fills the filter part of the Add / Edit dialog from `endpoint`. */
export function fillForm(endpoint, eventTypes) {
  $("#ef-filter").value = endpoint?.filter ? JSON.stringify(endpoint.filter, null, 2) : "";
  const type = endpoint?.events?.[0] || eventTypes[0] || "";
  $("#ef-sample").value = JSON.stringify({ event: type, data: {} }, null, 2);
  $("#ef-filter-box").open = Boolean(endpoint?.filter);
  clearPreview();
}

/** The filter text as the request's `filter` (null: none); throws FilterTextError. */
function parsed() {
  const text = $("#ef-filter").value.trim();
  if (text === "") return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new FilterTextError(`filter: is not JSON (${error.message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FilterTextError('filter: must be an object such as {"data.amount": {"$gte": 100}}');
  }
  return value;
}

/** The request's `filter` field; throws FilterTextError for text that is not an object. */
export function readForm() {
  return { filter: parsed() };
}

function clearPreview() {
  replace($("#ef-preview-result"));
}

function showPreview(kind, ...text) {
  replace(
    $("#ef-preview-result"),
    h("span", { class: `preview preview-${kind}` }, icon(kind === "yes" ? "check" : kind === "no" ? "x" : "alert"), h("span", {}, ...text)),
  );
}

async function onPreview() {
  let filter;
  let sample;
  try {
    filter = parsed();
  } catch (error) {
    showPreview("error", error.message.replace(/^filter: /, "The filter "));
    return;
  }
  if (filter === null) {
    showPreview("yes", "No filter: every event of the selected types is delivered.");
    return;
  }
  try {
    sample = JSON.parse($("#ef-sample").value);
  } catch (error) {
    showPreview("error", `The sample is not JSON (${error.message}).`);
    return;
  }
  await busy($("#ef-preview"), async () => {
    try {
      const { delivered } = await api.previewFilter(filter, sample);
      if (delivered) showPreview("yes", "This event would be delivered.");
      else showPreview("no", "This event would not be delivered: the filter does not hold for it.");
    } catch (error) {
      const message = error instanceof ApiError ? error.message : String(error);
      showPreview("error", message.replace(/^filter: /, "The filter: ").replace(/^event: /, "The sample: "));
    }
  });
}

export function wire() {
  $("#ef-preview").addEventListener("click", onPreview);
  $("#ef-filter").addEventListener("input", () => {
    clearPreview();
    // A refusal is about the text that was sent: editing it retires it.
    $("#ef-filter-error").hidden = true;
    $("#ef-filter").removeAttribute("aria-invalid");
  });
  $("#ef-sample").addEventListener("input", clearPreview);
}
