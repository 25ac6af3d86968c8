/* Sift quality dashboard: fetches the stats API (the same JSON scripts get) and draws it with Chart.js.
 *
 * CSP: this file and Chart.js are the only scripts; nothing is evaluated, nothing inline. Every piece of
 * text that comes from users (reviewer names, label names, messages) is written with textContent, never
 * as markup. When every panel has rendered (or failed), <body data-dashboard="ready"> is set.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const COLORS = ["#2450d3", "#0f9f8f", "#e08a00", "#7a4fd6", "#d4463b", "#3b8f3b", "#c2407f", "#5d6978",
                  "#1f8fd6", "#a06a2c"];
  const INK = "#17202b";
  const MUTED = "#5d6978";
  const GRID = "#e6eaf0";

  if (window.Chart) {
    Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    Chart.defaults.font.size = 12;
    Chart.defaults.color = MUTED;
    Chart.defaults.borderColor = GRID;
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.plugins.legend.labels.boxWidth = 12;
    Chart.defaults.plugins.legend.labels.boxHeight = 12;
  }

  // --- small helpers ---------------------------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node) node.textContent = text;
  }

  function pct(value, digits) {
    if (value === null || value === undefined) return "–";
    return (100 * value).toFixed(digits === undefined ? 1 : digits) + "%";
  }

  function num(value, digits) {
    if (value === null || value === undefined) return "–";
    return Number(value).toFixed(digits === undefined ? 2 : digits);
  }

  function count(value) {
    if (value === null || value === undefined) return "–";
    return Number(value).toLocaleString("en-GB");
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " days";
  }

  function color(i, alpha) {
    const hex = COLORS[i % COLORS.length];
    if (alpha === undefined) return hex;
    const r = parseInt(hex.slice(1, 3), 16), g = parseInt(hex.slice(3, 5), 16), b = parseInt(hex.slice(5, 7), 16);
    return "rgba(" + r + "," + g + "," + b + "," + alpha + ")";
  }

  async function getJSON(url) {
    const result = await window.siftApi.request("GET", url);  // the shared wrapper (api.js)
    if (result.status === 401 || result.status === 403) throw new Error("You may not see these figures.");
    if (!result.ok) throw new Error(url + " answered " + result.status);
    if (result.data === null) throw new Error(url + " answered something that is not JSON");
    return result.data;
  }

  function showError(message) {
    const box = $("dash-error");
    box.hidden = false;
    box.appendChild(el("div", "", message));
  }

  function chart(id, spec) {
    const canvas = $(id);
    if (!canvas || !window.Chart) return null;
    return new Chart(canvas, spec);
  }

  // --- the summary: key figures and alerts -----------------------------------------------------------------
  function renderSummary(summary) {
    const p = summary.progress;
    setText("kpi-labelled", count(p.labelled));
    setText("kpi-labelled-sub", "of " + count(p.items) + " items · " + count(p.annotations) + " answers from " +
            count(p.reviewers) + " reviewers");
    const a = summary.agreement;
    setText("kpi-alpha", a.alpha === null ? "–" : num(a.alpha, 2));
    setText("kpi-alpha-sub", a.n_units ? "Krippendorff's α over " + count(a.n_units) + " items with 2+ answers"
                                       : "Krippendorff's α needs items with 2+ answers");
    setText("kpi-sample", count(summary.prevalence.n_sample));
    setText("kpi-sample-sub", "random picks behind the prevalence estimates");
    setText("kpi-adjudications", count(summary.adjudications.pending));
    setText("kpi-adjudications-sub", count(summary.adjudications.decided) + " decided");
    const badge = $("pending-badge");
    if (badge) badge.textContent = count(summary.adjudications.pending);

    const box = $("alerts");
    box.replaceChildren();
    summary.alerts.forEach(function (alert) {
      const item = el("div", "alert alert-warn");
      item.appendChild(el("strong", "", "Gold accuracy below threshold. "));
      item.appendChild(el("span", "", alert.message + "."));
      if (alert.weakest_labels.length) {
        const weakest = alert.weakest_labels.map(function (w) { return w.key + " " + pct(w.accuracy, 0) + " of " + w.n; });
        item.appendChild(el("span", "muted", " Weakest: " + weakest.join(", ") + "."));
      }
      box.appendChild(item);
    });
    renderPropagation(summary.propagation || []);
  }

  // --- label propagation: measured precision per label (labeling/selectors/propagation.py) ----------------
  function renderPropagation(rows) {
    const body = $("propagation-table").querySelector("tbody");
    body.replaceChildren();
    $("propagation-empty").hidden = rows.length > 0;
    rows.forEach(function (r) {
      const tr = el("tr");
      tr.appendChild(el("td", "", r.label));
      tr.appendChild(el("td", "num", count(r.propagated)));
      tr.appendChild(el("td", "num", count(r.verified)));
      tr.appendChild(el("td", "num", count(r.agreements)));
      tr.appendChild(el("td", "num", r.precision === null ? "–" : pct(r.precision, 1)));
      tr.appendChild(el("td", "", r.precision === null ? "none verified yet" : pct(r.low, 1) + " – " + pct(r.high, 1)));
      body.appendChild(tr);
    });
  }

  // --- prevalence with its interval ------------------------------------------------------------------------
  function renderPrevalence(prevalence) {
    const rows = prevalence.labels;
    setText("prevalence-n", count(prevalence.n_sample) + " random picks in " + prevalence.n_rounds +
            " sampling round(s) · pool of " + count(prevalence.population) + " items");
    setText("prevalence-estimator", "Estimator: " + prevalence.estimator);
    const table = $("prevalence-table").tBodies[0];
    table.replaceChildren();
    rows.forEach(function (r) {
      const tr = el("tr");
      const name = el("th", "", r.name);
      name.scope = "row";
      tr.appendChild(name);
      tr.appendChild(cell(pct(r.estimate)));
      tr.appendChild(cell(r.low === null ? "–" : pct(r.low) + " – " + pct(r.high)));
      tr.appendChild(cell(count(r.n_sample)));
      tr.appendChild(cell(pct(r.naive)));
      table.appendChild(tr);
    });
    const names = rows.map(function (r) { return r.name; });
    chart("chart-prevalence", {
      data: {
        labels: names,
        datasets: [
          {type: "bar", label: "95% interval", indexAxis: "y", data: rows.map(function (r) {
            return r.low === null ? null : [r.low, r.high];
          }), backgroundColor: color(0, 0.22), borderColor: color(0, 0.55), borderWidth: 1, borderSkipped: false,
          barPercentage: 0.55, categoryPercentage: 0.9, order: 3},
          {type: "line", label: "Estimate", indexAxis: "y", data: rows.map(function (r) { return r.estimate; }),
           showLine: false, pointStyle: "rectRot", pointRadius: 7, pointHoverRadius: 8,
           backgroundColor: color(0), borderColor: "#ffffff", borderWidth: 1.5, order: 1},
          {type: "line", label: "Naive share of labelled items (biased)", indexAxis: "y",
           data: rows.map(function (r) { return r.naive; }), showLine: false, pointStyle: "crossRot",
           pointRadius: 7, pointBorderWidth: 2, borderColor: color(4), backgroundColor: color(4), order: 2},
        ],
      },
      options: {
        indexAxis: "y",
        scales: {
          x: {type: "linear", min: 0, title: {display: true, text: "share of the pool"},
              ticks: {callback: function (v) { return pct(v, 0); }}},
          y: {type: "category", ticks: {color: INK}, grid: {display: false}},
        },
        plugins: {
          legend: {position: "bottom"},
          tooltip: {callbacks: {label: function (ctx) {
            const r = rows[ctx.dataIndex];
            if (ctx.datasetIndex === 0) return "95% interval " + pct(r.low) + " – " + pct(r.high);
            if (ctx.datasetIndex === 1) return "estimate " + pct(r.estimate) + " (" + r.n_sample + " picks)";
            return "naive " + pct(r.naive);
          }}},
        },
      },
    });
  }

  // --- learning curve over model versions ------------------------------------------------------------------
  function metric(model, path) {
    let value = model.metrics || {};
    for (const key of path) {
      if (value === null || typeof value !== "object") return null;
      value = value[key];
    }
    return typeof value === "number" ? value : null;
  }

  function renderCurve(models) {
    const usable = models.filter(function (m) { return m.status !== "failed"; }).slice().reverse();
    if (!usable.length) { $("curve-empty").hidden = false; return; }
    setText("curve-n", usable.length + " model version(s)");
    const series = [
      ["Macro F1 (cross-validated)", ["cv", "macro_f1"]],
      ["Macro F1 on exploration picks", ["exploration", "macro_f1"]],
      ["Average precision on exploration picks", ["exploration", "average_precision"]],
    ];
    const datasets = series.map(function (s, i) {
      return {
        label: s[0], data: usable.map(function (m) { return {x: m.n_labels, y: metric(m, s[1]), version: m.version}; })
          .filter(function (p) { return p.y !== null; }),
        borderColor: color(i), backgroundColor: color(i), pointRadius: 3, tension: 0.25, spanGaps: true,
      };
    }).filter(function (d) { return d.data.length; });
    if (!datasets.length) { $("curve-empty").hidden = false; $("curve-empty").textContent = "Models have no scores yet."; return; }
    chart("chart-curve", {
      type: "line",
      data: {datasets: datasets},
      options: {
        parsing: false,
        scales: {x: {type: "linear", title: {display: true, text: "labels used"}},
                 y: {min: 0, max: 1, title: {display: true, text: "score"}}},
        plugins: {legend: {position: "bottom"}, tooltip: {callbacks: {title: function (items) {
          const p = items[0].raw; return "model v" + p.version + " · " + p.x + " labels";
        }}}},
      },
    });
  }

  // --- agreement over time and label distribution ----------------------------------------------------------
  function renderTimeline(timeline) {
    const buckets = timeline.buckets;
    const starts = buckets.map(function (b) { return b.start; });
    setText("timeline-n", "per " + timeline.bucket);
    if (!buckets.some(function (b) { return b.alpha_cumulative_units > 0; })) $("timeline-empty").hidden = false;
    chart("chart-agreement", {
      data: {
        labels: starts,
        datasets: [
          {type: "line", label: "α, all items so far", data: buckets.map(function (b) { return b.alpha_cumulative; }),
           borderColor: color(0), backgroundColor: color(0), tension: 0.25, pointRadius: 2, yAxisID: "y", spanGaps: true},
          {type: "line", label: "α, items completed that " + timeline.bucket, data: buckets.map(function (b) { return b.alpha; }),
           borderColor: color(1), backgroundColor: color(1), showLine: false, pointRadius: 4, yAxisID: "y"},
          {type: "bar", label: "answers", data: buckets.map(function (b) { return b.answers; }),
           backgroundColor: "rgba(93,105,120,0.16)", yAxisID: "y2", order: 5},
        ],
      },
      options: {
        scales: {
          y: {min: -0.2, max: 1, title: {display: true, text: "Krippendorff's α"}},
          y2: {position: "right", beginAtZero: true, grid: {display: false}, title: {display: true, text: "answers"}},
          x: {grid: {display: false}},
        },
        plugins: {legend: {position: "bottom"}},
      },
    });
    const names = timeline.label_names || {};
    chart("chart-distribution", {
      type: "bar",
      data: {
        labels: starts,
        datasets: timeline.labels.map(function (key, i) {
          return {label: names[key] || key, data: buckets.map(function (b) { return b.labels[key] || 0; }),
                  backgroundColor: color(i, 0.85)};
        }),
      },
      options: {scales: {x: {stacked: true, grid: {display: false}}, y: {stacked: true, beginAtZero: true}},
                plugins: {legend: {position: "bottom"}}},
    });
    const final = timeline.distribution;
    chart("chart-final", {
      type: "bar",
      data: {labels: final.map(function (d) { return d.name; }),
             datasets: [{label: "items by final answer", data: final.map(function (d) { return d.items; }),
                         backgroundColor: final.map(function (d, i) { return d.key === "(tie)" ? "#c4ccd6" : color(i, 0.85); })}]},
      options: {indexAxis: "y", plugins: {legend: {display: false}},
                scales: {x: {beginAtZero: true, title: {display: true, text: "items"}}, y: {ticks: {color: INK}, grid: {display: false}}}},
    });
  }

  // --- queue health ----------------------------------------------------------------------------------------
  function renderQueue(q) {
    setText("kpi-queue", count(q.open));
    setText("kpi-queue-sub", "open items · " + count(q.leases_out) + " leased now");
    const inProgress = Math.max(0, q.labelled - q.finished);
    const untouched = Math.max(0, q.items - q.labelled);
    chart("chart-queue", {
      type: "bar",
      data: {labels: ["pool"], datasets: [
        {label: "finished", data: [q.finished], backgroundColor: color(5, 0.85)},
        {label: "needs more answers", data: [inProgress], backgroundColor: color(2, 0.85)},
        {label: "unlabelled", data: [untouched], backgroundColor: "#d5dbe3"},
      ]},
      options: {indexAxis: "y", plugins: {legend: {position: "bottom"}},
                scales: {x: {stacked: true, beginAtZero: true, max: q.items || undefined}, y: {stacked: true, display: false}}},
    });
    const facts = $("queue-facts");
    facts.replaceChildren();
    const r = q.ranking;
    const rows = [
      ["Leases out", count(q.leases_out) + (q.leases_expired_unclosed ? " (" + count(q.leases_expired_unclosed) + " expired)" : "")],
      ["Oldest lease", duration(q.oldest_lease_seconds)],
      ["Active ranking", r.version === null ? "none (random order)" : "v" + r.version + " · " + pct(r.consumed_share, 0) + " consumed"],
      ["Labels since it was first served", r.labels_since_served === null ? "–" : count(r.labels_since_served)],
      ["Answers, last hour / day", count(q.answers_last_hour) + " / " + count(q.answers_last_day)],
      ["Last answer", q.seconds_since_last_answer === null ? "never" : duration(q.seconds_since_last_answer) + " ago"],
      ["Gold items", count(q.gold_items)],
    ];
    rows.forEach(function (row) {
      const wrap = el("div");
      wrap.appendChild(el("dt", "", row[0]));
      wrap.appendChild(el("dd", "", row[1]));
      facts.appendChild(wrap);
    });
    setText("queue-updated", "as of " + new Date().toLocaleTimeString("en-GB", {hour: "2-digit", minute: "2-digit"}));
  }

  // --- reviewers -------------------------------------------------------------------------------------------
  function cell(text, className) {
    return el("td", className || "num", text);
  }

  function goldCell(row, threshold) {
    const td = el("td", "gold-cell");
    if (row.gold_accuracy === null) { td.textContent = "–"; return td; }
    const bar = el("span", "meter");
    const fill = el("span", "meter-fill" + (row.flagged ? " is-bad" : row.gold_accuracy < threshold ? " is-warn" : ""));
    fill.style.width = Math.round(100 * row.gold_accuracy) + "%";  // CSSOM, allowed under the CSP
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(el("span", "meter-text", pct(row.gold_accuracy, 0) + " of " + row.n_gold));
    if (row.flagged) td.appendChild(el("span", "badge badge-bad", "alert"));
    const labels = Object.entries(row.gold_by_label || {});
    if (labels.length) {
      td.title = labels.map(function (e) { return e[0] + ": " + pct(e[1].accuracy, 0) + " of " + e[1].n; }).join("\n");
    }
    return td;
  }

  function renderReviewers(data) {
    const body = $("reviewers-table").tBodies[0];
    body.replaceChildren();
    data.reviewers.forEach(function (row) {
      const tr = el("tr", row.flagged ? "is-flagged" : "");
      const name = el("th", "", row.reviewer);
      name.scope = "row";
      tr.appendChild(name);
      tr.appendChild(cell(count(row.annotations)));
      tr.appendChild(cell(count(row.last_7_days)));
      tr.appendChild(cell(row.median_seconds === null ? "–" : num(row.median_seconds, 1) + " s"));
      tr.appendChild(cell(row.items_per_hour === null ? "–" : Math.round(row.items_per_hour)));
      tr.appendChild(cell(pct(row.skip_rate, 0)));
      tr.appendChild(goldCell(row, data.gold_threshold));
      tr.appendChild(cell(row.consensus_agreement === null ? "–" : pct(row.consensus_agreement, 0) + " of " + row.consensus_compared));
      const s = row.suggestions;
      tr.appendChild(cell(s ? pct(s.follow_rate, 0) + " · " + pct(s.hidden_match_rate, 0) : "–"));
      body.appendChild(tr);
    });
    setText("reviewers-note", "gold threshold " + pct(data.gold_threshold, 0) + " over the latest answers (at least " +
            data.gold_min_answers + ")");
    const s = data.suggestions;
    if (s && s.automation_bias !== null) {
      setText("bias-note", "Automation bias: reviewers agreed with the model's suggestion " + pct(s.follow_rate, 0) +
              " of the time when it was shown (" + s.shown + " items) and " + pct(s.hidden_match_rate, 0) +
              " when it was withheld at random (" + s.hidden + " items): a difference of " +
              (s.automation_bias >= 0 ? "+" : "") + pct(s.automation_bias, 1) + " (95% interval " +
              pct(s.automation_bias_low, 1) + " to " + pct(s.automation_bias_high, 1) + ").");
    } else {
      setText("bias-note", "Automation bias needs a suggestion hold-out (Project.suggestion_holdout_rate > 0).");
    }
  }

  // --- agreement: per label, pairs, confusion --------------------------------------------------------------
  function renderAgreement(a) {
    const labels = a.per_label.filter(function (r) { return r.alpha !== null; });
    chart("chart-label-alpha", {
      type: "bar",
      data: {labels: labels.map(function (r) { return r.name; }),
             datasets: [{label: "α", data: labels.map(function (r) { return r.alpha; }),
                         backgroundColor: labels.map(function (r) { return r.alpha >= 0.8 ? color(5, 0.8) : r.alpha >= 0.667 ? color(2, 0.8) : color(4, 0.8); })}]},
      options: {indexAxis: "y", plugins: {legend: {display: false}, tooltip: {callbacks: {label: function (ctx) {
        const r = labels[ctx.dataIndex]; return "α " + num(r.alpha, 3) + " over " + r.n_units + " items";
      }}}}, scales: {x: {min: Math.min(0, ...labels.map(function (r) { return r.alpha; })), max: 1},
                     y: {ticks: {color: INK}, grid: {display: false}}}},
    });
    const kappa = $("kappa-table").tBodies[0];
    kappa.replaceChildren();
    a.kappa.slice().sort(function (x, y) { return y.n_items - x.n_items; }).slice(0, 8).forEach(function (k) {
      const tr = el("tr");
      tr.appendChild(el("td", "", k.reviewer_a + " · " + k.reviewer_b));
      tr.appendChild(cell(count(k.n_items)));
      tr.appendChild(cell(k.kappa === null ? "–" : num(k.kappa, 2)));
      kappa.appendChild(tr);
    });
    const table = $("confusion-table");
    table.replaceChildren();
    const values = a.confusion.labels;
    const matrix = a.confusion.matrix;
    let max = 0;
    matrix.forEach(function (row) { row.forEach(function (v) { if (v > max) max = v; }); });
    const head = el("tr");
    head.appendChild(el("th", "corner", ""));
    values.forEach(function (v) { const th = el("th", "col", v); th.scope = "col"; head.appendChild(th); });
    const thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    const tbody = el("tbody");
    matrix.forEach(function (row, i) {
      const tr = el("tr");
      const th = el("th", "", values[i]);
      th.scope = "row";
      tr.appendChild(th);
      row.forEach(function (v, j) {
        const td = el("td", i === j ? "diag" : "", v ? Math.round(v) : "");
        const strength = max ? v / max : 0;
        td.style.backgroundColor = i === j ? "rgba(29,122,70," + (0.08 + 0.6 * strength) + ")"
                                            : "rgba(179,38,30," + (v ? 0.08 + 0.6 * strength : 0) + ")";
        if (strength > 0.55) td.classList.add("strong");
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    setText("confusion-note", "Cells count how often one reviewer said the row label where another said the column label on the same item.");
  }

  // --- suspected label errors ------------------------------------------------------------------------------
  const SUSPICION_STATES = [
    ["new", "found"], ["recheck", "with a reviewer"], ["adjudication", "with a lead"],
    ["confirmed", "confirmed errors"], ["cleared", "answers kept"], ["skipped", "skipped"],
  ];
  const OUTCOMES = {
    new: "waiting to be routed", recheck: "waiting for another answer", adjudication: "waiting for a lead",
    confirmed: "error: corrected to ", cleared: "answer kept", skipped: "skipped",
  };

  function renderLabelErrors(page) {
    const counts = $("label-errors-counts");
    counts.replaceChildren();
    SUSPICION_STATES.forEach(function (s) {
      const li = el("li", "le-count le-" + s[0]);
      li.appendChild(el("strong", "", count(page.counts[s[0]] || 0)));
      li.appendChild(el("span", "muted small", " " + s[1]));
      counts.appendChild(li);
    });
    const body = $("label-errors-table").querySelector("tbody");
    body.replaceChildren();
    $("label-errors-empty").hidden = page.results.length > 0;
    page.results.forEach(function (row) {
      const tr = el("tr", row.open ? "le-open" : "le-closed");
      const item = el("td");
      if (config.urls.history) {
        const a = el("a", "", row.item.external_id);
        a.href = config.urls.history + "?external_id=" + encodeURIComponent(row.item.external_id);
        item.appendChild(a);
      } else {
        item.appendChild(el("span", "", row.item.external_id));
      }
      item.appendChild(el("div", "muted small le-text", row.item.text.length > 90 ? row.item.text.slice(0, 90) + "…" : row.item.text));
      tr.appendChild(item);
      tr.appendChild(el("td", "", row.given_label));
      tr.appendChild(el("td", "", row.suggested_label));
      tr.appendChild(cell(pct(row.self_confidence, 1)));
      const route = el("td", "", row.route_reason || "–");
      tr.appendChild(route);
      const outcome = OUTCOMES[row.state] + (row.state === "confirmed" && row.resolved_labels ? row.resolved_labels.join(", ") : "");
      tr.appendChild(el("td", "le-state-" + row.state, outcome));
      body.appendChild(tr);
    });
  }

  // --- per language ----------------------------------------------------------------------------------------
  // Language names in the reader's own language where the browser knows them (Intl.DisplayNames), else the code.
  const languageNames = (typeof Intl !== "undefined" && Intl.DisplayNames)
    ? new Intl.DisplayNames([navigator.language || "en"], {type: "language"}) : null;
  function languageName(code) {
    if (code === "und") return "Undetermined";
    if (code === "unknown") return "Not detected yet";
    try { return (languageNames && languageNames.of(code)) || code; } catch (e) { return code; }
  }

  function renderLanguages(byLanguage, advice) {
    const rows = byLanguage.languages;
    const tbody = $("languages-table").querySelector("tbody");
    tbody.replaceChildren();
    rows.forEach(function (r) {
      const tr = el("tr");
      tr.dataset.language = r.language;
      const name = el("td");
      name.appendChild(el("span", "", languageName(r.language)));
      name.appendChild(el("span", "muted small lang-code", " " + r.language));
      tr.appendChild(name);
      tr.appendChild(cell(count(r.progress.items)));
      tr.appendChild(cell(count(r.progress.labelled)));
      tr.appendChild(cell(count(r.progress.finished)));
      const alpha = cell(r.agreement.alpha === null ? "–" : num(r.agreement.alpha, 2));
      alpha.title = r.agreement.n_units + " items with two or more answers";
      tr.appendChild(alpha);
      const model = cell(r.model ? num(r.model.average_precision, 2) : "–");
      model.title = r.model ? r.model.n + " labels, out-of-fold" : "fewer than 20 labels, or one class";
      tr.appendChild(model);
      const prevalence = el("td", "lang-prevalence");
      r.prevalence.labels.filter(function (l) { return l.estimate !== null; }).forEach(function (l) {
        prevalence.appendChild(el("span", "pill", l.name + " " + pct(l.estimate, 0) + " [" + pct(l.low, 0) + "–" + pct(l.high, 0) + "]"));
      });
      if (!prevalence.childNodes.length) prevalence.textContent = "–";
      tr.appendChild(prevalence);
      tbody.appendChild(tr);
    });
    setText("languages-note", rows.length + " language" + (rows.length === 1 ? "" : "s") +
            (byLanguage.model_version ? " · model v" + byLanguage.model_version : ""));
    if (advice && advice.recommended_embedder) {
      const box = $("languages-advice");
      box.textContent = "Most of this project's items are not in English, and it embeds with " + advice.embedder +
        ", an English model. Switch it to the multilingual tier (admins: POST /api/projects/{slug}/embedder or " +
        "manage.py set_embedder): the worker re-embeds the items and the next model trains on the new vectors.";
      box.hidden = false;
    }
  }

  // --- go ---------------------------------------------------------------------------------------------------
  const urls = config.urls;
  const jobs = [
    getJSON(urls.summary).then(function (summary) {
      renderSummary(summary);
      return getJSON(urls.languages).then(function (advice) { renderLanguages(summary.by_language, advice); });
    }),
    getJSON(urls.prevalence).then(renderPrevalence),
    getJSON(urls.models).then(renderCurve, function () { $("curve-empty").hidden = false; }),
    getJSON(urls.timeline).then(renderTimeline),
    getJSON(urls.queue).then(renderQueue),
    getJSON(urls.reviewers).then(renderReviewers),
    getJSON(urls.agreement).then(renderAgreement),
    getJSON(urls.label_errors).then(renderLabelErrors),
  ];
  Promise.allSettled(jobs).then(function (results) {
    results.forEach(function (r) { if (r.status === "rejected") showError(String(r.reason && r.reason.message || r.reason)); });
    document.body.dataset.dashboard = "ready";
  });
})();
