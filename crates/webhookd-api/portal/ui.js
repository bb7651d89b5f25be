// DOM helpers. API data only ever reaches the page as text nodes or
// attribute values, never as markup: there is no innerHTML in the portal.

/**
 * `h("button", { class: "btn", onclick: fn }, "Save")`. Props starting with
 * "on" become listeners; `hidden`, `disabled`, `checked`… are set as
 * properties; everything else is an attribute. Children may be strings,
 * nodes, arrays, or null (skipped).
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name in PROPERTIES) {
      node[PROPERTIES[name]] = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(node, children);
  return node;
}

const PROPERTIES = {
  hidden: "hidden",
  disabled: "disabled",
  checked: "checked",
  selected: "selected",
  value: "value",
  htmlFor: "htmlFor",
};

function append(node, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// Icons: 24×24 stroke paths, drawn as SVG elements (no markup strings).
const ICONS = {
  plus: ["M12 5v14", "M5 12h14"],
  back: ["M15 18l-6-6 6-6"],
  chevron: ["M9 18l6-6-6-6"],
  copy: ["M9 9h11v11H9z", "M5 15H4V4h11v1"],
  eye: ["M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z", "M12 9a3 3 0 1 0 0 6 3 3 0 0 0 0-6z"],
  eyeOff: ["M3 3l18 18", "M10.6 5.1A10 10 0 0 1 12 5c6.4 0 10 7 10 7a17 17 0 0 1-3.2 4", "M6.6 6.6C3.8 8.4 2 12 2 12s3.6 7 10 7a9.7 9.7 0 0 0 5.4-1.6", "M9.9 9.9a3 3 0 0 0 4.2 4.2"],
  refresh: ["M21 12a9 9 0 1 1-3-6.7L21 8", "M21 3v5h-5"],
  send: ["M22 2L11 13", "M22 2l-7 20-4-9-9-4 20-7z"],
  rotate: ["M3 12a9 9 0 0 1 15.5-6.3L21 8", "M21 3v5h-5", "M21 12a9 9 0 0 1-15.5 6.3L3 16", "M3 21v-5h5"],
  trash: ["M3 6h18", "M8 6V4h8v2", "M19 6l-1 14H6L5 6"],
  edit: ["M12 20h9", "M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z"],
  power: ["M12 2v10", "M18.4 6.6a9 9 0 1 1-12.8 0"],
  alert: ["M12 9v4", "M12 17h.01", "M10.3 3.9L1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z"],
  inbox: ["M22 12h-6l-2 3h-4l-2-3H2", "M5.5 5.1L2 12v6a2 2 0 0 0 2 2h16a2 2 0 0 0 2-2v-6l-3.5-6.9A2 2 0 0 0 16.8 4H7.2a2 2 0 0 0-1.7 1.1z"],
  check: ["M20 6L9 17l-5-5"],
  x: ["M18 6L6 18", "M6 6l12 12"],
  clock: ["M12 22a10 10 0 1 0 0-20 10 10 0 0 0 0 20z", "M12 6v6l4 2"],
  history: ["M3 12a9 9 0 1 0 3-6.7L3 8", "M3 3v5h5", "M12 7v5l4 2"],
  code: ["M16 18l6-6-6-6", "M8 6l-6 6 6 6"],
};

export function icon(name, className = "icon") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  for (const d of ICONS[name] || []) {
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

// Times: unix seconds from the API, shown in the viewer's time zone.

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["year", 31536000],
  ["month", 2592000],
  ["week", 604800],
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
  ["second", 1],
];

export function relative(unixSeconds, now = Date.now() / 1000) {
  const delta = unixSeconds - now;
  const size = Math.abs(delta);
  if (size < 45) return delta < 0 ? "just now" : "in a few seconds";
  for (const [unit, seconds] of UNITS) {
    if (size >= seconds) return relativeFormat.format(Math.round(delta / seconds), unit);
  }
  return "just now";
}

export function localTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    dateStyle: "medium",
    timeStyle: "medium",
  });
}

/** `<time>` with the local time, and "3 min ago" in brackets unless `plain`. */
export function timeEl(unixSeconds, { relativeFirst = false } = {}) {
  const iso = new Date(unixSeconds * 1000).toISOString();
  const full = localTime(unixSeconds);
  const rel = relative(unixSeconds);
  return h(
    "time",
    { datetime: iso, title: full },
    relativeFirst ? rel : full,
    h("span", { class: "muted" }, relativeFirst ? "" : ` · ${rel}`),
  );
}

/** A `datetime-local` value ("2024-05-01T13:45") for a Date, in local time. */
export function toLocalInput(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** Unix seconds of a `datetime-local` value (read in local time), or null. */
export function fromLocalInput(value) {
  if (!value) return null;
  const ms = new Date(value).getTime();
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

// Toasts: short confirmations in a polite live region.

export function toast(message, kind = "success") {
  const region = document.getElementById("toasts");
  const item = h(
    "div",
    { class: `toast toast-${kind}` },
    icon(kind === "error" ? "alert" : "check"),
    h("span", {}, message),
  );
  region.append(item);
  // A burst of actions keeps the three latest.
  while (region.children.length > 3) region.firstElementChild.remove();
  setTimeout(() => {
    item.classList.add("toast-leaving");
    setTimeout(() => item.remove(), 250);
  }, kind === "error" ? 8000 : 4500);
}

// Modal dialogs. While one is open the page behind it is hidden from the
// accessibility tree as well as inert, so "the Delete button" means the one
// in the dialog; focus goes back to where it came from on close.

const appRoot = () => document.getElementById("app");
let openCount = 0;

export function openDialog(dialog, focusTarget) {
  const opener = document.activeElement;
  dialog.showModal();
  openCount += 1;
  appRoot().setAttribute("aria-hidden", "true");
  (focusTarget || dialog.querySelector("[autofocus]") || dialog.querySelector("input, select, button"))?.focus();
  dialog.addEventListener(
    "close",
    () => {
      openCount -= 1;
      if (openCount <= 0) {
        openCount = 0;
        appRoot().removeAttribute("aria-hidden");
      }
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
    },
    { once: true },
  );
}

export function closeDialog(dialog) {
  if (!dialog.open) return;
  // Show the page to assistive technology again before focus returns to it.
  if (openCount <= 1) appRoot().removeAttribute("aria-hidden");
  dialog.close();
}

/** Puts a button into a busy state for the duration of `work`. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.classList.add("is-busy");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.classList.remove("is-busy");
  }
}
