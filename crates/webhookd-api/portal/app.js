// The webhookd portal: endpoint owners sign in with an API key or a portal
// link and manage their endpoints through the /v2 API (SPEC §9).
//
// One page, five views (sign-in, endpoint list, one endpoint, one
// delivery, event catalog). Each view has its own address (routes.js); the
// address never carries a credential. Rooms of their own: the deliveries
// card (deliveries.js), a delivery's page (delivery.js), the endpoint
// dialog (endpoint_form.js), the catalog page (catalog.js), the signing
// secret card (secret.js), the delivery order (ordering.js).

import { api, ApiError, Code, credential } from "./api.js";
import { LINK_MESSAGES, linkFromAddress, signInWithLink } from "./links.js";
import * as catalog from "./catalog.js";
import * as deliveries from "./deliveries.js";
import * as delivery from "./delivery.js";
import * as endpointForm from "./endpoint_form.js";
import * as options from "./options.js";
import * as ordering from "./ordering.js";
import * as routes from "./routes.js";
import * as secret from "./secret.js";
import {
  $, busy, closeDialog, fromLocalInput, h, icon, localTime, openDialog, relative, replace,
  timeEl, toast, toLocalInput,
} from "./ui.js";

const MAX_ENDPOINTS = 20;
/** Failed deliveries the Recover confirmation counts before it says "more than". */
const RECOVER_COUNT_MOST = 1000;

const state = {
  events: [],
  /** name → `{name, description, schema?, deprecated?}`. */
  eventTypes: new Map(),
  endpoints: [],
  username: null,
  view: "loading",
  /** endpoint_id of the endpoint (or delivery) view. */
  current: null,
  /** endpoint_id the endpoint view's tab and filter were set up for. */
  detailOf: null,
};

// ---------------------------------------------------------------- start

function start() {
  for (const button of document.querySelectorAll("[data-icon]")) {
    button.prepend(icon(button.dataset.icon));
  }
  wire();
  const link = linkFromAddress();
  if (link) openLink(link);
  else if (credential.get()) loadAccount();
  else showSignIn();
  // A portal link opened while the page is already open in this tab, or
  // an address typed or pasted.
  window.addEventListener("hashchange", () => {
    const link = linkFromAddress();
    if (link) openLink(link);
    else followAddress();
  });
  // Back and Forward.
  window.addEventListener("popstate", followAddress);
}

/** Shows the view the address names, once signed in. */
function followAddress() {
  if (!state.username) return;
  const route = routes.parse(location.hash);
  if (route.view === "catalog") showCatalog(false);
  else if (route.view === "endpoint" && state.endpoints.some((e) => e.endpoint_id === route.id)) {
    showDetail(route.id, route.tab, false);
  } else if (route.view === "delivery" && state.endpoints.some((e) => e.endpoint_id === route.id)) {
    showDelivery(route.id, route.delivery, false);
  } else {
    if (route.view === "endpoint" || route.view === "delivery") toast("That endpoint does not exist (any more) in this account.", "error");
    showList(true, false);
  }
}

/** Signs in with a portal link (links.js); a refused one keeps an open session. */
async function openLink(link) {
  const signedIn = Boolean(credential.get());
  const refused = (message) => {
    if (signedIn) toast(message, "error");
    else showSignIn(message);
  };
  if (await signInWithLink(link, state.username, refused)) {
    state.current = null;
    state.detailOf = null;
    showView("loading");
    loadAccount();
  } else if (signedIn && !state.username) {
    loadAccount();
  }
}

