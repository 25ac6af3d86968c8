// The audited reveal of masked PII on the labelling page (labeling/services/privacy.py).
//
// Loaded only for roles that may reveal (policy lead, admin) on projects that mask PII. label.js announces
// each item it shows with a "sift:item" event; when that item is masked, the Reveal button appears. A click
// asks why (kept in the audit log), POSTs .../items/{id}/reveal with the CSRF token, and hands the raw item
// back to label.js ("sift:reveal"), which shows it as it shows every item: textContent only, never HTML.
"use strict";

(function () {
  const root = document.getElementById("labeller");
  const button = document.getElementById("reveal-btn");
  if (!root || !button) return;
  const status = document.getElementById("status");
  let current = null;

  root.addEventListener("sift:item", (event) => {
    current = event.detail;
    button.hidden = !current.masked;
    button.disabled = false;
  });

  function say(message) {
    if (status) status.textContent = message;
  }

  button.addEventListener("click", async () => {
    if (!current) return;
    const shown = current;
    const reason = window.prompt("Why do you need the unmasked text? (kept in the audit log)", "");
    if (reason === null) return;
    button.disabled = true;
    let response;
    try {
      // The shared wrapper (api.js): same-origin, JSON, the CSRF token.
      response = await window.siftApi.request("POST", button.dataset.url + shown.id + "/reveal", { reason: reason });
    } catch (err) {
      button.disabled = false;
      say("Could not reach the server to reveal this item.");
      return;
    }
    if (!response.ok || response.data === null) {
      button.disabled = false;
      say(`Reveal refused (${response.status}).`);
      return;
    }
    const item = response.data;
    if (!current || current.id !== shown.id) return;  // the reviewer moved on meanwhile
    root.dispatchEvent(new CustomEvent("sift:reveal", { detail: item }));
    button.hidden = true;
    say("Unmasked text shown; the reveal was recorded.");
  });
})();
