// The endpoint view's Deliveries card (SPEC §9, §13): newest first, a tab
// per status with its count, filters, one summary line per delivery whose
// attempts expand, Resend for a dead one, a link to each delivery's own
// page (delivery.js), and the Pending tab refreshing itself while shown.

import { api, Code } from "./api.js";
import * as routes from "./routes.js";
import { $, busy, fromLocalInput, h, icon, localTime, relative, replace, timeEl, toast } from "./ui.js";

const PAGE_SIZE = 20;
/** How often the Pending tab refreshes itself while it shows something. */
const PENDING_POLL_MS = 3000;

/** The card's state: the tab, its loaded page(s), the filter. */
export const list = { status: "failed", items: [], next: null, loaded: false, generation: 0, filter: {} };
let pollTimer = null;

/**
 * What the card needs of the page: the endpoint shown (`currentEndpoint`),
 * whether the endpoint view is shown (`shown`), and how errors are told
 * (`handleError` for outages and sign-outs, `actionFailed`, `showFormError`).
 */
let host = null;

export function configure(hooks) {
  host = hooks;
}

const TAB_EMPTY = {
  failed: ["No failed deliveries", "Deliveries that used up all their retries land here, ready to re-send."],
  pending: ["Nothing pending", "Deliveries waiting for their first or next attempt show up here. Finished ones move to Delivered or Failed."],
  delivered: ["No delivered events yet", "Every delivery your endpoint accepted with a 2xx answer is listed here."],
};

export const REASONS = {
  ok: "OK",
  http_3xx: "Redirect (not followed)",
  http_4xx: "Client error (4xx)",
  http_429: "Too many requests (429)",
  http_5xx: "Server error (5xx)",
  http_other: "Unexpected HTTP status",
  timeout: "Timed out",
  dns: "Host name did not resolve",
  connection_refused: "Connection refused",
  connection_reset: "Connection reset",
  connect: "Could not connect",
  tls: "TLS error",
  protocol: "HTTP protocol error",
  blocked_address: "Blocked address",
  invalid_url: "Invalid URL",
  proxy: "Egress proxy failed",
  auth_token: "No OAuth2 token",
};

export const STATUS_LABELS = { failed: "Failed", pending: "Pending", delivered: "Delivered" };

export function wire() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      selectTab(tab.dataset.status, false);
      load(false);
    });
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      const target = tabs[(next + tabs.length) % tabs.length];
      target.focus();
      target.click();
    });
  }
  $("#deliveries-more").addEventListener("click", (event) => busy(event.currentTarget, () => load(true)));
  $("#filter-form").addEventListener("submit", onFilter);
  $("#filter-clear").addEventListener("click", () => {
    $("#filter-form").reset();
    setFilter({});
  });
  document.addEventListener("visibilitychange", schedulePoll);
}

export function selectTab(status, focus) {
  list.status = status;
  const endpoint = host.currentEndpoint();
  if (endpoint) routes.show({ view: "endpoint", id: endpoint.endpoint_id, tab: status }, true);
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const selected = tab.dataset.status === status;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected) {
      $("#deliveries-panel").setAttribute("aria-labelledby", tab.id);
      if (focus) tab.focus();
    }
  }
}

/** Loads the first page of the selected tab (or the next one, `append`). */
export async function load(append) {
  const endpoint = host.currentEndpoint();
  if (!endpoint) return;
  const generation = ++list.generation;
  const status = list.status;
  if (!append) {
    list.items = [];
    list.next = null;
    list.loaded = false;
    render();
  }
  $("#deliveries-error").hidden = true;
  try {
    const page = await api.listDeliveries(endpoint.endpoint_id, status, append ? list.next : null, PAGE_SIZE, list.filter);
    if (generation !== list.generation) return; // a newer load won
    list.items = append ? list.items.concat(page.deliveries) : page.deliveries;
    list.next = page.next_after || null;
    list.loaded = true;
    if (page.counts) showCounts(page.counts);
    render();
  } catch (error) {
    if (generation !== list.generation) return;
    list.loaded = true;
    render();
    if (!host.handleError(error, () => load(append))) {
      if (error.code === Code.NOT_FOUND) host.actionFailed(error);
      else host.showFormError($("#deliveries-error"), error);
    }
  }
  schedulePoll();
}

/** How many deliveries each tab holds, next to its name. */
function showCounts(counts) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const count = counts[tab.dataset.status];
    let badge = tab.querySelector(".count");
    if (!badge) {
      badge = h("span", { class: "count" });
      tab.append(" ", badge);
    }
    badge.textContent = count === undefined ? "" : String(count);
  }
}

