// The endpoint view's Signing secret card (SPEC §3, §8, §14): the secret
// masked until Reveal, Copy, the rotation in progress; for an endpoint that
// signs with ed25519 alone, why there is no secret to show.

import { $, h, icon, replace, timeEl, toast } from "./ui.js";

/** Whether the secret is shown; a fresh endpoint view starts hidden. */
let revealed = false;
/** The endpoint shown, from the page. */
let currentEndpoint = () => null;

export function wire(current) {
  currentEndpoint = current;
  $("#ep-reveal").addEventListener("click", onReveal);
  $("#ep-copy").addEventListener("click", onCopy);
}

/** Masks the secret again (another endpoint is shown). */
export function hide() {
  revealed = false;
}

const SECRET_MASK = `whsec_${"•".repeat(32)}`;

/** Shows `endpoint`'s signing secret (masked until Reveal) and any rotation in progress. */
export function render(endpoint) {
  // ed25519 alone: the API never answers the secret its key derives from.
  const keyOnly = !endpoint.secret;
  $("#ep-secret-field").hidden = keyOnly;
  $("#h-secret").textContent = keyOnly ? "Signing key" : "Signing secret";
  replace(
    $("#ep-secret-about"),
    keyOnly
      ? [
          "This endpoint signs with ed25519 only: receivers verify ",
          h("code", {}, "webhook-signature"),
          " with its public key (under Delivery options). The secret the key comes from is never shown; rotating replaces both.",
        ]
      : ["Verify the ", h("code", {}, "X-Webhook-Signature"), " header of each delivery with this secret."],
  );
  // Hidden means not in the page at all: the field shows a mask until
  // Reveal (and is no password field, so no password manager offers to keep it).
  $("#ep-secret").value = revealed && endpoint.secret ? endpoint.secret : SECRET_MASK;
  replace($("#ep-reveal"), icon(revealed ? "eyeOff" : "eye"), revealed ? "Hide" : "Reveal");
  const grace = $("#ep-grace");
  if (endpoint.previous_secret_expires_at && keyOnly) {
    replace(
      grace,
      icon("clock"),
      h(
        "span",
        {},
        "Rotation in progress: until ",
        timeEl(endpoint.previous_secret_expires_at),
        " the previous key signs ",
        h("code", {}, "webhook-signature"),
        " as well as the new one. Receivers that hold either public key keep working.",
      ),
    );
    grace.hidden = false;
  } else if (endpoint.previous_secret_expires_at) {
    replace(
      grace,
      icon("clock"),
      h(
        "span",
        {},
        "Rotation in progress: until ",
        timeEl(endpoint.previous_secret_expires_at),
        " the previous secret keeps signing ",
        h("code", {}, "X-Webhook-Signature"),
        " and this one signs ",
        h("code", {}, "X-Webhook-Signature-Next"),
        "; the Standard Webhooks header ",
        h("code", {}, "webhook-signature"),
        " carries both signatures. Receivers that accept either secret keep working.",
      ),
    );
    grace.hidden = false;
  } else {
    grace.hidden = true;
  }
}

function onReveal() {
  revealed = !revealed;
  const endpoint = currentEndpoint();
  if (endpoint) render(endpoint);
}

async function onCopy() {
  const secret = currentEndpoint()?.secret;
  if (!secret) return;
  try {
    await navigator.clipboard.writeText(secret);
    toast("Secret copied to the clipboard.");
  } catch {
    // Clipboard API refused (an iframe without clipboard-write, say): fall
    // back to selecting the text and the legacy copy command.
    const input = $("#ep-secret");
    const shown = input.value;
    input.value = secret;
    input.select();
    const copied = document.execCommand("copy");
    input.value = shown;
    if (copied) toast("Secret copied to the clipboard.");
    else toast("Copying is blocked here. Reveal the secret and copy it by hand.", "error");
  }
}

