// The labelling page's match-bank panel: which banks this item matched and on what evidence (exact copy of a
// confirmed entry, or a near match with its estimated similarity). label.js announces every shown item with a
// "sift:item" event carrying the queue's `bank_matches` list. Bank names go in with textContent only, never HTML.
(function () {
  "use strict";
  const root = document.getElementById("labeller");
  const panel = document.getElementById("bank-matches");
  if (!root || !panel) return;
  const list = document.getElementById("bank-match-list");
  const POLARITY = { violating: "known violating", benign: "known benign" };

  function render(matches) {
    list.replaceChildren();
    for (const match of matches) {
      const li = document.createElement("li");
      const evidence = match.kind === "exact"
        ? "exact copy of entry " + match.entry
        : "near match to entry " + match.entry + " (similarity " + match.similarity.toFixed(2) + ")";
      li.textContent = match.bank + " · " + POLARITY[match.polarity] + " for label " + match.label + " · " + evidence;
      list.appendChild(li);
    }
    panel.hidden = matches.length === 0;
  }

  root.addEventListener("sift:item", (event) => render(event.detail.bankMatches || []));
})();
