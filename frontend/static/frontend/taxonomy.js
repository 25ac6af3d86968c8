// The taxonomy editor: a tree of labels, a form for the selected label, the migrations table,
// preview and publish. Everything goes through the taxonomy API (labeling/api/views_taxonomy.py)
// with the session cookie and the CSRF token from the page's meta tag.
//
// Safety: user text (keys, names, guidelines, examples, server messages) is only ever put into
// the page with textContent or input values, never innerHTML. The CSP forbids inline script, so
// this file is the only script and its configuration arrives through json_script.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("taxonomy-config").textContent);
  const FLASH_KEY = "sift-taxonomy-flash";

  const $ = (id) => document.getElementById(id);
  const treeEl = $("tax-tree");
  const form = $("label-form");
  const messages = $("messages");

  let doc = null; // {name, multi_label, allow_non_leaf, labels: [node]}
  let migrations = []; // [{kind, sources, targets, requeue_priority}]
  let draftExists = false;
  let selected = null; // a node of doc.labels
  let dirty = false;
  let counter = 1;

  // --- Small helpers ------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "className") node.className = value;
      else node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function say(text, kind, details) {
    messages.replaceChildren();
    const box = el("div", { className: "alert" + (kind === "error" ? " alert-error" : kind === "ok" ? " alert-ok" : "") });
    box.appendChild(el("p", {}, text));
    if (details && details.length) {
      const list = el("ul", { className: "tax-problems" });
      for (const line of details) list.appendChild(el("li", {}, line));
      box.appendChild(list);
    }
    messages.appendChild(box);
  }

  // The shared wrapper (api.js); a body that is not JSON still gives the messages below something to show.
  async function api(method, url, body, isForm) {
    const result = await window.siftApi.request(method, url, body, { form: Boolean(isForm) });
    if (result.data === null && result.status !== 204) result.data = { detail: `HTTP ${result.status}` };
    return result;
  }

  function markDirty() {
    dirty = true;
    updateStatus();
  }

  function updateStatus() {
    const base = config.based_on ? `v${config.based_on}` : "nothing yet";
    let text = draftExists ? `Draft based on ${base}.` : `No draft yet: you are editing a copy of ${base}. Saving creates the draft.`;
    if (dirty) text += " Unsaved changes.";
    $("draft-status").textContent = text;
    $("label-count").textContent = doc ? `(${countNodes(doc.labels)})` : "";
  }

  function countNodes(nodes) {
    return nodes.reduce((n, node) => n + 1 + countNodes(node.children), 0);
  }

  function allKeys(nodes, into) {
    for (const node of nodes) { into.add(node.key); allKeys(node.children, into); }
    return into;
  }

  function normaliseNode(raw) {
    return {
      key: raw.key, name: raw.name || raw.key, description: raw.description || "",
      severity: raw.severity || 0, action: raw.action || "",
      positive_examples: (raw.positive_examples || []).slice(),
      negative_examples: (raw.negative_examples || []).slice(),
      deprecated: !!raw.deprecated,
      children: (raw.children || []).map(normaliseNode),
    };
  }

  function load(state) {
    draftExists = !!state.exists;
    const source = state.document || { name: "Taxonomy", multi_label: false, allow_non_leaf: false, labels: [] };
    doc = {
      name: source.name, multi_label: !!source.multi_label, allow_non_leaf: !!source.allow_non_leaf,
      labels: (source.labels || []).map(normaliseNode),
    };
    migrations = (state.migrations || []).map((m) => ({
      kind: m.kind, sources: m.sources.slice(), targets: (m.targets || []).slice(),
      requeue_priority: m.requeue_priority || 1,
    }));
    selected = null;
    dirty = false;
    $("tax-name").value = doc.name;
    $("tax-multi").checked = doc.multi_label;
    $("tax-non-leaf").checked = doc.allow_non_leaf;
    render();
  }

  // --- The tree -----------------------------------------------------------------------------

  function parentListOf(target, nodes) {
    for (const node of nodes) {
      if (node === target) return nodes;
      const found = parentListOf(target, node.children);
      if (found) return found;
    }
    return null;
  }

  function nodeAtPath(path) {
    // "labels[1].children[0].description" -> the node labels[1].children[0]
    const match = /^labels((?:\[\d+\](?:\.children)?)+)/.exec(path || "");
    if (!match || !doc) return null;
    let nodes = doc.labels;
    let node = null;
    for (const index of match[1].matchAll(/\[(\d+)\]/g)) {
      node = nodes[Number(index[1])];
      if (!node) return null;
      nodes = node.children;
    }
    return node;
  }

  function uniqueKey(prefix) {
    const keys = allKeys(doc.labels, new Set());
    let key;
    do { key = `${prefix}label_${counter++}`; } while (keys.has(key));
    return key;
  }

  function newNode(parent) {
    const key = uniqueKey(parent ? `${parent.key}/` : "");
    return normaliseNode({ key, name: "New label" });
  }

  function hasMigrationFor(key) {
    return migrations.some((m) => m.sources.includes(key));
  }

  function needsMigration(node) {
    return config.base_keys.includes(node.key) && !hasMigrationFor(node.key);
  }

  function action(label, title, handler, extraClass) {
    const button = el("button", { type: "button", className: "btn btn-small btn-quiet " + (extraClass || ""), title, "aria-label": title }, label);
    button.addEventListener("click", (event) => { event.stopPropagation(); handler(); });
    return button;
  }

  function renderNode(node, siblings, index) {
    const li = el("li", { role: "treeitem", "data-key": node.key, "aria-selected": String(node === selected) });
    if (node.deprecated) li.classList.add("is-deprecated");
    const row = el("div", { className: "tax-row" + (node === selected ? " is-selected" : "") });
    const pick = el("button", { type: "button", className: "tax-pick" });
    pick.appendChild(el("span", { className: "tax-name" }, node.name));
    pick.appendChild(el("code", { className: "tax-key" }, node.key));
    if (node.deprecated) pick.appendChild(el("span", { className: "badge" }, "deprecated"));
    if (node.severity) pick.appendChild(el("span", { className: "badge badge-severity" }, `sev ${node.severity}`));
    pick.addEventListener("click", () => select(node));
    row.appendChild(pick);

    const tools = el("span", { className: "tax-tools" });
    tools.appendChild(action("↑", `Move ${node.name} up`, () => move(siblings, index, -1)));
    tools.appendChild(action("↓", `Move ${node.name} down`, () => move(siblings, index, 1)));
    tools.appendChild(action("+ child", `Add a child label under ${node.name}`, () => addChild(node), "add-child"));
    tools.appendChild(node.deprecated
      ? action("Restore", `Restore ${node.name}`, () => setDeprecated(node, false))
      : action("Deprecate", `Deprecate ${node.name}`, () => setDeprecated(node, true)));
    tools.appendChild(action("Delete", `Delete ${node.name}`, () => remove(node, siblings, index), "danger"));
    row.appendChild(tools);
    li.appendChild(row);

    if (node.children.length) {
      const group = el("ul", { role: "group" });
      node.children.forEach((child, i) => group.appendChild(renderNode(child, node.children, i)));
      li.appendChild(group);
    }
    return li;
  }

  function renderTree() {
    treeEl.replaceChildren();
    doc.labels.forEach((node, i) => treeEl.appendChild(renderNode(node, doc.labels, i)));
    updateStatus();
  }

  function move(siblings, index, delta) {
    const to = index + delta;
    if (to < 0 || to >= siblings.length) return;
    const [node] = siblings.splice(index, 1);
    siblings.splice(to, 0, node);
    markDirty();
    renderTree();
  }

  function addChild(parent) {
    const node = newNode(parent);
    (parent ? parent.children : doc.labels).push(node);
    markDirty();
    select(node);
    $("f-name").focus();
    $("f-name").select();
  }

  function setDeprecated(node, deprecated) {
    node.deprecated = deprecated;
    if (deprecated && needsMigration(node)) {
      migrations.push({ kind: "deprecate", sources: [node.key], targets: [], requeue_priority: 1 });
      say(`Deprecated “${node.name}”. A deprecate migration re-queues its items; change it to a rename or merge if its answers carry over.`);
    }
    if (!deprecated) {
      migrations = migrations.filter((m) => !(m.kind === "deprecate" && m.sources.length === 1 && m.sources[0] === node.key));
    }
    markDirty();
    render();
  }

  function remove(node, siblings, index) {
    const removedKeys = Array.from(allKeys([node], new Set()));
    const published = removedKeys.filter((key) => config.base_keys.includes(key) && !hasMigrationFor(key));
    siblings.splice(index, 1);
    if (published.length) {
      migrations.push({ kind: "deprecate", sources: published, targets: [], requeue_priority: 1 });
      say(`Deleted “${node.name}”. Its published keys (${published.join(", ")}) got a deprecate migration; change it to a rename or merge if their answers carry over.`);
    }
    if (selected && removedKeys.includes(selected.key)) selected = null;
    markDirty();
    render();
  }

  // --- The label form -----------------------------------------------------------------------

  function select(node) {
    selected = node;
    renderTree();
    renderForm();
  }

  function renderForm() {
    form.hidden = !selected;
    $("form-empty").hidden = !!selected;
    if (!selected) return;
    $("f-key").value = selected.key;
    $("f-name").value = selected.name;
    $("f-description").value = selected.description;
    $("f-positive").value = selected.positive_examples.join("\n");
    $("f-negative").value = selected.negative_examples.join("\n");
    $("f-severity").value = String(selected.severity);
    $("f-action").value = selected.action;
    $("f-deprecated-note").hidden = !selected.deprecated;
  }

  function lines(text) {
    return text.split("\n").map((line) => line.trim()).filter((line) => line.length > 0);
  }

  form.addEventListener("input", (event) => {
    if (!selected) return;
    const field = event.target.name;
    const value = event.target.value;
    if (field === "key") selected.key = value.trim();
    else if (field === "name") selected.name = value;
    else if (field === "description") selected.description = value;
    else if (field === "positive_examples") selected.positive_examples = lines(value);
    else if (field === "negative_examples") selected.negative_examples = lines(value);
    else if (field === "severity") selected.severity = Math.max(0, Math.min(10, parseInt(value, 10) || 0));
    else if (field === "action") selected.action = value.trim();
    markDirty();
    if (field === "key" || field === "name") renderTree();
  });
  form.addEventListener("submit", (event) => event.preventDefault());

  $("tax-name").addEventListener("input", (event) => { doc.name = event.target.value; markDirty(); });
  $("tax-multi").addEventListener("change", (event) => { doc.multi_label = event.target.checked; markDirty(); });
  $("tax-non-leaf").addEventListener("change", (event) => { doc.allow_non_leaf = event.target.checked; markDirty(); });

  // --- Migrations ---------------------------------------------------------------------------

  function keyList(text) {
    return text.split(",").map((key) => key.trim()).filter((key) => key.length > 0);
  }

  function renderMigrations() {
    const body = $("migrations-body");
    body.replaceChildren();
    if (!migrations.length) {
      const row = el("tr");
      row.appendChild(el("td", { colspan: "5", className: "muted small" }, "None declared: every published key must still exist."));
      body.appendChild(row);
    }
    migrations.forEach((migration, index) => {
      const row = el("tr", { "data-migration": String(index) });
      const kind = el("select", { "aria-label": `Migration ${index + 1} kind` });
      for (const option of ["rename", "merge", "split", "deprecate"]) {
        const opt = el("option", { value: option }, option);
        if (option === migration.kind) opt.selected = true;
        kind.appendChild(opt);
      }
      kind.addEventListener("change", () => { migration.kind = kind.value; if (kind.value === "deprecate") migration.targets = []; markDirty(); renderMigrations(); });
      const sources = el("input", { type: "text", list: "base-keys", "aria-label": `Migration ${index + 1} sources` });
      sources.value = migration.sources.join(", ");
      sources.addEventListener("input", () => { migration.sources = keyList(sources.value); markDirty(); });
      const targets = el("input", { type: "text", "aria-label": `Migration ${index + 1} targets` });
      targets.value = migration.targets.join(", ");
      targets.disabled = migration.kind === "deprecate";
      targets.addEventListener("input", () => { migration.targets = keyList(targets.value); markDirty(); });
      const priority = el("input", { type: "number", min: "1", max: String(config.limits.priority), "aria-label": `Migration ${index + 1} re-queue priority` });
      priority.value = String(migration.requeue_priority || 1);
      priority.disabled = migration.kind === "rename" || migration.kind === "merge";
      priority.addEventListener("input", () => { migration.requeue_priority = parseInt(priority.value, 10) || 1; markDirty(); });
      const drop = el("button", { type: "button", className: "btn btn-small btn-quiet danger", "aria-label": `Remove migration ${index + 1}` }, "Remove");
      drop.addEventListener("click", () => { migrations.splice(index, 1); markDirty(); renderMigrations(); });
      for (const control of [kind, sources, targets, priority, drop]) {
        const cell = el("td");
        cell.appendChild(control);
        row.appendChild(cell);
      }
      body.appendChild(row);
    });
  }

  $("add-migration").addEventListener("click", () => {
    migrations.push({ kind: "rename", sources: [], targets: [], requeue_priority: 1 });
    markDirty();
    renderMigrations();
  });

  function render() {
    renderTree();
    renderForm();
    renderMigrations();
  }

  // --- Server round trips -------------------------------------------------------------------

  function payload() {
    return {
      name: doc.name, multi_label: doc.multi_label, allow_non_leaf: doc.allow_non_leaf, labels: doc.labels,
      migrations: migrations.map((m) => ({
        kind: m.kind, sources: m.sources, targets: m.kind === "deprecate" ? [] : m.targets,
        requeue_priority: m.kind === "split" || m.kind === "deprecate" ? m.requeue_priority : 1,
      })),
    };
  }

  function showError(response) {
    const data = response.data || {};
    const problems = (data.problems || []).map((p) => p.message);
    say(data.detail || `The server answered ${response.status}.`, "error", problems);
    const node = nodeAtPath(data.path);
    if (node) select(node);
  }

  async function save() {
    const response = await api("PUT", config.urls.draft, payload());
    if (!response.ok) { showError(response); return false; }
    const keep = selected ? selected.key : null;
    load(response.data);
    if (keep) { const again = findByKey(doc.labels, keep); if (again) select(again); }
    return true;
  }

  function findByKey(nodes, key) {
    for (const node of nodes) {
      if (node.key === key) return node;
      const found = findByKey(node.children, key);
      if (found) return found;
    }
    return null;
  }

  $("add-root").addEventListener("click", () => addChild(null));

  $("save-draft").addEventListener("click", async () => {
    if (await save()) say("Draft saved.", "ok");
  });

  $("preview-draft").addEventListener("click", async () => {
    if (!(await save())) return;
    const response = await api("POST", config.urls.preview);
    if (!response.ok) { showError(response); return; }
    const p = response.data;
    $("preview-empty").hidden = true;
    $("preview-result").hidden = false;
    $("pv-mapped").textContent = p.annotations_mapped;
    $("pv-unchanged").textContent = p.annotations_unchanged;
    $("pv-requeued").textContent = p.annotations_requeued;
    $("pv-items").textContent = p.items_requeued;
    $("pv-stuck").textContent = p.items_requeued_without_eligible_reviewer;
    const body = $("preview-migrations");
    body.replaceChildren();
    for (const m of p.migrations) {
      const row = el("tr");
      const arrow = m.targets.length ? ` → ${m.targets.join(m.kind === "split" ? " | " : ", ")}` : "";
      row.appendChild(el("td", {}, `${m.kind}: ${m.sources.join(m.kind === "merge" ? " + " : ", ")}${arrow}`));
      row.appendChild(el("td", {}, m.annotations_mapped));
      row.appendChild(el("td", {}, m.annotations_requeued));
      row.appendChild(el("td", {}, m.items_requeued));
      body.appendChild(row);
    }
    const problems = $("preview-problems");
    problems.replaceChildren();
    for (const problem of p.problems) problems.appendChild(el("li", { className: "error" }, problem.message));
    say(p.publishable ? "The draft can be published." : "Fix the problems below before publishing.", p.publishable ? "ok" : "error");
  });

  $("discard-draft").addEventListener("click", async () => {
    if (!window.confirm("Discard the draft and every unsaved change?")) return;
    const response = await api("DELETE", config.urls.draft);
    if (!response.ok && response.status !== 404) { showError(response); return; }
    dirty = false;
    sessionStorage.setItem(FLASH_KEY, "Draft discarded.");
    window.location.reload();
  });

  $("publish").addEventListener("click", async () => {
    const changelog = $("changelog").value.trim();
    if (!changelog) { say("Write a changelog first: it is shown in the history.", "error"); $("changelog").focus(); return; }
    const button = $("publish");
    button.disabled = true;
    try {
      if (!(await save())) return;
      const response = await api("POST", config.urls.publish, { changelog });
      if (!response.ok) { showError(response); return; }
      dirty = false;
      sessionStorage.setItem(FLASH_KEY, `Published v${response.data.number}.`);
      window.location.reload();
    } finally {
      button.disabled = false;
    }
  });

  $("import-file").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    let response;
    if (/\.(ttl|jsonld|json-ld)$/i.test(file.name)) {
      // SKOS (Turtle or JSON-LD): the server reads the scheme into the draft (labeling/services/taxonomy_skos.py).
      const form = new FormData();
      form.append("file", file);
      response = await api("POST", config.urls.skos, form, true);
    } else {
      let document_;
      try { document_ = JSON.parse(await file.text()); } catch (err) { say(`${file.name} is not valid JSON: ${err.message}`, "error"); return; }
      response = await api("POST", config.urls.import, document_);
    }
    if (!response.ok) { showError(response); return; }
    load(response.data);
    say(`Imported ${file.name} into the draft.`, "ok");
  });

  window.addEventListener("beforeunload", (event) => {
    if (dirty) { event.preventDefault(); event.returnValue = ""; }
  });

  // --- Start --------------------------------------------------------------------------------

  (async function start() {
    const flash = sessionStorage.getItem(FLASH_KEY);
    if (flash) { sessionStorage.removeItem(FLASH_KEY); say(flash, "ok"); }
    const response = await api("GET", config.urls.draft);
    if (!response.ok) { showError(response); return; }
    load(response.data);
    document.body.classList.add("tax-ready");
  })();
})();
