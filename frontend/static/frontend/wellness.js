// Reviewer wellness on the labelling page: severe items blurred behind a reveal (button or V), the day's exposure,
// and a break reminder. label.js announces each item with "sift:item", carrying the queue's `protection` block
// (labeling/services/wellness.py decides it: blur, severe, exposure_today, daily_severe_budget, break_due).
(function () {
  "use strict";
  const root = document.getElementById("labeller");
  const card = document.getElementById("item-card");
  const cover = document.getElementById("blur-cover");
  if (!root || !card || !cover) return;
  const reason = document.getElementById("blur-reason");
  const reveal = document.getElementById("blur-reveal");
  const exposureStat = document.getElementById("exposure-stat");
  const exposure = document.getElementById("exposure-today");
  const reminder = document.getElementById("break-reminder");
  const minutes = document.getElementById("break-minutes");
  const dismiss = document.getElementById("break-dismiss");
  let dismissed = false;

  function unblur() {
    card.classList.remove("is-blurred");
    cover.hidden = true;
    card.dataset.blurred = "false";
  }

  function render(protection) {
    if (!protection) { unblur(); return; }
    if (protection.blur) {
      card.classList.add("is-blurred");
      card.dataset.blurred = "true";
      reason.textContent = protection.severe === "known" ? "Hidden: other reviewers gave this item a severe label."
        : protection.severe === "predicted" ? "Hidden: the model predicts a severe label for this item."
          : "Hidden: you asked to see every item blurred first.";
      cover.hidden = false;
    } else {
      unblur();
    }
    exposure.textContent = protection.daily_severe_budget
      ? protection.exposure_today + " / " + protection.daily_severe_budget : String(protection.exposure_today);
    exposureStat.hidden = false;
    if (!protection.break_due) dismissed = false;  // a new stretch: remind again when it is long
    minutes.textContent = String(protection.labelling_minutes);
    reminder.hidden = !protection.break_due || dismissed;
  }

  reveal.addEventListener("click", unblur);
  dismiss.addEventListener("click", () => { dismissed = true; reminder.hidden = true; });
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT")) return;
    if ((event.key === "v" || event.key === "V") && card.dataset.blurred === "true") {
      event.preventDefault();
      unblur();
    }
  });
  root.addEventListener("sift:item", (event) => render(event.detail.protection));
})();
