// The event catalog as the portal shows it (SPEC §2, §12): what each type
// means, which are deprecated, how they group, what the account subscribes.

import { h, replace } from "./ui.js";

/** The description of `type` in `types` (name → definition). */
export function describe(types, type) {
  return types.get(type)?.description || "";
}

export function isDeprecated(types, type) {
  return Boolean(types.get(type)?.deprecated);
}

function groupOf(type) {
  // An operator's own types group by their first part: invoice.paid → Invoice.
  const dot = type.indexOf(".");
  if (dot > 0) return type[0].toUpperCase() + type.slice(1, dot);
  if (type.includes("video")) return "Video";
  if (type.includes("avatar")) return "Avatar";
  if (type.includes("script")) return "Script";
  if (type.includes("image")) return "Image";
  if (type.includes("motion")) return "Motion";
  return "Other";
}

/** `names` by group, in catalog order. */
export function group(names) {
  const groups = new Map();
  for (const type of names) {
    const title = groupOf(type);
    if (!groups.has(title)) groups.set(title, []);
    groups.get(title).push(type);
  }
  return groups;
}

/** The catalog page's tables into `container`: each group, each type. */
export function render(container, names, types, endpoints) {
  const counts = new Map();
  for (const endpoint of endpoints) {
    for (const type of endpoint.events) counts.set(type, (counts.get(type) || 0) + 1);
  }
  replace(
    container,
    [...group(names)].map(([title, members]) =>
      h(
        "section",
        { class: "card card-flush catalog-group", "aria-label": `${title} events` },
        h("h2", { class: "catalog-title" }, title, h("span", { class: "count" }, String(members.length))),
        h(
          "table",
          { class: "catalog" },
          h(
            "thead",
            { class: "sr-only" },
            h("tr", {}, h("th", { scope: "col" }, "Event type"), h("th", { scope: "col" }, "Meaning"), h("th", { scope: "col" }, "Your endpoints")),
          ),
          h(
            "tbody",
            {},
            members.map((type) => {
              const count = counts.get(type) || 0;
              return h(
                "tr",
                {},
                h(
                  "td",
                  {},
                  h("code", { class: "event-name" }, type),
                  isDeprecated(types, type) ? h("span", { class: "badge badge-deprecated" }, "deprecated") : null,
                ),
                h("td", { class: "muted" }, describe(types, type)),
                h(
                  "td",
                  { class: "catalog-count" },
                  count
                    ? h("span", { class: "badge badge-enabled" }, `${count} ${count === 1 ? "endpoint" : "endpoints"}`)
                    : h("span", { class: "muted small" }, "not subscribed"),
                ),
              );
            }),
          ),
        ),
      ),
    ),
  );
}