function wire() {
  $("#signin-form").addEventListener("submit", onSignIn);
  $("#sign-out").addEventListener("click", signOut);
  $("#banner-retry").addEventListener("click", () => retryAfterOutage());
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.addEventListener("click", () => (link.dataset.nav === "catalog" ? showCatalog() : showList()));
  }
  $("#add-endpoint").addEventListener("click", () => endpointForm.open(null));
  $("#back").addEventListener("click", () => showList());
  $("#ep-edit").addEventListener("click", () => endpointForm.open(currentEndpoint()));
  $("#ep-toggle").addEventListener("click", onToggle);
  $("#ep-delete").addEventListener("click", onDelete);
  secret.wire(currentEndpoint);
  $("#ep-rotate").addEventListener("click", () => {
    $("#rotate-error").hidden = true;
    $("#rotate-form").reset();
    openDialog($("#dlg-rotate"));
  });
  $("#rotate-form").addEventListener("submit", onRotate);
  $("#test-form").addEventListener("submit", onSendTest);
  $("#deliveries-refresh").addEventListener("click", (event) =>
    busy(event.currentTarget, () => refreshDetail()),
  );
  $("#recover-form").addEventListener("submit", onRecover);
  endpointForm.configure({
    events: () => state.events,
    eventTypes: () => state.eventTypes,
    attempt,
    saved: (value, edited) => {
      if (edited) {
        storeEndpoint(value);
        toast("Changes saved.");
      } else {
        setEndpoints(state.endpoints.concat([value]));
        showList(false);
        toast("Endpoint added. Open it to copy its signing secret.");
      }
    },
  });
  endpointForm.wire();
  $("#confirm-form").addEventListener("submit", onConfirm);
  deliveries.configure({
    currentEndpoint,
    shown: () => state.view === "endpoint",
    handleError,
    actionFailed,
    showFormError,
  });
  deliveries.wire();
  for (const dialog of document.querySelectorAll("dialog")) {
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      closeDialog(dialog);
    });
    for (const button of dialog.querySelectorAll("[data-close]")) {
      button.addEventListener("click", () => closeDialog(dialog));
    }
  }
}

// ---------------------------------------------------------------- sign-in

const SIGN_IN_MESSAGES = {
  link: LINK_MESSAGES.spent,
  key: "This API key is not valid. Check it (it may have been revoked) and try again.",
};

function showSignIn(message) {
  deliveries.stopPoll();
  state.endpoints = [];
  state.username = null;
  $("#nav").hidden = true;
  $("#account").hidden = true;
  hideBanner();
  const error = $("#signin-error");
  error.hidden = !message;
  replace(error, message ? [icon("alert"), h("span", {}, message)] : []);
  showView("signin");
  $("#api-key").focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("#api-key");
  const key = input.value.trim();
  if (!key) {
    showSignIn("Enter your API key to sign in.");
    return;
  }
  // What was typed stays until the key works: a refused key is corrected
  // in place, not typed again.
  credential.set(key, "key");
  await busy(event.submitter || $("#signin-form button"), () => loadAccount());
}

function signOut() {
  credential.clear();
  state.current = null;
  state.detailOf = null;
  routes.clear();
  showSignIn();
  toast("Signed out.");
}

/** Loads what every view needs: the user's endpoints and the event catalog. */
async function loadAccount() {
  if (!["endpoints", "endpoint", "catalog"].includes(state.view)) showView("loading");
  try {
    const [username, endpoints, events] = await Promise.all([
      api.whoAmI(),
      api.listEndpoints(),
      api.listEvents(),
    ]);
    state.username = username;
    $("#api-key").value = "";
    state.events = events.map((type) => type.name);
    state.eventTypes = new Map(events.map((type) => [type.name, type]));
    setEndpoints(endpoints);
    hideBanner();
    $("#nav").hidden = false;
    $("#account").hidden = false;
    if (state.view === "endpoint" && currentEndpoint()) showDetail(state.current);
    else if (state.view === "catalog") showCatalog();
    else followAddress();
  } catch (error) {
    handleError(error, loadAccount);
  }
}

function setEndpoints(endpoints) {
  state.endpoints = endpoints;
  replace($(".account-name"), ["Signed in as ", h("strong", {}, state.username)]);
}

// ---------------------------------------------------------------- errors

let retryAction = null;

/**
 * The common answers to a failed request: a refused credential sends the
 * user back to the sign-in form; an outage shows the banner with Retry.
 * Anything else is for the caller to show next to its form (returns false).
 */
function handleError(error, retry) {
  if (!(error instanceof ApiError)) throw error;
  if (error.code === Code.UNAUTHORIZED) {
    const kind = credential.kind();
    credential.clear();
    showSignIn(SIGN_IN_MESSAGES[kind] || SIGN_IN_MESSAGES.key);
    return true;
  }
  if (error.isOutage) {
    showBanner(error, retry);
    if (state.view === "loading") {
      showView("unavailable");
      setEndpoints([]);
      $("#account").hidden = false; // signing out still works
    }
    return true;
  }
  return false;
}

