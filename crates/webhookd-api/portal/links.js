// Portal links (SPEC §9): `/portal#link=wpl_…` signs in once.
//
// - Only a portal-link token is taken from the address: an API key there
//   (`#link=whk_…`) never expires and could be planted by any page.
// - The link is exchanged for a session token at once (POST
//   /v2/portal-session), which spends it: a second use is refused.
// - A session already open in this tab is never replaced silently: an evil
//   page could navigate the tab to a link of its own account and have the
//   user add their receiver there. The user chooses, by account name.

import { api, credential } from "./api.js";
import { $, closeDialog, openDialog } from "./ui.js";

export const LINK_MESSAGES = {
  spent: "This sign-in link has expired or is not valid. Ask for a new one.",
  notLink: "This address does not hold a sign-in link. Sign in with your API key, or ask for a new link.",
};

/** The `#link=` of the address, taken out of it (and so out of history, bookmarks and screenshots). */
export function linkFromAddress() {
  const link = new URLSearchParams(location.hash.slice(1)).get("link");
  if (link !== null) history.replaceState(null, "", location.pathname);
  return link;
}

/**
 * Signs in with `link`. `currentUsername` is the account this tab is signed
 * in to (null when none); `refused(message)` is told why a link was not
 * taken. Resolves true once the tab holds the link's session.
 */
export async function signInWithLink(link, currentUsername, refused) {
  if (!link.startsWith("wpl_")) {
    refused(LINK_MESSAGES.notLink);
    return false;
  }
  let session;
  try {
    session = await api.redeemLink(link);
  } catch (error) {
    refused(error.isOutage ? error.message : LINK_MESSAGES.spent);
    return false;
  }
  const current = currentUsername ?? (credential.get() ? await api.whoAmI().catch(() => null) : null);
  if (current && current !== session.username && !(await confirmSwitch(current, session.username))) {
    return false;
  }
  credential.set(session.session, "link");
  return true;
}

/** Asks whether to leave `current` for `next`; resolves true to switch. */
function confirmSwitch(current, next) {
  const dialog = $("#dlg-switch");
  $("#dlg-switch-text").textContent = `You are signed in as ${current}. This link signs in as ${next}.`;
  $("#dlg-switch-detail").textContent =
    `If you switch, what you do next happens in ${next}'s account. If you did not open a sign-in link just now, stay.`;
  $("#switch-stay").textContent = `Stay as ${current}`;
  $("#switch-go").textContent = `Switch to ${next}`;
  return new Promise((resolve) => {
    let switching = false;
    const form = $("#switch-form");
    const onSubmit = (event) => {
      event.preventDefault();
      switching = true;
      closeDialog(dialog);
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener(
      "close",
      () => {
        form.removeEventListener("submit", onSubmit);
        resolve(switching);
      },
      { once: true },
    );
    openDialog(dialog);
  });
}
