/* Import page: refreshes each unfinished import's progress bar and counts from GET /api/projects/<slug>/imports/<id>/
 * once a second (same-origin, session cookie) until it is done or failed. The state lives in the database, so a
 * reload shows the same. CSP: no inline script, nothing evaluated; text is written with textContent only.
 * When no job is unfinished, <body data-imports="idle"> is set (the browser tests wait for it).
 */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("import-config").textContent);
  const FINAL = ["done", "failed"];

  function set(node, selector, text) {
    const target = node.querySelector(selector);
    if (target) target.textContent = String(text);
  }

  function show(node, job) {
    node.dataset.status = job.status;
    set(node, ".job-status", job.status);
    set(node, ".job-read", job.rows_read);
    set(node, ".job-created", job.created);
    set(node, ".job-updated", job.updated);
    set(node, ".job-unchanged", job.unchanged);
    set(node, ".job-errors", job.error_count);
    const bar = node.querySelector(".job-bar");
    if (bar) { bar.value = job.percent; bar.textContent = job.percent + "%"; }
    const failure = node.querySelector(".job-failure");
    if (failure) { failure.textContent = job.failure; failure.hidden = !job.failure; }
    const link = node.querySelector(".job-errors-link");
    if (link) link.hidden = !(job.status === "done" && job.error_count > 0);
  }

  function pending() {
    return Array.from(document.querySelectorAll(".job")).filter((n) => !FINAL.includes(n.dataset.status));
  }

  async function tick() {
    const nodes = pending();
    if (!nodes.length) { document.body.dataset.imports = "idle"; return; }
    document.body.dataset.imports = "busy";
    for (const node of nodes) {
      try {
        const response = await window.siftApi.request("GET", config.status_url + node.dataset.job + "/");
        if (response.ok && response.data) show(node, response.data);
      } catch (error) { /* the next tick tries again */ }
    }
    window.setTimeout(tick, 1000);
  }
  tick();
})();
