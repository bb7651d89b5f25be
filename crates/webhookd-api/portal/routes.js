// Every view has its own address (SPEC §9), so reload, Back and a shared
// link stay in the portal:
//
//   #/endpoints                      the list
//   #/endpoints/<id>[/<tab>]         one endpoint, a deliveries tab
//   #/endpoints/<id>/deliveries/<d>  one delivery: attempts, request, payload
//   #/catalog                        the event catalog
//
// The address carries ids and tab names only, never a credential: a link
// shared from here signs nobody in (the viewer signs in first).

const TABS = ["failed", "pending", "delivered"];

/** The view an address names: `{view, id?, tab?, delivery?}`; the list when it names none. */
export function parse(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "catalog") return { view: "catalog" };
  if (parts[0] === "endpoints" && parts[1] && parts[2] === "deliveries" && parts[3]) {
    return { view: "delivery", id: parts[1], delivery: parts[3] };
  }
  if (parts[0] === "endpoints" && parts[1]) {
    return { view: "endpoint", id: parts[1], tab: TABS.includes(parts[2]) ? parts[2] : "failed" };
  }
  return { view: "endpoints" };
}

/** The address of a view. */
export function address({ view, id, tab, delivery }) {
  if (view === "catalog") return "#/catalog";
  if (view === "delivery") return `#/endpoints/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(delivery)}`;
  if (view === "endpoint") return `#/endpoints/${encodeURIComponent(id)}${tab && tab !== "failed" ? `/${tab}` : ""}`;
  return "#/endpoints";
}

/**
 * Puts `route` in the address bar: a new history entry (Back returns), or
 * in place of the current one (`replace`, for a tab). The page already
 * shows the view: no hashchange follows.
 */
export function show(route, replace = false) {
  const next = address(route);
  if (location.hash === next) return;
  if (replace) history.replaceState(null, "", next);
  else history.pushState(null, "", next);
}

/** Leaves only the page's path in the address (signed out). */
export function clear() {
  if (location.hash) history.replaceState(null, "", location.pathname);
}
