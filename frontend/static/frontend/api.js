// The one fetch wrapper of every page (label.js, taxonomy.js, dashboard.js, reveal.js), loaded by base.html
// before any page script: same-origin credentials, the CSRF token on every request, JSON in and out.
//
// siftApi.request(method, url, body, {form}) resolves to {status, ok, data, date, retryAfter}: data is the
// parsed JSON body, or null for a 204 or a body that is not JSON. It rejects only when the server could not
// be reached (fetch's own network error), so callers tell "refused" from "unreachable".
"use strict";

window.siftApi = (function () {
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrfToken = csrfMeta ? csrfMeta.getAttribute("content") : "";

  async function request(method, url, body, options) {
    const form = Boolean(options && options.form);
    const headers = { "Accept": "application/json", "X-CSRFToken": csrfToken };
    // A form (FormData) sets its own multipart Content-Type with the boundary.
    if (!form) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: body === undefined ? undefined : (form ? body : JSON.stringify(body)),
    });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (_) { data = null; }
    }
    return { status: response.status, ok: response.ok, data: data, date: response.headers.get("Date"),
             retryAfter: response.headers.get("Retry-After") };
  }

  return { request: request, csrfToken: csrfToken };
})();