/** The filter form: event type, event id, created since (SPEC §13). */
function onFilter(event) {
  event.preventDefault();
  const form = event.currentTarget;
  setFilter({
    event: form.elements.event.value || null,
    eventId: form.elements.event_id.value.trim() || null,
    since: fromLocalInput(form.elements.since.value),
  });
}

function setFilter(filter) {
  list.filter = filter;
  $("#filter-clear").hidden = !Object.values(filter).some((value) => value != null);
  load(false);
}

/** The filter form for `endpoint`: its event types, nothing chosen. */
export function resetFilter(endpoint) {
  $("#filter-form").reset();
  replace(
    $("#filter-event"),
    h("option", { value: "" }, "All event types"),
    endpoint.events.map((name) => h("option", { value: name }, name)),
  );
  $("#filter-clear").hidden = true;
  list.filter = {};
}

function render() {
  const { items, loaded, next, status } = list;
  const container = $("#deliveries");
  $("#deliveries-more").hidden = !next;
  if (!loaded && items.length === 0) {
    replace(container, h("div", { class: "placeholder", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), " Loading deliveries…"));
    return;
  }
  if (items.length === 0) {
    const [title, text] = TAB_EMPTY[status];
    replace(container, h("div", { class: "empty-inline" }, h("p", { class: "empty-title" }, title), h("p", { class: "muted small" }, text)));
    return;
  }
  replace(container, h("ol", { class: "delivery-list" }, items.map(deliveryItem)));
}

/** The page of one delivery (delivery.js). */
export function deliveryAddress(endpointId, deliveryId) {
  return routes.address({ view: "delivery", id: endpointId, delivery: deliveryId });
}

function deliveryItem(delivery) {
  const endpoint = host.currentEndpoint();
  const attempts = delivery.attempts || [];
  const head = h(
    "div",
    { class: "delivery-head" },
    h("span", { class: `badge badge-${delivery.status}` }, h("span", { class: "dot", "aria-hidden": "true" }), STATUS_LABELS[delivery.status] || delivery.status),
    h("span", { class: "event-name" }, delivery.event),
    delivery.test ? h("span", { class: "badge badge-test" }, "Test") : null,
    delivery.ordering_key ? h("span", { class: "chip", title: "The line it waits in (ordered endpoint)" }, `key ${delivery.ordering_key}`) : null,
    h("span", { class: "spacer" }),
    h("span", { class: "delivery-when muted small" }, timeEl(delivery.created_at, { relativeFirst: true })),
    h(
      "a",
      {
        class: "btn btn-sm",
        href: deliveryAddress(endpoint.endpoint_id, delivery.delivery_id),
        "aria-describedby": `dl-${delivery.delivery_id}`,
      },
      icon("code"),
      "Request",
    ),
    delivery.status === "failed"
      ? h(
          "button",
          {
            type: "button",
            class: "btn btn-sm",
            "aria-describedby": `dl-${delivery.delivery_id}`,
            onclick: (event) => onResend(event.currentTarget, delivery),
          },
          icon("refresh"),
          "Resend",
        )
      : null,
  );
  const sub = h(
    "p",
    { class: "delivery-sub", id: `dl-${delivery.delivery_id}` },
    h("span", { class: "mono", title: "Delivery ID" }, delivery.delivery_id),
    h("span", { class: "sep", "aria-hidden": "true" }, "·"),
    h("span", { class: "mono", title: "Event ID (X-Webhook-Id)" }, delivery.event_id),
    delivery.next_attempt_at || delivery.held ? h("span", { class: "sep", "aria-hidden": "true" }, "·") : null,
    delivery.next_attempt_at ? h("span", {}, `next attempt ${relative(delivery.next_attempt_at)}`) : null,
    delivery.held ? h("span", {}, "waits for the delivery before it in its line") : null,
  );
  return h("li", { class: `delivery delivery-${delivery.status}` }, head, sub, attemptsSummary(delivery, attempts));
}

/**
 * The attempts as one line — how many, and how the latest went — that
 * expands to the table.
 */
