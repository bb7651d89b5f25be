// Ordered endpoints (SPEC §15): the dialog part that sets the order, the
// line of the Delivery options card that shows it, and the Head of line
// card — the delivery the others wait for, and why it waits.

import { api } from "./api.js";
import { attemptsSummary, deliveryAddress } from "./deliveries.js";
import { $, h, icon, relative, replace } from "./ui.js";

/** The card's line for the order. */
export function fact(endpoint) {
  const value = !endpoint.ordered
    ? h("span", { class: "muted" }, "Unordered: deliveries go side by side")
    : endpoint.ordering_key
      ? h("span", {}, "In order, per value of ", h("code", { id: "ep-ordering-key" }, endpoint.ordering_key), ": one at a time for each, values side by side")
      : h("span", {}, "In order, one at a time (per the events' own ", h("code", {}, "ordering_key"), " when they carry one)");
  return h("div", { class: "fact" }, h("dt", {}, "Delivery order"), h("dd", {}, value));
}

/** Fills the order part of the Add / Edit dialog from `endpoint`. */
export function fillForm(endpoint) {
  $("#ef-ordered").checked = Boolean(endpoint?.ordered);
  $("#ef-ordering-key").value = endpoint?.ordering_key || "";
  $("#ef-ordering-box").open = Boolean(endpoint?.ordered);
  syncKeyField();
}

/** The request's `ordered` and `ordering_key` fields. */
export function readForm() {
  const ordered = $("#ef-ordered").checked;
  const key = $("#ef-ordering-key").value.trim();
  return ordered ? { ordered, ordering_key: key === "" ? null : key } : { ordered };
}

/** The key only means something for an ordered endpoint. */
function syncKeyField() {
  $("#ef-ordering-key").disabled = !$("#ef-ordered").checked;
}

export function wire() {
  $("#ef-ordered").addEventListener("change", syncKeyField);
}

/** Which endpoint the Head of line card was last asked for: a late answer for another is dropped. */
let shownFor = null;

/**
 * The Head of line card of an ordered endpoint: its oldest pending delivery
 * (GET /v2/endpoint/{id}), and why the ones behind it wait. Hidden for an
 * unordered endpoint.
 */
export async function renderHeadOfLine(endpoint) {
  const card = $("#ep-line");
  shownFor = endpoint.endpoint_id;
  if (!endpoint.ordered) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  let detail;
  try {
    detail = await api.getEndpoint(endpoint.endpoint_id);
  } catch (error) {
    replace($("#ep-line-body"), h("p", { class: "muted small" }, `Could not load the head of line: ${error.message}`));
    return;
  }
  if (shownFor !== endpoint.endpoint_id) return;
  const head = detail.head_of_line;
  if (!head) {
    replace(
      $("#ep-line-body"),
      h("p", { class: "line-empty" }, icon("check"), h("span", {}, "Nothing is waiting: the next event goes out as soon as it is accepted.")),
    );
    return;
  }
  const attempts = head.attempts || [];
  const last = attempts[attempts.length - 1];
  const behind = detail.counts.pending - 1;
  const why = !last
    ? "It is being sent now (or is about to be)."
    : last.reason === "ok"
      ? "Its last attempt succeeded; it is being recorded."
      : `Its last attempt failed${last.status_code != null ? ` with HTTP ${last.status_code}` : ""}; ${
          head.next_attempt_at ? `the next is due ${relative(head.next_attempt_at)}` : "it is retried next"
        }. Nothing behind it in its line goes until it is delivered or dead.`;
  replace(
    $("#ep-line-body"),
    h(
      "div",
      { class: "line-head" },
      h(
        "p",
        {},
        h("span", { class: "event-name" }, head.event),
        " ",
        h("span", { class: "mono small", title: "Event ID" }, head.event_id),
        head.ordering_key ? h("span", { class: "chip", title: "Its line" }, `key ${head.ordering_key}`) : null,
        " ",
        h("a", { class: "btn btn-sm", href: deliveryAddress(endpoint.endpoint_id, head.delivery_id) }, icon("code"), "Request"),
      ),
      h("p", { id: "ep-line-why" }, why),
      h(
        "p",
        { class: "muted small" },
        behind > 0
          ? `${behind} more ${behind === 1 ? "delivery is" : "deliveries are"} pending: behind it, or at the head of ${endpoint.ordering_key ? "other keys' lines" : "their own key's line"}.`
          : "No other delivery is pending.",
      ),
      attemptsSummary(head, attempts),
    ),
  );
}