function showBanner(error, retry) {
  retryAction = retry;
  const text =
    error.code === Code.NETWORK
      ? "webhookd cannot be reached right now (the network request failed). Check your connection and try again."
      : `webhookd cannot reach its store right now (${error.message}). Try again in a moment.`;
  replace($("#banner-text"), icon("alert"), h("span", {}, text));
  $("#banner").hidden = false;
}

function hideBanner() {
  $("#banner").hidden = true;
  retryAction = null;
}

async function retryAfterOutage() {
  const action = retryAction || loadAccount;
  await busy($("#banner-retry"), async () => {
    hideBanner();
    await action();
  });
}

/** Shows a 40000 (or other) answer in a form's alert box. */
function showFormError(box, error) {
  replace(box, icon("alert"), h("span", {}, error.message));
  box.hidden = false;
}

/** Runs an API call for a form: common errors handled, the rest shown in `box`. */
async function attempt(box, work, retry) {
  box.hidden = true;
  try {
    return { ok: true, value: await work() };
  } catch (error) {
    if (!handleError(error, retry)) showFormError(box, error);
    return { ok: false, error };
  }
}

// ---------------------------------------------------------------- views

const VIEWS = ["loading", "signin", "endpoints", "endpoint", "delivery", "catalog"];

function showView(name) {
  state.view = name;
  for (const view of VIEWS) $(`#view-${view}`).hidden = view !== name;
  if (name === "unavailable") {
    replace(
      $("#view-loading"),
      h("span", { class: "muted" }, "Your endpoints will appear here as soon as webhookd answers."),
    );
    $("#view-loading").hidden = false;
  } else if (name === "loading") {
    replace($("#view-loading"), h("span", { class: "spinner", "aria-hidden": "true" }), " Loading…");
  }
  const section = name === "endpoint" || name === "delivery" ? "endpoints" : name;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (name !== "endpoint") deliveries.stopPoll();
}

/** Moves focus to a view's heading, so keyboard and screen reader users follow. */
function focusHeading(id) {
  const heading = document.getElementById(id);
  heading.setAttribute("tabindex", "-1");
  heading.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}

// ---------------------------------------------------------------- endpoint list

function statusOf(endpoint) {
  if (endpoint.status === "disabled") {
    return endpoint.disabled_reason
      ? { key: "auto-disabled", label: "Disabled by webhookd" }
      : { key: "disabled", label: "Disabled" };
  }
  if (endpoint.failing_since) return { key: "failing", label: "Failing" };
  return { key: "enabled", label: "Enabled" };
}

function statusBadge(endpoint) {
  const status = statusOf(endpoint);
  return h("span", { class: `badge badge-${status.key}` }, h("span", { class: "dot", "aria-hidden": "true" }), status.label);
}

function showList(focus = true, record = true) {
  if (record) routes.show({ view: "endpoints" });
  showView("endpoints");
  renderList();
  if (focus) focusHeading("endpoints-title");
}

function renderList() {
  const list = state.endpoints;
  const count = list.length;
  $("#add-endpoint").disabled = count >= MAX_ENDPOINTS;
  $("#endpoints-sub").textContent =
    count === 0
      ? "The URLs webhookd sends your events to."
      : count >= MAX_ENDPOINTS
        ? `${count} of ${MAX_ENDPOINTS} endpoints — the limit; delete one to add another.`
        : `${count} of ${MAX_ENDPOINTS} endpoints. Select one to see its deliveries and secret.`;
  const body = $("#endpoints-body");
  if (count === 0) {
    replace(
      body,
      h(
        "div",
        { class: "card empty-state" },
        h("div", { class: "empty-icon" }, icon("inbox")),
        h("h2", {}, "No endpoints yet — add one to start receiving webhooks"),
        h(
          "p",
          { class: "muted" },
          "An endpoint is a URL of yours. webhookd signs every event you subscribe it to and POSTs it there, retrying until it answers 2xx.",
        ),
      ),
    );
    return;
  }
  replace(
    body,
    h(
      "ul",
      { class: "card endpoint-list", "aria-label": "Your endpoints" },
      list.map((endpoint) => {
        const failing = endpoint.status === "enabled" && endpoint.failing_since;
        return h(
          "li",
          { class: "endpoint-row" },
          h(
            "div",
            { class: "endpoint-main" },
            h(
              "button",
              { type: "button", class: "row-link", onclick: () => showDetail(endpoint.endpoint_id) },
              endpoint.url,
            ),
            h(
              "p",
              { class: "endpoint-meta" },
              h("span", {}, eventSummary(endpoint.events)),
              h("span", { class: "sep", "aria-hidden": "true" }, "·"),
              h("span", {}, "Created ", h("time", { title: localTime(endpoint.created_at) }, relative(endpoint.created_at))),
              failing
                ? [
                    h("span", { class: "sep", "aria-hidden": "true" }, "·"),
                    h("span", { class: "text-warn" }, `Failing since ${relative(endpoint.failing_since)}`),
                  ]
                : null,
            ),
          ),
          statusBadge(endpoint),
          icon("chevron", "icon row-chevron"),
        );
      }),
    ),
  );
}

