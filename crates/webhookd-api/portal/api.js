// The portal is one more client of the /v2 API: every call sends the
// credential (an API key `whk_…` or a portal-link token `wpl_…`) in
// `x-api-key`, and every answer is the `{code, msg, data}` envelope.
// The credential lives in sessionStorage only: gone with the tab, never in
// a cookie, localStorage or the URL.

const STORAGE_CREDENTIAL = "webhookd.portal.credential";
const STORAGE_KIND = "webhookd.portal.kind";

export const credential = {
  get() {
    return sessionStorage.getItem(STORAGE_CREDENTIAL);
  },
  /** `kind` is "key" (typed in) or "link" (from a portal link). */
  kind() {
    return sessionStorage.getItem(STORAGE_KIND) || "key";
  },
  set(value, kind) {
    sessionStorage.setItem(STORAGE_CREDENTIAL, value);
    sessionStorage.setItem(STORAGE_KIND, kind);
  },
  clear() {
    sessionStorage.removeItem(STORAGE_CREDENTIAL);
    sessionStorage.removeItem(STORAGE_KIND);
  },
};

/** The business codes of the contract (SPEC §1). */
export const Code = {
  OK: 0,
  NOT_FOUND: 10104,
  UNAUTHORIZED: 10105,
  FORBIDDEN: 18025,
  PARAMETER: 40000,
  SYSTEM: 50000,
  /** Not from the API: the request never got an answer. */
  NETWORK: -1,
};

export class ApiError extends Error {
  constructor(code, msg, httpStatus) {
    super(msg);
    this.code = code;
    this.httpStatus = httpStatus;
  }

  /** webhookd or its store is unavailable, or the network is down: worth a retry. */
  get isOutage() {
    return this.code === Code.SYSTEM || this.code === Code.NETWORK || this.httpStatus >= 500;
  }
}

async function call(method, path, body, as = credential.get()) {
  const headers = { accept: "application/json" };
  const key = as;
  if (key) headers["x-api-key"] = key;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(Code.NETWORK, "the network request failed", 0);
  }
  let envelope;
  try {
    envelope = await response.json();
  } catch {
    throw new ApiError(
      response.ok ? Code.SYSTEM : Code.NETWORK,
      `unexpected answer (HTTP ${response.status})`,
      response.status,
    );
  }
  if (!envelope || typeof envelope.code !== "number") {
    throw new ApiError(Code.SYSTEM, `unexpected answer (HTTP ${response.status})`, response.status);
  }
  if (envelope.code !== Code.OK) {
    throw new ApiError(envelope.code, String(envelope.msg || "request failed"), response.status);
  }
  return envelope.data;
}

const id = (value) => encodeURIComponent(value);

export const api = {
  whoAmI: () => call("GET", "/v2/me").then((data) => data.username),
  /** Spends a portal link for a session: `{username, session, expires_at}`. */
  redeemLink: (link) => call("POST", "/v2/portal-session", undefined, link),
  listEndpoints: () => call("GET", "/v2/endpoints").then((data) => data.endpoints),
  /** The catalog: `[{name, description, schema?, deprecated?}]` (SPEC §12). */
  listEvents: () =>
    call("GET", "/v2/events").then((data) => data.event_types || data.events.map((name) => ({ name, description: "" }))),
  createEndpoint: (spec) => call("POST", "/v2/endpoint", spec),
  updateEndpoint: (endpointId, spec) => call("PUT", `/v2/endpoint/${id(endpointId)}`, spec),
  /** One endpoint with its counts and, when ordered, its `head_of_line` (SPEC §13, §15). */
  getEndpoint: (endpointId) => call("GET", `/v2/endpoint/${id(endpointId)}`),
  deleteEndpoint: (endpointId) => call("DELETE", `/v2/endpoint/${id(endpointId)}`),
  rotateSecret: (endpointId, graceSeconds) =>
    call("POST", `/v2/endpoint/${id(endpointId)}/rotate-secret`, { grace_seconds: graceSeconds }),
  sendTest: (endpointId, event) =>
    call("POST", `/v2/endpoint/${id(endpointId)}/test`, event ? { event } : {}),
  /**
   * Newest first; the first page carries `counts` by status (SPEC §13).
   * `window` keeps some: `{since, until}` (unix seconds, created in it),
   * `event` (a type), `eventId`.
   */
  listDeliveries: (endpointId, status, after, limit = 20, window = {}) => {
    const query = new URLSearchParams({ status, limit: String(limit), order: "desc" });
    if (after) query.set("after", after);
    if (window.since != null) query.set("since", String(window.since));
    if (window.until != null) query.set("until", String(window.until));
    if (window.event) query.set("event", window.event);
    if (window.eventId) query.set("event_id", window.eventId);
    return call("GET", `/v2/endpoint/${id(endpointId)}/deliveries?${query}`);
  },
  /** Whether `filter` lets `event` (`{event, data}`) through: `{delivered}` (SPEC §15). */
  previewFilter: (filter, event) => call("POST", "/v2/filter-preview", { filter, event }),
  getDelivery: (endpointId, deliveryId) =>
    call("GET", `/v2/endpoint/${id(endpointId)}/deliveries/${id(deliveryId)}`),
  resend: (endpointId, deliveryId) =>
    call("POST", `/v2/endpoint/${id(endpointId)}/deliveries/${id(deliveryId)}/retry`),
  recover: (endpointId, since, until) =>
    call("POST", `/v2/endpoint/${id(endpointId)}/recover`, until == null ? { since } : { since, until }),
};
