// The keyboard-first labelling page (frontend/templates/frontend/label.html).
//
// Talks to the JSON API with the session cookie and the CSRF token from the page:
//   POST queue/next -> render; digit/Enter -> POST submit {next: true}, whose answer carries the
//   next item (one round trip; a null `next` falls back to queue/next for its 204 and Retry-After);
//   S -> skip; U -> undo the last submit; renew the lease at 80% of its time while visible.
// Rules that keep it safe: user data (item text, meta, comments) only ever goes into the
// page through textContent, never innerHTML; every request carries X-CSRFToken; a submit
// is retried with the same idempotency key, so a network retry never labels twice.
"use strict";

(function () {
  const root = document.getElementById("labeller");
  const configEl = document.getElementById("label-config");
  if (!root || !configEl) return;
  const config = JSON.parse(configEl.textContent);
  const $ = (id) => document.getElementById(id);

  const el = {
    card: $("item-card"),
    externalId: $("item-external-id"),
    reason: $("selection-reason"),
    text: $("item-text"),
    meta: $("item-meta"),
    suggestion: $("suggestion"),
    suggestionLabel: $("suggestion-label"),
    suggestionConfidence: $("suggestion-confidence"),
    done: $("done"),
    comment: $("comment"),
    path: $("tax-path"),
    pathText: $("tax-path-text"),
    back: $("tax-back"),
    chooseParent: $("tax-choose-parent"),
    parentName: $("tax-parent-name"),
    selectedList: $("selected-list"),
    submitMulti: $("submit-multi"),
    guidelineHint: $("guideline-hint"),
    skip: $("skip-btn"),
    undo: $("undo-btn"),
    helpBtn: $("help-btn"),
    help: $("help"),
    status: $("status"),
    checkAgain: $("check-again"),
    progressBar: $("progress-bar"),
    finished: $("progress-finished"),
    total: $("progress-total"),
    open: $("progress-open"),
    mineToday: $("progress-mine-today"),
    streak: $("streak"),
    learning: $("learning-status"),
    learningText: $("learning-status-text"),
    learningBar: $("learning-progress"),
  };
  if (config.taxonomy_version === null || !el.card) return;

  // --- The taxonomy, indexed -------------------------------------------------------
  // Nodes come from the json_script config; their buttons were rendered by the server
  // in the same depth-first order, so node.index matches data-node-index.
  const nodes = [];
  const byKey = new Map();
  function index(list, parent) {
    const level = [];
    for (const raw of list) {
      const node = { key: raw.key, name: raw.name, parent: parent, children: [], index: nodes.length };
      nodes.push(node);
      byKey.set(node.key, node);
      level.push(node);
      node.children = index(raw.children || [], node);
    }
    return level;
  }
  index(config.tree, null);
  const topLevel = nodes.filter((n) => n.parent === null);
  for (const button of root.querySelectorAll("button[data-node-index]")) {
    const node = nodes[Number(button.dataset.nodeIndex)];
    if (node) node.button = button;
  }
  for (const article of root.querySelectorAll("article.guideline[data-node-index]")) {
    const node = nodes[Number(article.dataset.nodeIndex)];
    if (node) node.guideline = article;
  }

  // --- State -------------------------------------------------------------------------
  const state = {
    current: null,        // the queue/next payload on screen
    shownAt: 0,           // performance.now() when the item was shown: lead_time_ms starts here
    attemptKey: null,     // idempotency key of this lease attempt, reused on retries
    path: [],             // opened parent nodes, outermost first
    selected: new Set(),  // multi-label: chosen keys
    busy: false,          // a submit/skip/undo/next is in flight: keys are ignored
    lastSubmit: null,     // {leaseId, at, labels}: what U would undo
    renewTimer: null,
    renewDue: false,      // renewal came due while the page was hidden
    guidelineNode: null,
    reloadGuard: "sift:reloaded-for-taxonomy:" + config.slug,
  };

  // --- Helpers -----------------------------------------------------------------------
  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // Plain-HTTP deployments are not a secure context and lack randomUUID: build a v4 UUID.
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  let statusTimer = null;
  function say(message, kind) {
    el.status.textContent = message;
    el.status.className = "status is-visible" + (kind ? " status-" + kind : "");
    clearTimeout(statusTimer);
    statusTimer = setTimeout(() => { el.status.className = "status"; }, kind === "error" ? 8000 : 3500);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const api = window.siftApi.request;  // the shared wrapper (api.js)

  // Network failures and 502/503/504 are retried with the same request (and so the same
  // idempotency key); anything the server answered deliberately is returned as is.
  async function apiRetry(method, url, body) {
    const delays = [300, 1000, 2500];
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await api(method, url, body);
        if (![502, 503, 504].includes(result.status) || attempt >= delays.length) return result;
      } catch (err) {
        if (attempt >= delays.length) return { status: 0, data: null, error: err };
      }
      await sleep(delays[attempt]);
    }
  }

  function detailOf(result, fallback) {
    return (result.data && typeof result.data.detail === "string") ? result.data.detail : fallback;
  }

  function handleAuth(result) {
    if (result.status === 401 || (result.status === 403 && result.data && result.data.code === "not_authenticated")) {
      window.location.assign(config.urls.login + "?next=" + encodeURIComponent(window.location.pathname));
      return true;
    }
    return false;
  }

  function setBusy(busy) {
    state.busy = busy;
    root.classList.toggle("is-busy", busy);
    el.card.setAttribute("aria-busy", busy ? "true" : "false");
  }

  // --- Rendering -----------------------------------------------------------------------
  function renderItem(payload, serverDate) {
    if (payload.taxonomy_version != null && payload.taxonomy_version !== config.taxonomy_version) {
      // The taxonomy was republished under us: the buttons are stale. Reload once.
      const marker = String(config.taxonomy_version) + "->" + String(payload.taxonomy_version);
      if (sessionStorage.getItem(state.reloadGuard) !== marker) {
        sessionStorage.setItem(state.reloadGuard, marker);
        say("The taxonomy changed; reloading the labels…", "warn");
        window.location.reload();
        return;
      }
    }
    const item = payload.item;
    state.current = payload;
    state.attemptKey = uuid();
    state.path = [];
    state.selected.clear();
    root.classList.remove("is-loading", "is-done");
    el.done.hidden = true;
    el.externalId.textContent = item.external_id;
    el.text.textContent = item.text;
    // For reveal.js (PII masking): which item is shown, and whether its text is masked.
    el.card.dataset.itemId = String(item.id);
    el.card.dataset.masked = item.masked ? "true" : "false";
    root.dispatchEvent(new CustomEvent("sift:item", {
      detail: { id: item.id, masked: Boolean(item.masked), cluster: payload.cluster || null,
                bankMatches: payload.bank_matches || [], protection: payload.protection || null,
                image: item.image || null },
    }));
    renderMeta(item.meta);
    renderReason(payload.selection);
    renderSuggestion(payload.suggestion);
    el.comment.value = "";
    updateTree();
    el.skip.disabled = false;
    scheduleRenew(payload.lease, serverDate);
    setBusy(false);
    // Painted from here on: lead time counts from the moment the reviewer can read it.
    state.shownAt = performance.now();
  }

  // reveal.js hands over the unmasked item of an audited reveal; shown the same way as any item (textContent).
  root.addEventListener("sift:reveal", (event) => {
    const shown = state.current && state.current.item;
    if (!shown || shown.id !== event.detail.id) return;  // the reviewer moved on meanwhile
    el.text.textContent = event.detail.text;
    renderMeta(event.detail.meta);
  });

  function renderMeta(meta) {
    const rows = [];
    if (meta && typeof meta === "object" && !Array.isArray(meta)) {
      for (const [key, value] of Object.entries(meta)) {
        const wrap = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        // Each key and value takes its own direction from its first strong character (Arabic meta in an English
        // project, or the reverse), so numbers and URLs inside it stay in logical order.
        dt.dir = "auto";
        dd.dir = "auto";
        dt.textContent = key;
        dd.textContent = (typeof value === "string") ? value : JSON.stringify(value);
        wrap.append(dt, dd);
        rows.push(wrap);
      }
    }
    el.meta.replaceChildren(...rows);
    el.meta.hidden = rows.length === 0;
  }

  function renderReason(selection) {
    if (!selection || !selection.reason) { el.reason.hidden = true; return; }
    // Every reason has a human label (learning/core/vocabulary.py, via the page config); a key this page does not
    // know (a newer server than this cached script) reads as "Other" rather than as a raw key.
    const label = config.reasons[selection.reason] || config.reasons.other || "Other";
    let text = label;
    if (typeof selection.score === "number") text += " · score " + selection.score.toFixed(2);
    if (selection.model_version != null) text += " · model v" + selection.model_version;
    el.reason.textContent = text;
    el.reason.title = "Why you are seeing this item";
    el.reason.hidden = false;
  }

  function renderSuggestion(suggestion) {
    for (const node of nodes) if (node.button) node.button.classList.remove("is-suggested");
    if (!suggestion || !suggestion.label) { el.suggestion.hidden = true; return; }
    const node = byKey.get(suggestion.label);
    el.suggestionLabel.textContent = node ? node.name : suggestion.label;
    el.suggestionConfidence.textContent = typeof suggestion.confidence === "number"
      ? Math.round(suggestion.confidence * 100) + "% confident" : "";
    el.suggestion.hidden = false;
    if (node && node.button) node.button.classList.add("is-suggested");
  }

  function levelNodes() {
    return state.path.length ? state.path[state.path.length - 1].children : topLevel;
  }

  function updateTree() {
    const opened = new Set(state.path);
    const level = new Set(levelNodes());
    for (const node of nodes) {
      const li = node.button && node.button.parentElement;
      if (!li) continue;
      li.classList.toggle("is-open", opened.has(node));
      li.classList.toggle("is-current-level", level.has(node));
      if (node.children.length) node.button.setAttribute("aria-expanded", opened.has(node) ? "true" : "false");
      if (config.multi_label && !node.children.length) {
        const on = state.selected.has(node.key);
        node.button.setAttribute("aria-pressed", on ? "true" : "false");
        node.button.classList.toggle("is-selected", on);
      }
    }
    root.querySelector(".tree").classList.toggle("is-nested", state.path.length > 0);
    if (el.path) {
      el.path.hidden = state.path.length === 0;
      el.pathText.textContent = state.path.map((n) => n.name).join(" › ");
      if (el.parentName && state.path.length) el.parentName.textContent = state.path[state.path.length - 1].name;
    }
    if (config.multi_label && el.selectedList) {
      const names = Array.from(state.selected, (key) => (byKey.get(key) || { name: key }).name);
      el.selectedList.textContent = names.length ? names.join(", ") : "none";
      el.submitMulti.disabled = names.length === 0;
    }
    showGuideline(state.path.length ? state.path[state.path.length - 1] : null);
  }

  function showGuideline(node) {
    if (state.guidelineNode && state.guidelineNode.guideline) state.guidelineNode.guideline.hidden = true;
    state.guidelineNode = node;
    if (node && node.guideline) node.guideline.hidden = false;
    el.guidelineHint.hidden = Boolean(node);
  }

  function showDone() {
    state.current = null;
    clearTimeout(state.renewTimer);
    root.classList.remove("is-loading");
    root.classList.add("is-done");
    el.externalId.textContent = "—";
    el.text.textContent = "";
    el.meta.replaceChildren();
    el.reason.hidden = true;
    el.suggestion.hidden = true;
    el.done.hidden = false;
    el.skip.disabled = true;
    setBusy(false);
  }

  function updateUndo() {
    const last = state.lastSubmit;
    el.undo.disabled = !(last && Date.now() - last.at < config.undo_seconds * 1000);
  }
  setInterval(updateUndo, 1000);

  // --- Streak: labels in this sitting (a pause of 15 minutes ends it) ----------------
  const streakKey = "sift:streak:" + config.slug;
  function readStreak() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(streakKey) || "null");
      if (saved && Date.now() - saved.at < 15 * 60 * 1000) return saved.n;
    } catch (_) { /* a corrupt entry just restarts the streak */ }
    return 0;
  }
  function bumpStreak(delta) {
    const n = Math.max(0, readStreak() + delta);
    sessionStorage.setItem(streakKey, JSON.stringify({ n: n, at: Date.now() }));
    el.streak.textContent = String(n);
    el.streak.parentElement.classList.toggle("is-hot", n >= 10);
  }

  // --- Progress ------------------------------------------------------------------------
  async function refreshProgress() {
    try {
      const result = await api("GET", config.urls.progress);
      if (result.status !== 200 || !result.data) return;
      const p = result.data;
      el.progressBar.max = Math.max(1, p.total);
      el.progressBar.value = p.finished;
      el.finished.textContent = String(p.finished);
      el.total.textContent = String(p.total);
      el.open.textContent = String(p.open);
      el.mineToday.textContent = String(p.mine_today);
    } catch (_) { /* progress is decoration: never block labelling on it */ }
  }

  // --- Embedding progress and the first model ----------------------------------------
  // While the worker embeds the items or trains the first model, the queue serves random picks; the banner says
  // so, with the figures from GET embedding/ (rendered by the server first, then polled here until ready).
  const LEARNING_POLL_MS = 3000;
  let learningTimer = null;
  function renderLearning(s) {
    if (!el.learning) return;
    const busy = s.state === "embedding" || s.state === "training";
    el.learning.dataset.state = s.state;
    el.learning.hidden = !busy;
    el.learningText.textContent = s.message || "";
    if (el.learningBar) {
      el.learningBar.hidden = s.state !== "embedding";
      el.learningBar.max = Math.max(1, s.total);
      el.learningBar.value = s.embedded;
    }
  }
  async function refreshLearning() {
    clearTimeout(learningTimer);
    let busy = el.learning && !el.learning.hidden;
    try {
      const result = await api("GET", config.urls.embedding);
      if (result.status === 200 && result.data) {
        const wasBusy = busy;
        renderLearning(result.data);
        busy = result.data.state === "embedding" || result.data.state === "training";
        if (wasBusy && !busy && result.data.model_version != null) {
          say("Model v" + result.data.model_version + " is ready: the queue now follows its ranking.", "ok");
        }
      }
    } catch (_) { /* decoration, like progress: never block labelling on it */ }
    if (busy) learningTimer = setTimeout(refreshLearning, LEARNING_POLL_MS);
  }

  // --- Lease renewal -----------------------------------------------------------------
  function scheduleRenew(lease, serverDate) {
    clearTimeout(state.renewTimer);
    state.renewDue = false;
    if (!lease || !lease.expires_at) return;
    // Measure the remaining time against the server's clock (the Date header) where we have
    // it, so a skewed laptop clock neither lets the lease lapse nor renews in a loop. The
    // header is truncated to the second, so assume the server is up to a second further on.
    const serverNow = serverDate ? Date.parse(serverDate) + 1000 : NaN;
    const now = Number.isNaN(serverNow) ? Date.now() : serverNow;
    const remaining = Math.min(Date.parse(lease.expires_at) - now, config.lease_seconds * 1000);
    const delay = Math.max(1000, remaining * 0.8);
    state.renewTimer = setTimeout(renewIfVisible, delay);
  }

  async function renewIfVisible() {
    if (!state.current) return;
    if (document.visibilityState !== "visible") { state.renewDue = true; return; }
    const lease = state.current.lease;
    const result = await apiRetry("POST", config.urls.lease + lease.id + "/renew");
    if (!state.current || state.current.lease.id !== lease.id) return;  // moved on meanwhile
    if (result.status === 200 && result.data) {
      const fresh = result.data.lease || result.data;
      if (fresh.expires_at) lease.expires_at = fresh.expires_at;
      scheduleRenew(lease, result.date);
    } else if (result.status === 409 || result.status === 403 || result.status === 404) {
      if (handleAuth(result)) return;
      say(detailOf(result, "Your hold on this item has expired.") + " Fetching the next item.", "warn");
      await loadNext();
    } else {
      scheduleRenew(lease, null);  // transient: try again later
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.renewDue) renewIfVisible();
  });

  // --- Actions ---------------------------------------------------------------------------
  async function loadNext() {
    setBusy(true);
    const result = await apiRetry("POST", config.urls.next);
    if (result.status === 200 && result.data) {
      renderItem(result.data, result.date);
    } else if (result.status === 204) {
      showDone();
      // Items are held by other reviewers and may come back (a skip, an expired lease): look again later.
      if (result.retryAfter) {
        say("Everything left is being labelled by others; checking again shortly.", "info");
        clearTimeout(state.waitTimer);
        state.waitTimer = setTimeout(loadNext, Math.max(1, parseInt(result.retryAfter, 10) || 5) * 1000);
      }
    } else {
      if (handleAuth(result)) return;
      setBusy(false);
      root.classList.remove("is-loading");
      say(detailOf(result, "Could not load the next item (" + (result.status || "network error") + ")."), "error");
    }
  }

  async function submit(labels) {
    if (!state.current || state.busy || !labels.length) return;
    const leadTime = Math.max(1, Math.round(performance.now() - state.shownAt));
    const lease = state.current.lease;
    const body = {
      labels: labels,
      idempotency_key: state.attemptKey,
      lead_time_ms: leadTime,
      comment: el.comment.value.trim(),
      // The server leases the next item in the same request: the page never waits for a second call.
      next: true,
    };
    setBusy(true);
    const result = await apiRetry("POST", config.urls.lease + lease.id + "/submit", body);
    if (result.status === 201 || result.status === 200) {
      state.lastSubmit = { leaseId: lease.id, at: Date.now(), labels: labels };
      // The next item came with the answer; without one (nothing left right now, or an older server),
      // queue/next says whether to wait (204 + Retry-After) or stop.
      const following = result.data && result.data.next;
      const next = following ? Promise.resolve(renderItem(following, result.date)) : loadNext();
      bumpStreak(1);
      updateUndo();
      const names = labels.map((key) => (byKey.get(key) || { name: key }).name).join(", ");
      say("Saved: " + names + ".  U undoes.", "ok");
      await next;
      refreshProgress();
    } else if (result.status === 409 || result.status === 403) {
      if (handleAuth(result)) return;
      say(detailOf(result, "This item is no longer yours to label.") + " Fetching the next item.", "warn");
      await loadNext();
    } else if (result.status === 400) {
      setBusy(false);
      say(detailOf(result, "The server refused these labels."), "error");
    } else {
      if (handleAuth(result)) return;
      // The same idempotency key is kept: pressing the label again retries safely.
      setBusy(false);
      say("Could not save (" + (result.status || "network error") + "). Press the label again to retry.", "error");
    }
  }

  async function skip() {
    if (!state.current || state.busy) return;
    const lease = state.current.lease;
    setBusy(true);
    const result = await apiRetry("POST", config.urls.lease + lease.id + "/skip");
    if (handleAuth(result)) return;
    if (result.status >= 200 && result.status < 300) {
      say("Skipped.", "ok");
    } else if (result.status !== 409) {
      setBusy(false);
      say(detailOf(result, "Could not skip (" + (result.status || "network error") + ")."), "error");
      return;
    }
    await loadNext();
  }

  async function undo() {
    const last = state.lastSubmit;
    if (state.busy) return;
    if (!last) { say("Nothing to undo.", "warn"); return; }
    setBusy(true);
    const result = await apiRetry("POST", config.urls.lease + last.leaseId + "/undo");
    if (result.status === 200 && result.data) {
      state.lastSubmit = null;
      updateUndo();
      bumpStreak(-1);
      renderItem(result.data, result.date);
      // Show what was given before, so relabelling is a correction, not a guess.
      const names = last.labels.map((key) => (byKey.get(key) || { name: key }).name).join(", ");
      if (config.multi_label) {
        for (const key of last.labels) if (byKey.has(key)) state.selected.add(key);
        updateTree();
      }
      say("Undone. You had chosen: " + names + ". Label it again.", "ok");
      refreshProgress();
    } else {
      if (handleAuth(result)) return;
      setBusy(false);
      state.lastSubmit = null;
      updateUndo();
      say(detailOf(result, "Too late to undo."), "warn");
    }
  }

  function activate(node) {
    if (!state.current || state.busy) return;
    // A click may come from any level: make the node's own level the current one.
    const ancestors = [];
    for (let p = node.parent; p; p = p.parent) ancestors.unshift(p);
    if (node.children.length) {
      state.path = ancestors.concat([node]);
      updateTree();
      return;
    }
    state.path = ancestors;
    if (config.multi_label) {
      if (state.selected.has(node.key)) state.selected.delete(node.key);
      else state.selected.add(node.key);
      updateTree();
      return;
    }
    updateTree();
    submit([node.key]);
  }

  function chooseOpenedParent() {
    if (!config.allow_non_leaf || !state.path.length || !state.current || state.busy) return;
    const parent = state.path[state.path.length - 1];
    if (config.multi_label) {
      if (state.selected.has(parent.key)) state.selected.delete(parent.key);
      else state.selected.add(parent.key);
      updateTree();
    } else {
      submit([parent.key]);
    }
  }

  function back() {
    if (state.path.length) { state.path.pop(); updateTree(); }
  }

  function submitSelected() {
    if (config.multi_label && state.selected.size) submit(Array.from(state.selected));
  }

  function toggleHelp() {
    if (el.help.open) el.help.close();
    else el.help.showModal();
  }

  // --- Keyboard ----------------------------------------------------------------------
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.isComposing) return;
    const target = ev.target;
    const typing = target instanceof HTMLElement
      && (target.isContentEditable || target.matches("input, textarea, select"));
    if (typing) {
      // Hotkeys are off while typing; Esc hands the keyboard back.
      if (ev.key === "Escape") { ev.preventDefault(); target.blur(); }
      return;
    }
    if (el.help.open) {
      if (ev.key === "?") { ev.preventDefault(); el.help.close(); }
      return;  // the dialog closes itself on Esc
    }
    const key = ev.key;
    let handled = true;
    if (key >= "1" && key <= "9" && key.length === 1) {
      const node = levelNodes()[Number(key) - 1];
      if (node) activate(node);
    } else if (key === "0") {
      chooseOpenedParent();
    } else if (key === "Enter" && config.multi_label) {
      submitSelected();
    } else if (key === "Escape") {
      back();
    } else if (key === "?") {
      toggleHelp();
    } else if (key === "s" || key === "S") {
      skip();
    } else if (key === "u" || key === "U") {
      undo();
    } else if (key === "c" || key === "C") {
      el.comment.focus();
    } else {
      handled = false;
    }
    if (handled) ev.preventDefault();
  });

  // --- Pointer -------------------------------------------------------------------------
  for (const node of nodes) {
    if (!node.button) continue;
    node.button.addEventListener("click", () => activate(node));
    node.button.addEventListener("mouseenter", () => showGuideline(node));
    node.button.addEventListener("focus", () => showGuideline(node));
  }
  root.querySelector(".tree").addEventListener("mouseleave", () => {
    showGuideline(state.path.length ? state.path[state.path.length - 1] : null);
  });
  if (el.back) el.back.addEventListener("click", back);
  if (el.chooseParent) el.chooseParent.addEventListener("click", chooseOpenedParent);
  if (el.submitMulti) el.submitMulti.addEventListener("click", submitSelected);
  el.skip.addEventListener("click", skip);
  el.undo.addEventListener("click", undo);
  el.helpBtn.addEventListener("click", toggleHelp);
  el.checkAgain.addEventListener("click", loadNext);

  // --- Start ---------------------------------------------------------------------------
  el.streak.textContent = String(readStreak());
  loadNext();
  refreshProgress();
  if (el.learning && !el.learning.hidden) learningTimer = setTimeout(refreshLearning, LEARNING_POLL_MS);
})();