function eventSummary(events) {
  if (events.length <= 2) return events.join(", ");
  return `${events[0]} and ${events.length - 1} more`;
}

// ---------------------------------------------------------------- one endpoint

function currentEndpoint() {
  return state.endpoints.find((endpoint) => endpoint.endpoint_id === state.current) || null;
}

function showDetail(endpointId, tab = null, record = true) {
  // The endpoint view keeps its tab and filter for the endpoint it was
  // set up for (coming back from one of its deliveries finds them).
  const switching = state.detailOf !== endpointId;
  state.current = endpointId;
  state.detailOf = endpointId;
  const shownTab = tab || (switching ? "failed" : deliveries.list.status);
  if (record) routes.show({ view: "endpoint", id: endpointId, tab: shownTab });
  if (switching) {
    secret.hide();
    $("#recover-since").value = toLocalInput(new Date(Date.now() - 86400 * 1000));
    $("#recover-until").value = "";
    $("#recover-result").textContent = "";
    $("#recover-error").hidden = true;
    $("#test-error").hidden = true;
    const endpoint = currentEndpoint();
    if (endpoint) deliveries.resetFilter(endpoint);
  }
  showView("endpoint");
  renderDetail();
  if (switching || tab) deliveries.selectTab(shownTab, false);
  deliveries.load(false);
  focusHeading("ep-title");
}

function renderDetail() {
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  $("#ep-title").textContent = endpoint.url;
  replace(
    $("#ep-badges"),
    statusBadge(endpoint),
    h("span", { class: "id-chip", title: "Endpoint ID" }, endpoint.endpoint_id),
  );
  const toggle = $("#ep-toggle");
  replace(toggle, icon("power"), endpoint.status === "enabled" ? "Disable" : "Enable");

  replace($("#ep-alerts"), endpointAlerts(endpoint), options.certificateAlert(endpoint));

  replace(
    $("#ep-overview"),
    fact("Status", statusBadge(endpoint)),
    fact(
      `Events (${endpoint.events.length})`,
      h("ul", { class: "chips" }, endpoint.events.map((name) => h("li", { class: "chip" }, name))),
    ),
    endpoint.failing_since ? fact("Failing since", timeEl(endpoint.failing_since)) : null,
    fact("Rate limit", endpoint.rate_limit ? `${endpoint.rate_limit} per second` : "None"),
    fact("Created", timeEl(endpoint.created_at)),
    fact("Endpoint ID", h("code", {}, endpoint.endpoint_id)),
    fact("Owner", endpoint.username),
  );

  secret.render(endpoint);
  options.renderCard(endpoint);
  ordering.renderHeadOfLine(endpoint);

  const select = $("#test-event");
  const previous = select.value;
  replace(select, endpoint.events.map((name) => h("option", { value: name }, name)));
  if (endpoint.events.includes(previous)) select.value = previous;
}

function fact(term, ...value) {
  return h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, value));
}

