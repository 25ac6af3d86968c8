// The labelling page's near-duplicate cluster panel: how many items share this one's template, and a few of them.
// label.js announces every shown item with a "sift:item" event carrying the queue's `cluster` summary (or null).
// Texts go in with textContent only: item text is never rendered as HTML.
(function () {
  "use strict";
  const root = document.getElementById("labeller");
  const panel = document.getElementById("cluster");
  if (!root || !panel) return;
  const size = document.getElementById("cluster-size");
  const note = document.getElementById("cluster-note");
  const list = document.getElementById("cluster-members");
  const KINDS = { representative: "representative", exact: "exact copy", near: "near duplicate", paraphrase: "paraphrase" };

  function render(cluster) {
    list.replaceChildren();
    if (!cluster) { panel.hidden = true; return; }
    size.textContent = cluster.size + " similar items";
    note.textContent = cluster.is_representative
      ? "You are labelling the representative; the others wait for this answer."
      : "This item is a " + KINDS[cluster.kind] + " (similarity " + cluster.similarity.toFixed(2) + ").";
    for (const member of cluster.members) {
      const li = document.createElement("li");
      const tag = document.createElement("span");
      tag.className = "muted small";
      tag.textContent = " · " + KINDS[member.kind] + " " + member.similarity.toFixed(2);
      li.textContent = member.text;
      li.appendChild(tag);
      list.appendChild(li);
    }
    panel.hidden = false;
  }

  root.addEventListener("sift:item", (event) => render(event.detail.cluster));
})();
