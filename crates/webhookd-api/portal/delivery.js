// One delivery's own page (SPEC §9, §13): its attempts, and the request as
// sent — method, URL, headers with signatures, body — while the event's
// body is kept. Its address (#/endpoints/<id>/deliveries/<delivery_id>)
// can be shared; the viewer still signs in.

import { api } from "./api.js";
import { STATUS_LABELS, attemptsSummary, onResend } from "./deliveries.js";
import * as routes from "./routes.js";
import { $, h, icon, replace, timeEl, toast } from "./ui.js";

/** Loads `deliveryId` of `endpoint` into the view; `host` tells errors. */
export async function show(endpoint, deliveryId, host) {
  $("#dv-back").href = routes.address({ view: "endpoint", id: endpoint.endpoint_id });
  $("#dv-title").textContent = deliveryId;
  replace($("#dv-badges"));
  replace($("#dv-actions"));
  replace($("#dv-body"), h("div", { class: "placeholder", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), " Loading the delivery…"));
  let delivery;
  try {
    delivery = await api.getDelivery(endpoint.endpoint_id, deliveryId);
  } catch (error) {
    if (!host.handleError(error, () => show(endpoint, deliveryId, host))) {
      replace($("#dv-body"), h("div", { class: "alert alert-error", role: "alert" }, host.describeError(error)));
    }
    return;
  }
  render(endpoint, delivery, host);
}

function render(endpoint, delivery, host) {
  // Back to where this delivery is listed: its endpoint's tab of its status.
  $("#dv-back").href = routes.address({ view: "endpoint", id: endpoint.endpoint_id, tab: delivery.status });
  $("#dv-title").textContent = delivery.event;
  replace(
    $("#dv-badges"),
    h("span", { class: `badge badge-${delivery.status}` }, h("span", { class: "dot", "aria-hidden": "true" }), STATUS_LABELS[delivery.status] || delivery.status),
    delivery.test ? h("span", { class: "badge badge-test" }, "Test") : null,
    h("span", { class: "id-chip", title: "Delivery ID" }, delivery.delivery_id),
  );
  replace(
    $("#dv-actions"),
    delivery.status === "failed"
      ? h(
          "button",
          {
            type: "button",
            class: "btn",
            onclick: (event) => onResend(event.currentTarget, delivery, () => show(endpoint, delivery.delivery_id, host)),
          },
          icon("refresh"),
          "Resend",
        )
      : null,
  );
  replace(
    $("#dv-body"),
    h(
      "section",
      { class: "card", "aria-labelledby": "dv-h-facts" },
      h("h2", { id: "dv-h-facts" }, "Overview"),
      h(
        "dl",
        { class: "facts" },
        fact("Event ID", h("code", {}, delivery.event_id)),
        fact("Endpoint", h("code", {}, endpoint.url)),
        fact("Created", timeEl(delivery.created_at)),
        delivery.next_attempt_at ? fact("Next attempt", timeEl(delivery.next_attempt_at, { relativeFirst: true })) : null,
      ),
      h("h3", { class: "subhead" }, "Attempts"),
      attemptsSummary(delivery, delivery.attempts || [], true),
    ),
    requestCard(delivery),
  );
}

function fact(term, ...value) {
  return h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, value));
}

/** The request as sent, or why it can no longer be shown. */
function requestCard(delivery) {
  const request = delivery.request;
  const card = (...children) => h("section", { class: "card", "aria-labelledby": "dv-h-request" }, h("h2", { id: "dv-h-request" }, "Request"), ...children);
  if (!request) {
    return card(
      h(
        "p",
        { class: "muted" },
        "The payload of this event is no longer kept, so its request cannot be shown. Events' bodies are kept for a while after they arrive (72 hours unless your operator changed it); the attempts above stay.",
      ),
    );
  }
  const sent = request.attempt
    ? `As sent on attempt ${request.attempt}.`
    : "Not sent yet: this is the request as it will go. Its timestamp and signatures are made when it is sent.";
  const headers = Object.entries(request.headers).sort(([a], [b]) => a.localeCompare(b));
  return card(
    h("p", { class: "muted small" }, sent),
    request.signatures_omitted
      ? h("p", { class: "note" }, "Signatures are not shown: the secret that signed this attempt has since been replaced.")
      : null,
    h("p", { class: "request-line" }, h("span", { class: "method" }, request.method), " ", h("code", { class: "request-url" }, request.url)),
    h("h3", { class: "subhead", id: "dv-h-headers" }, "Headers"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "headers", "aria-labelledby": "dv-h-headers" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Value"))),
        h(
          "tbody",
          {},
          headers.map(([name, value]) => h("tr", {}, h("th", { scope: "row" }, h("code", {}, name)), h("td", {}, h("code", { class: "header-value" }, value)))),
        ),
      ),
    ),
    h(
      "div",
      { class: "subhead-row" },
      h("h3", { class: "subhead", id: "dv-h-payload" }, "Payload"),
      h("button", { type: "button", class: "btn btn-sm", onclick: () => copy(request.body) }, icon("copy"), "Copy payload"),
    ),
    h("pre", { class: "payload", "aria-labelledby": "dv-h-payload", tabindex: "0" }, pretty(request.body)),
    h("p", { class: "muted small" }, "Shown indented; the body was sent exactly as received, on one line, and signed that way."),
  );
}

/**
 * The body indented for reading (it was sent compact) — only when that
 * changes nothing but whitespace: a number JavaScript would round is shown
 * as sent.
 */
function pretty(body) {
  try {
    const parsed = JSON.parse(body);
    return JSON.stringify(parsed) === body ? JSON.stringify(parsed, null, 2) : body;
  } catch {
    return body;
  }
}

async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Payload copied, as sent.");
  } catch {
    toast("Copying was refused by the browser; select the payload instead.", "error");
  }
}