function endpointAlerts(endpoint) {
  if (endpoint.status === "disabled" && endpoint.disabled_reason) {
    return h(
      "div",
      { class: "alert alert-warn" },
      icon("alert"),
      h(
        "div",
        {},
        h("strong", {}, "webhookd disabled this endpoint: "),
        endpoint.disabled_reason,
        h("br"),
        "New deliveries wait until you enable it again (or a test event succeeds); then they resume.",
      ),
    );
  }
  if (endpoint.status === "disabled") {
    return h(
      "div",
      { class: "alert alert-info" },
      icon("power"),
      h(
        "div",
        {},
        "This endpoint is disabled: webhookd sends it nothing until you enable it. Events published meanwhile are not delivered to it, not even later; deliveries already pending wait and go once it is enabled. Test events still go out.",
      ),
    );
  }
  if (endpoint.failing_since) {
    return h(
      "div",
      { class: "alert alert-warn" },
      icon("alert"),
      h(
        "div",
        {},
        h("strong", {}, "Deliveries are failing. "),
        "The current failure streak began ",
        timeEl(endpoint.failing_since),
        ". webhookd keeps retrying; if nothing succeeds for a long time (5 days by default) it disables the endpoint.",
      ),
    );
  }
  return null;
}

/** Puts a changed endpoint (from PUT or rotate) into the state and the page. */
function storeEndpoint(updated) {
  state.endpoints = state.endpoints.map((endpoint) =>
    endpoint.endpoint_id === updated.endpoint_id ? updated : endpoint,
  );
  setEndpoints(state.endpoints);
  if (state.view === "endpoint") renderDetail();
}

async function onToggle(event) {
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  const status = endpoint.status === "enabled" ? "disabled" : "enabled";
  await busy(event.currentTarget, async () => {
    try {
      const updated = await api.updateEndpoint(endpoint.endpoint_id, {
        url: endpoint.url,
        events: endpoint.events,
        status,
      });
      storeEndpoint(updated);
      toast(
        status === "enabled"
          ? "Endpoint enabled."
          : "Endpoint disabled. Events published while it is disabled are not delivered to it.",
      );
    } catch (error) {
      if (!handleError(error, () => onToggle(event))) actionFailed(error);
    }
  });
}

/** An action outside a form failed: say so, or go back if the endpoint is gone. */
function actionFailed(error) {
  if (error.code === Code.NOT_FOUND && /endpoint/.test(error.message)) {
    toast("This endpoint no longer exists.", "error");
    loadAccount().then(() => showList());
    return;
  }
  toast(error.message, "error");
}

// Confirmation dialog (Delete, Recover).

let confirmAction = null;

function confirmWith({ title, text, detail, action, label, actionIcon = "trash", danger = true }) {
  $("#dlg-confirm-title").textContent = title;
  $("#dlg-confirm-text").textContent = text;
  $("#dlg-confirm-detail").textContent = detail || "";
  $("#dlg-confirm-detail").hidden = !detail;
  replace($("#confirm-submit"), icon(actionIcon), label);
  $("#confirm-submit").className = danger ? "btn btn-danger" : "btn btn-primary";
  $("#confirm-error").hidden = true;
  confirmAction = action;
  openDialog($("#dlg-confirm"));
}

async function onConfirm(event) {
  event.preventDefault();
  if (!confirmAction) return;
  const action = confirmAction;
  await busy($("#confirm-submit"), async () => {
    const result = await attempt($("#confirm-error"), action);
    if (result.ok) closeDialog($("#dlg-confirm"));
  });
}

function onDelete() {
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  confirmWith({
    title: "Delete this endpoint?",
    text: "webhookd stops sending to it at once and drops its pending retries. Its deliveries are no longer listed. This cannot be undone.",
    detail: endpoint.url,
    label: "Delete",
    action: async () => {
      await api.deleteEndpoint(endpoint.endpoint_id);
      setEndpoints(state.endpoints.filter((e) => e.endpoint_id !== endpoint.endpoint_id));
      state.current = null;
      state.detailOf = null;
      closeDialog($("#dlg-confirm"));
      showList();
      toast("Endpoint deleted.");
    },
  });
}

async function onRotate(event) {
  event.preventDefault();
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  const grace = Number(new FormData(event.currentTarget).get("grace"));
  await busy($("#rotate-submit"), async () => {
    const result = await attempt($("#rotate-error"), () => api.rotateSecret(endpoint.endpoint_id, grace));
    if (!result.ok) return;
    closeDialog($("#dlg-rotate"));
    storeEndpoint(result.value);
    toast(
      result.value.previous_secret_expires_at
        ? `Secret rotated. The previous one keeps signing until ${localTime(result.value.previous_secret_expires_at)}.`
        : "Secret rotated. The previous one no longer signs anything.",
    );
  });
}