export function attemptsSummary(delivery, attempts, open = false) {
  if (!attempts.length) return h("p", { class: "muted small no-attempts" }, "Not attempted yet.");
  const last = attempts[attempts.length - 1];
  const count = `${attempts.length} ${attempts.length === 1 ? "attempt" : "attempts"}`;
  const outcome = [
    last.status_code != null ? String(last.status_code) : null,
    REASONS[last.reason] || last.reason,
  ].filter(Boolean);
  return h(
    "details",
    { class: "attempts-summary", open: open || null },
    h(
      "summary",
      {},
      h("span", { class: "attempts-count" }, count),
      h("span", { class: "sep", "aria-hidden": "true" }, "·"),
      h("span", { class: last.reason === "ok" ? "" : "text-bad" }, `latest: ${outcome.join(" ")}`),
      h("span", { class: "sep", "aria-hidden": "true" }, "·"),
      h("span", { class: "muted" }, formatDuration(last.duration_ms)),
      h("span", { class: "sep", "aria-hidden": "true" }, "·"),
      h("span", { class: "muted" }, relative(last.at)),
    ),
    attemptsTable(delivery, attempts),
  );
}

function attemptsTable(delivery, attempts) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "attempts" },
      h("caption", { class: "sr-only" }, `Attempts of ${delivery.event} (${delivery.delivery_id})`),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col", class: "col-num" }, "#"),
          h("th", { scope: "col" }, "Time"),
          h("th", { scope: "col" }, "HTTP status"),
          h("th", { scope: "col", class: "col-num" }, "Duration"),
          h("th", { scope: "col" }, "Reason"),
          h("th", { scope: "col", class: "col-response" }, "Response"),
        ),
      ),
      h(
        "tbody",
        {},
        attempts.map((a) =>
          h(
            "tr",
            {},
            h("td", { class: "col-num", "data-label": "#" }, String(a.attempt)),
            h("td", { class: "nowrap", "data-label": "Time" }, h("time", { datetime: new Date(a.at * 1000).toISOString(), title: relative(a.at) }, localTime(a.at))),
            h(
              "td",
              { "data-label": "HTTP status" },
              a.status_code != null
                ? h("span", { class: `code code-${Math.floor(a.status_code / 100)}xx` }, String(a.status_code))
                : h("span", { class: "muted" }, "none"),
            ),
            h("td", { class: "col-num nowrap", "data-label": "Duration" }, formatDuration(a.duration_ms)),
            h("td", { class: a.reason === "ok" ? "" : "text-bad", title: a.reason, "data-label": "Reason" }, REASONS[a.reason] || a.reason),
            h("td", { class: "col-response", "data-label": "Response" }, responseExcerpt(a.response)),
          ),
        ),
      ),
    ),
  );
}

export function formatDuration(ms) {
  if (ms < 1000) return `${ms} ms`;
  return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

function responseExcerpt(text) {
  if (!text) return h("span", { class: "muted" }, "—");
  const oneLine = text.replace(/\s+/g, " ").trim();
  if (oneLine.length <= 48 && !text.includes("\n")) return h("code", { class: "response-short" }, oneLine);
  return h(
    "details",
    { class: "response" },
    h("summary", {}, h("code", {}, oneLine.slice(0, 48) + "…")),
    h("pre", {}, text),
  );
}

export async function onResend(button, delivery, after = () => load(false)) {
  const endpoint = host.currentEndpoint();
  if (!endpoint) return;
  await busy(button, async () => {
    try {
      await api.resend(endpoint.endpoint_id, delivery.delivery_id);
      toast("Re-sent: one more attempt is on its way. Follow it under Pending.");
      await after();
    } catch (error) {
      if (!host.handleError(error, () => onResend(button, delivery, after))) host.actionFailed(error);
    }
  });
}

// The Pending tab follows itself while it has something to show.

export function schedulePoll() {
  stopPoll();
  const wanted =
    host.shown() &&
    list.status === "pending" &&
    list.items.length > 0 &&
    !list.next &&
    document.visibilityState === "visible";
  if (wanted) pollTimer = setTimeout(pollPending, PENDING_POLL_MS);
}

export function stopPoll() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

async function pollPending() {
  if (!host.shown() || list.status !== "pending") return;
  const endpoint = host.currentEndpoint();
  if (!endpoint) return;
  const generation = ++list.generation;
  try {
    const page = await api.listDeliveries(endpoint.endpoint_id, "pending", null, PAGE_SIZE, list.filter);
    if (generation !== list.generation) return;
    list.items = page.deliveries;
    list.next = page.next_after || null;
    if (page.counts) showCounts(page.counts);
    render();
  } catch {
    // A missed poll is not worth an error; the Refresh button says more.
  }
  schedulePoll();
}
