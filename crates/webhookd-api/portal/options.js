// An endpoint's delivery options (SPEC §14): the card that shows them, the
// warning for a client certificate near its expiry, and the part of the
// Add / Edit dialog that edits signature, retry schedule, custom headers and
// egress. mTLS material and OAuth2 credentials are set through the API
// (they are files and secrets, not form fields); the card shows them.

import * as filter from "./filter.js";
import * as ordering from "./ordering.js";
import { $, h, icon, replace, timeEl, toast } from "./ui.js";

/** A certificate this close to its expiry is flagged. */
const EXPIRY_WARNING_SECONDS = 30 * 86400;

const SCHEMES = {
  hmac: "HMAC-SHA256 (shared secret)",
  ed25519: "ed25519 (public key only)",
  both: "HMAC-SHA256 and ed25519",
};

function fact(term, ...value) {
  return h("div", { class: "fact" }, h("dt", {}, term), h("dd", {}, value));
}

/** Whether the endpoint's client certificate expires within 30 days (or has). */
export function certificateExpiring(endpoint, now = Date.now() / 1000) {
  const at = endpoint.client_cert_expires_at;
  return typeof at === "number" && at - now < EXPIRY_WARNING_SECONDS;
}

/** The alert for a client certificate near its expiry; null otherwise. */
export function certificateAlert(endpoint) {
  if (!certificateExpiring(endpoint)) return null;
  const expired = endpoint.client_cert_expires_at <= Date.now() / 1000;
  return h(
    "div",
    { class: "alert alert-warn" },
    icon("alert"),
    h(
      "div",
      {},
      h("strong", {}, expired ? "The client certificate has expired. " : "The client certificate expires soon. "),
      "It ",
      expired ? "expired " : "expires ",
      timeEl(endpoint.client_cert_expires_at),
      ". The receiver refuses deliveries without a valid one: send a new ",
      h("code", {}, "client_cert"),
      " and ",
      h("code", {}, "client_key"),
      " with ",
      h("code", {}, "PUT /v2/endpoint/{id}"),
      ".",
    ),
  );
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied to the clipboard.`);
  } catch {
    toast(`Copying is blocked here. Select the ${what.toLowerCase()} and copy it by hand.`, "error");
  }
}

/** Fills the Delivery options card. */
export function renderCard(endpoint) {
  const scheme = endpoint.signature || "hmac";
  const headers = Object.entries(endpoint.headers || {});
  const oauth2 = endpoint.oauth2;
  replace(
    $("#ep-options"),
    fact("Signature", SCHEMES[scheme] || scheme),
    endpoint.public_key
      ? fact(
          "Public key",
          h("code", { class: "key", id: "ep-public-key" }, endpoint.public_key),
          h(
            "button",
            { type: "button", class: "btn btn-sm", onclick: () => copy(endpoint.public_key, "Public key") },
            icon("copy"),
            "Copy",
          ),
          endpoint.previous_public_key
            ? h("p", { class: "muted small" }, "The previous key signs too until the rotation ends: ", h("code", { class: "key" }, endpoint.previous_public_key))
            : null,
        )
      : null,
    fact(
      "Retry schedule",
      endpoint.retry_schedule
        ? `${endpoint.retry_schedule.join(" → ")} (${endpoint.retry_schedule.length + 1} attempts)`
        : "The service's default",
    ),
    fact(
      `Custom headers (${headers.length})`,
      headers.length === 0
        ? "None"
        : h(
            "ul",
            { class: "header-list" },
            headers.map(([name, value]) =>
              h(
                "li",
                {},
                h("code", {}, name),
                typeof value === "string" ? h("code", { class: "muted" }, value) : h("span", { class: "badge" }, "secret, hidden"),
              ),
            ),
          ),
    ),
    endpoint.egress_proxy === false ? fact("Egress", "Direct: skips the egress proxy") : null,
    endpoint.client_cert
      ? fact(
          "Client certificate",
          "Presented (mTLS), expires ",
          timeEl(endpoint.client_cert_expires_at),
          certificateExpiring(endpoint) ? h("span", { class: "badge badge-warn" }, "renew") : null,
        )
      : null,
    endpoint.ca_cert ? fact("Trusted CA", "A private CA, in addition to the public ones") : null,
    oauth2
      ? fact(
          "OAuth2",
          h("code", {}, oauth2.token_url),
          h("span", { class: "muted small" }, ` client ${oauth2.client_id}${oauth2.scope ? `, scope ${oauth2.scope}` : ""}`),
        )
      : null,
    ordering.fact(endpoint),
    filter.fact(endpoint),
  );
}

/* ---------- The dialog's part ---------- */

/** Fills the options fields of the Add / Edit dialog from `endpoint`. */
export function fillForm(endpoint) {
  $("#ef-signature").value = endpoint?.signature || "hmac";
  $("#ef-schedule").value = endpoint?.retry_schedule ? endpoint.retry_schedule.join(", ") : "";
  $("#ef-egress").checked = endpoint?.egress_proxy !== false;
  const rows = Object.entries(endpoint?.headers || {});
  replace($("#ef-headers"), rows.map(([name, value]) => headerRow(name, value)));
  const open = Boolean(endpoint && (endpoint.signature || endpoint.retry_schedule || rows.length || endpoint.egress_proxy === false));
  $("#ef-options").open = open;
}

/** One editable header: name, value (a kept secret shows as kept), secret box, remove. */
function headerRow(name = "", value = "") {
  const kept = typeof value === "object" && value !== null;
  const row = h(
    "div",
    { class: "header-row" },
    h("input", { type: "text", class: "header-name", "aria-label": "Header name", placeholder: "X-Tenant", value: name, spellcheck: "false", autocomplete: "off" }),
    h("input", {
      type: "text",
      class: "header-value",
      "aria-label": "Header value",
      placeholder: kept ? "Secret: kept as it is" : "value",
      value: kept ? "" : value,
      spellcheck: "false",
      autocomplete: "off",
    }),
    h("label", { class: "check small" }, h("input", { type: "checkbox", class: "header-secret", checked: kept }), "Secret"),
    h("button", { type: "button", class: "btn-icon", "aria-label": "Remove header", onclick: () => row.remove() }, icon("x")),
  );
  return row;
}

export function wire() {
  $("#ef-add-header").addEventListener("click", () => {
    const row = headerRow();
    $("#ef-headers").append(row);
    row.querySelector("input").focus();
  });
}

/**
 * The option fields of the request, from the dialog. A secret header whose
 * value is left empty keeps its stored value (`{"secret": true}`).
 */
export function readForm() {
  const headers = {};
  for (const row of $("#ef-headers").querySelectorAll(".header-row")) {
    const name = row.querySelector(".header-name").value.trim();
    if (!name) continue;
    const value = row.querySelector(".header-value").value;
    const secret = row.querySelector(".header-secret").checked;
    headers[name] = secret ? (value === "" ? { secret: true } : { value, secret: true }) : value;
  }
  const schedule = $("#ef-schedule")
    .value.split(",")
    .map((part) => part.trim())
    .filter(Boolean);
  return {
    signature: $("#ef-signature").value,
    retry_schedule: schedule.length ? schedule : null,
    headers: Object.keys(headers).length ? headers : null,
    egress_proxy: $("#ef-egress").checked,
  };
}