async function onSendTest(event) {
  event.preventDefault();
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  const chosen = $("#test-event").value || undefined;
  await busy($("#test-send"), async () => {
    const result = await attempt($("#test-error"), () => api.sendTest(endpoint.endpoint_id, chosen));
    if (!result.ok) return;
    toast(`Test event sent (${chosen || endpoint.events[0]}). Follow it under Pending.`);
    deliveries.selectTab("pending", false);
    await deliveries.load(false);
  });
}

async function onRecover(event) {
  event.preventDefault();
  const endpoint = currentEndpoint();
  if (!endpoint) return;
  const since = fromLocalInput($("#recover-since").value);
  const until = fromLocalInput($("#recover-until").value);
  const box = $("#recover-error");
  const result = $("#recover-result");
  result.textContent = "";
  if (since == null) {
    showFormError(box, new Error("Since: pick the date and time the outage began."));
    $("#recover-since").focus();
    return;
  }
  if (until != null && until < since) {
    showFormError(box, new Error("Until: must not be before Since."));
    return;
  }
  await busy($("#recover-submit"), async () => {
    const counted = await attempt(box, () => countFailed(endpoint, since, until));
    if (!counted.ok) return;
    const { count, more } = counted.value;
    if (count === 0) {
      result.textContent = "No failed deliveries in that window: nothing to re-send.";
      return;
    }
    const many = `${more ? "More than " : ""}${count} failed ${count === 1 && !more ? "delivery" : "deliveries"}`;
    confirmWith({
      title: `Recover ${many.toLowerCase()}?`,
      text:
        count === 1 && !more
          ? "It was created in the window and gets one more attempt, signed and sent like any delivery."
          : "They were created in the window; each gets one more attempt, oldest first, signed and sent like any delivery.",
      detail: endpoint.url,
      label: "Recover",
      actionIcon: "history",
      danger: false,
      action: async () => {
        const recovered = (await api.recover(endpoint.endpoint_id, since, until)).recovered;
        closeDialog($("#dlg-confirm"));
        result.textContent =
          recovered === 0
            ? "No failed deliveries in that window: nothing to re-send."
            : `${recovered} failed ${recovered === 1 ? "delivery gets" : "deliveries get"} one more attempt, oldest first.`;
        if (recovered > 0) {
          toast(`Recovering ${recovered} ${recovered === 1 ? "delivery" : "deliveries"}.`);
          await deliveries.load(false);
        }
      },
    });
  });
}

/** How many failed deliveries of `endpoint` were created in the window, up to `RECOVER_COUNT_MOST`. */
async function countFailed(endpoint, since, until) {
  let count = 0;
  let after = null;
  do {
    const page = await api.listDeliveries(endpoint.endpoint_id, "failed", after, 100, { since, until });
    count += page.deliveries.length;
    after = page.next_after || null;
  } while (after && count < RECOVER_COUNT_MOST);
  return { count, more: Boolean(after) };
}

// ---------------------------------------------------------------- deliveries

/** Refresh button: the endpoint (its failure streak may have changed) and the tab. */
async function refreshDetail() {
  try {
    setEndpoints(await api.listEndpoints());
  } catch (error) {
    if (!handleError(error, refreshDetail)) toast(error.message, "error");
    return;
  }
  if (!currentEndpoint()) {
    toast("This endpoint no longer exists.", "error");
    showList();
    return;
  }
  renderDetail();
  await deliveries.load(false);
}

/** One delivery's page (delivery.js). */
function showDelivery(endpointId, deliveryId, record = true) {
  state.current = endpointId;
  if (record) routes.show({ view: "delivery", id: endpointId, delivery: deliveryId });
  showView("delivery");
  focusHeading("dv-title");
  delivery.show(currentEndpoint(), deliveryId, {
    handleError,
    describeError: (error) => error.message,
  });
}

// ---------------------------------------------------------------- event catalog

function showCatalog(record = true) {
  if (record) routes.show({ view: "catalog" });
  showView("catalog");
  catalog.render($("#catalog-body"), state.events, state.eventTypes, state.endpoints);
  focusHeading("catalog-title");
}

start();
