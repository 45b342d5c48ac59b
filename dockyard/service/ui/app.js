/* Dockyard operator dashboard: vanilla JS, no dependencies. Data comes from /ui/api (same origin,
   token cookie); the overview is pushed by server-sent events from /ui/api/stream. */
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
let role = "read";
let source = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

async function api(path, options) {
  const resp = await fetch("/ui/api/" + path, Object.assign({credentials: "same-origin"}, options || {}));
  if (resp.status === 401) { location.href = "/ui/login"; throw new Error("not signed in"); }
  const data = await resp.json().catch(() => ({error: resp.statusText}));
  return {status: resp.status, data};
}

function fmt(v, unit) { return v === null || v === undefined ? "–" : v + (unit || ""); }

// -- overview ---------------------------------------------------------------------------------
// A time in the deployment's zone (config time_zone), with UTC on hover.
function when(iso, zone) {
  if (!iso) return el("span", {}, "–");
  const t = new Date(iso);
  let shown = iso;
  try {
    shown = new Intl.DateTimeFormat("sv-SE", {timeZone: zone || "UTC", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit"}).format(t) + " " + (zone || "UTC");
  } catch (e) { /* an unknown zone: show UTC */ }
  return el("time", {datetime: iso, title: t.toISOString().replace(".000", "") + " UTC"}, shown);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %"; }

const SERIES = [["received", "received", "#3b7dd8"], ["delivered", "delivered", "#2f9e44"], ["failed", "dead-lettered", "#d9480f"],
  ["errors", "5xx / timeout / reset", "#c2255c"], ["retries", "retries", "#f08c00"]];

function errorsOf(s) {
  const n = s.received.length;
  const out = new Array(n).fill(0);
  for (const [cls, arr] of Object.entries(s.attempt_series || {})) {
    if (cls === "2xx" || cls === "4xx") continue;
    arr.forEach((v, i) => { out[i] += v; });
  }
  return out;
}

function drawOverview(d) {
  const win = Math.round(d.window_s / 60) + " min";
  document.getElementById("m-success").textContent = pct(d.success_rate);
  document.getElementById("m-success-label").textContent = `Orders delivered of those settled (last ${win})`;
  document.getElementById("m-attempts").textContent = pct(d.attempt_success_rate);
  document.getElementById("m-attempts-label").textContent = `Attempts answered 2xx, retries counted (last ${win}: ${d.attempts} attempts, ${d.retries} retries)`;
  document.getElementById("m-latency").textContent = fmt(d.latency_ms.p50, " ms") + " / " + fmt(d.latency_ms.p99, " ms");
  document.getElementById("m-outbox").textContent = d.outbox_depth;
  document.getElementById("m-dlq").textContent = d.dlq_size;
  document.getElementById("m-doubt").textContent = d.in_doubt;
  document.getElementById("m-window").textContent = Math.round(d.window_s / 60);
  document.getElementById("m-at").replaceChildren(when(d.at, d.time_zone));
  const box = document.getElementById("charts");
  const names = Object.keys(d.warehouses).sort();
  // one y-scale for every warehouse, so that their charts compare at a glance
  let max = 1;
  for (const name of names) {
    const s = d.warehouses[name];
    max = Math.max(max, ...s.received, ...s.delivered, ...s.failed, ...s.retries, ...errorsOf(s));
  }
  for (const name of names) {
    const s = d.warehouses[name];
    let chart = box.querySelector(`[data-warehouse="${CSS.escape(name)}"]`);
    if (!chart) {
      chart = el("div", {class: "chart", "data-warehouse": name});
      chart.append(el("h3", {}, name, el("span", {class: "circ"}), el("span", {class: "rate"})));
      const plot = svg("svg", {width: 420, height: 150, viewBox: "0 0 420 150", role: "img", "aria-label": "throughput " + name});
      for (const frac of [0, 0.5, 1]) {
        plot.append(svg("line", {x1: 34, y1: 120 - 100 * frac, x2: 420, y2: 120 - 100 * frac, stroke: frac ? "#eef0f4" : "#ccd", class: "grid"}));
        const label = svg("text", {x: 0, y: 124 - 100 * frac, "font-size": 10, fill: "#667", class: "tick", "data-frac": frac});
        plot.append(label);
      }
      const left = svg("text", {x: 34, y: 136, "font-size": 11, fill: "#667"}); left.textContent = "-" + win;
      const right = svg("text", {x: 395, y: 136, "font-size": 11, fill: "#667"}); right.textContent = "now";
      plot.append(left, right);
      for (const [kind, , color] of SERIES) {
        plot.append(svg("polyline", {class: "line-" + kind, fill: "none", stroke: color, "stroke-width": 2}));
      }
      plot.append(svg("g", {class: "tips"}));
      chart.append(plot, el("div", {class: "totals muted"}), el("div", {class: "health"}));
      box.append(chart);
    }
    const circuit = (d.circuits || {})[name] || "n/a";
    const circ = chart.querySelector(".circ");
    circ.textContent = "circuit " + circuit + " · in flight " + ((d.inflight || {})[name] || 0) +
      (s.paused ? ` · paused ${s.paused.for_s} s (${s.paused.reason})` : "");
    circ.className = "circ " + circuit.replace(/[^a-z_-]/g, "");
    chart.querySelector(".rate").textContent = `${s.orders_per_s} orders/s`;
    for (const tick of chart.querySelectorAll(".tick")) tick.textContent = String(Math.round(max * Number(tick.dataset.frac)));
    const n = s.received.length;
    const x = (i) => 34 + i * 386 / Math.max(1, n - 1);
    const values = {received: s.received, delivered: s.delivered, failed: s.failed, errors: errorsOf(s), retries: s.retries};
    for (const [kind] of SERIES) {
      chart.querySelector(".line-" + kind).setAttribute("points", values[kind].map((v, i) => `${x(i).toFixed(1)},${(120 - v * 100 / max).toFixed(1)}`).join(" "));
    }
    const tips = chart.querySelector(".tips");
    tips.replaceChildren();
    const start = Date.parse(d.start);
    for (let i = 0; i < n; i++) {
      const r = svg("rect", {x: (x(i) - 386 / n / 2).toFixed(1), y: 20, width: (386 / n).toFixed(1), height: 100, fill: "transparent"});
      const title = svg("title", {});
      const at = new Date(start + i * d.bucket_s * 1000).toISOString().slice(11, 19);
      title.textContent = `${at} UTC, per ${d.bucket_s} s: ` + SERIES.map(([kind, label]) => `${label} ${values[kind][i]}`).join(", ");
      r.append(title);
      tips.append(r);
    }
    const t = s.total;
    const totals = chart.querySelector(".totals");
    totals.textContent = `per ${d.bucket_s} s · received ${t.received} · delivered ${t.delivered} · failed ${t.failed} · retries ${s.retries_total}`;
    totals.dataset.received = t.received; totals.dataset.delivered = t.delivered; totals.dataset.failed = t.failed;
    totals.dataset.retries = s.retries_total; totals.dataset.errors = values.errors.reduce((a, b) => a + b, 0);
    const a = s.attempts || {};
    const classes = ["2xx", "4xx", "5xx", "timeout", "reset"].concat(Object.keys(a).filter((k) => !["2xx", "4xx", "5xx", "timeout", "reset"].includes(k)));
    const health = chart.querySelector(".health");
    health.replaceChildren(
      el("span", {class: "kv error-rate"}, "error rate ", el("b", {}, pct(s.error_rate))),
      el("span", {class: "kv"}, "exchange p50 / p99 ", el("b", {}, fmt(s.exchange_ms.p50, " ms") + " / " + fmt(s.exchange_ms.p99, " ms"))),
      el("span", {class: "kv backlog", "data-age": s.oldest_due_s}, "backlog ", el("b", {}, String(s.backlog)), " · oldest due ", el("b", {}, s.oldest_due_s + " s")),
      el("span", {class: "kv attempts"}, "attempts ", ...classes.map((k) => el("span", {class: "cls cls-" + k}, `${k} ${a[k] || 0} `))));
  }
  box.dataset.updates = String(Number(box.dataset.updates || 0) + 1);
}

function startStream() {
  if (source) return;
  const live = document.getElementById("live");
  source = new EventSource("/ui/api/stream");
  source.addEventListener("overview", (e) => {
    live.textContent = "live"; live.classList.remove("off");
    drawOverview(JSON.parse(e.data));
  });
  source.onerror = () => { live.textContent = "reconnecting"; live.classList.add("off"); };
}

// -- orders -----------------------------------------------------------------------------------
async function doSearch(q) {
  const table = document.getElementById("search-results");
  table.replaceChildren();
  if (!q) return;
  const {data} = await api("search?q=" + encodeURIComponent(q));
  table.append(el("tr", {}, ...["order", "warehouse", "shop", "status", "delivery", "waybills", "updated", "matched by"].map((h) => el("th", {}, h))));
  if (!data.results.length) table.append(el("tr", {}, el("td", {colspan: 8}, "no order found")));
  for (const r of data.results) {
    table.append(el("tr", {class: "click result", onclick: () => { location.hash = "#order/" + encodeURIComponent(r.order_no); }},
      el("td", {}, el("a", {href: "#order/" + encodeURIComponent(r.order_no)}, r.order_no)), el("td", {}, r.warehouse),
      el("td", {}, r.shop_code || ""), el("td", {}, r.status), el("td", {}, r.delivery),
      el("td", {}, (r.waybills || []).map(waybill).join(", ")),
      el("td", {}, r.updated_at), el("td", {}, r.matched)));
  }
}

function details(label, value, cls) {
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  return el("details", {class: cls || "detail"}, el("summary", {}, label), el("pre", {}, text));
}

function waybill(w) {
  if (typeof w === "string") return w;
  return (w && (w.waybill_no || w.waybillNo || w.code)) ? [w.carrier_code, w.waybill_no || w.waybillNo || w.code].filter(Boolean).join(" ") : JSON.stringify(w);
}

async function showOrder(orderNo) {
  document.getElementById("order-title").textContent = "Order " + orderNo;
  const list = document.getElementById("timeline");
  const summary = document.getElementById("order-summary");
  list.replaceChildren(); summary.replaceChildren();
  const {status, data} = await api("orders/" + encodeURIComponent(orderNo));
  if (status !== 200) { summary.append(el("p", {class: "msg"}, data.error || "not found")); return; }
  const o = data.order;
  if (o) {
    summary.append(el("p", {}, `warehouse ${o.warehouse} · status ${o.status} · delivery ${o.delivery} · ` +
      `warehouse order ${o.warehouse_order_id || "–"} · waybills ${(o.waybills || []).map(waybill).join(", ") || "–"}`));
    for (const j of o.jobs.filter((j) => j.state === "dead" || j.state === "held")) summary.append(failing(j, o.order_no));
    summary.append(details("jobs and events", {jobs: o.jobs, events: o.events}));
  }
  const steps = data.timeline;
  const start = steps.length ? steps[0].at_us : 0;
  for (const s of steps) {
    const bad = /error|dlq|in_doubt|forged|rejected|refused/.test(s.outcome) || /dead|retry|held|rejected|failed/.test(s.step);
    const where = [s.warehouse, s.flow].filter(Boolean).join("/");
    const li = el("li", {class: "step-" + s.step + (bad ? " bad" : ""), "data-step": s.step},
      el("span", {class: "t"}, "+" + ((s.at_us - start) / 1000).toFixed(1) + " ms"),
      el("span", {class: "step"}, s.step), el("span", {class: "outcome"}, s.outcome), " ", where,
      s.elapsed_ms !== null ? ` (took ${s.elapsed_ms} ms)` : "", el("span", {class: "muted"}, "  " + s.at));
    const detail = s.detail || {};
    const rest = Object.assign({}, detail); delete rest.body;
    if (Object.keys(rest).length) li.append(details("detail", rest));
    if (detail.body !== undefined) li.append(details("body (redacted)", detail.body, "body"));
    list.append(li);
  }
  showLineage(orderNo);
}

async function showLineage(orderNo) {
  const table = document.getElementById("lineage");
  table.replaceChildren();
  const note = document.getElementById("lineage-version");
  note.replaceChildren();
  const {data} = await api("orders/" + encodeURIComponent(orderNo) + "/lineage");
  if (data.basis === "sent") {
    note.append(`As sent (${data.step} ${data.at}): ${data.mapping} version ${data.mapping_version || "unknown"}`,
      data.mapping_sha ? ` (module ${data.mapping_sha}, bundle ${data.bundle})` : "", data.clock ? `, clock ${data.clock}` : "");
  } else if (data.basis === "preview") {
    note.append(`Not sent yet: what ${data.mapping} version ${data.mapping_version || "?"} would send now.`);
  }
  if (data.gone) { note.append(el("p", {class: "msg gone"}, data.note)); return; }
  if (data.error) { table.append(el("tr", {}, el("td", {}, data.error))); return; }
  table.append(el("tr", {}, el("th", {}, "field (" + data.mapping + ")"), el("th", {}, "value"), el("th", {}, "comes from"), el("th", {}, "spec")));
  for (const f of data.fields) {
    const origin = f.sources.map((s) => s.path.includes("[]") ? s.path : `${s.path} = ${JSON.stringify(s.value)}`)
      .concat(f.tables.map((t) => "table " + t), f.lets.map((l) => "$" + l), f.context.map((c) => "$ctx." + c), f.clock ? ["clock"] : []);
    table.append(el("tr", {class: "lineage", "data-field": f.field}, el("td", {}, f.field), el("td", {}, JSON.stringify(f.value)),
      el("td", {}, origin.length ? origin.join(", ") : "constant"), el("td", {class: "muted"}, f.spec)));
  }
}

// The failing step of an order, shown without a click: its reason, and the replay action when a
// replay can help (otherwise what to do instead).
function failing(j, orderNo) {
  const box = el("div", {class: "failing", "data-job": j.id},
    el("strong", {}, (j.state === "held" ? "Held in doubt" : "Dead-lettered") + ` (${j.kind}, job ${j.id}): `), j.reason || "no reason recorded");
  if (j.replay_helps === false) box.append(el("p", {class: "hopeless"}, "Replay cannot help: " + j.why));
  if (role === "operator") {
    box.append(el("button", {class: (j.replay_helps === false ? "secondary" : "danger") + " replay", "data-job": j.id,
      onclick: () => replayJob(j.id, orderNo, j.replay_helps === false)}, j.replay_helps === false ? "Replay anyway" : "Replay"));
  }
  return box;
}

// -- DLQ --------------------------------------------------------------------------------------
function dlqFilter() {
  const q = new URLSearchParams();
  for (const [key, id] of [["warehouse", "dlq-warehouse"], ["state", "dlq-state"], ["match", "dlq-match"]]) {
    const v = document.getElementById(id).value.trim();
    if (v) q.set(key, v);
  }
  return q;
}

async function showDlq() {
  const table = document.getElementById("dlq-groups");
  table.replaceChildren();
  const q = dlqFilter();
  const {data} = await api("dlq/groups?" + q.toString());
  const list = document.getElementById("dlq-warehouses");
  table.append(el("tr", {}, ...["", "jobs", "warehouse", "state", "reason", "first … last", "e.g.", ""].map((h) => el("th", {}, h))));
  if (!data.groups.length) table.append(el("tr", {}, el("td", {colspan: 8}, "nothing dead or in doubt matches")));
  for (const g of data.groups) {
    if (!list.querySelector(`option[value="${CSS.escape(g.warehouse)}"]`)) list.append(el("option", {value: g.warehouse}));
    const actions = el("td", {class: "actions"});
    if (role === "operator") {
      if (g.replay_helps) actions.append(el("button", {class: "danger bulk-replay", onclick: () => bulk({action: "replay", group: g.group}, `Replay all ${g.count} jobs of this group?`)}, `Replay all ${g.count}`));
      actions.append(el("button", {class: "bulk-discard", onclick: () => discard({group: g.group}, g.count)}, `Discard all ${g.count}…`));
    } else actions.append(el("span", {class: "muted"}, "operator only"));
    const reason = el("td", {}, g.reason);
    if (!g.replay_helps) reason.append(el("p", {class: "hopeless"}, "Replay cannot help: " + g.why));
    table.append(el("tr", {class: "dlq-group", "data-group": g.group},
      el("td", {}, el("input", {type: "checkbox", class: "pick-group", "data-group": g.group, "aria-label": "select the group"})),
      el("td", {}, g.count), el("td", {}, g.warehouse), el("td", {}, g.state), reason, el("td", {}, `${g.first} … ${g.last}`),
      el("td", {}, ...g.jobs.map((id, i) => el("a", {href: "#", class: "job-link", onclick: (e) => { e.preventDefault(); showJob(id); }},
        (g.orders[i] || "job " + id) + " "))), actions));
  }
  document.getElementById("dlq-total").textContent = `${data.total} job(s) in ${data.groups.length} group(s)`;
}

function pickedGroups() {
  return [...document.querySelectorAll("input.pick-group:checked")].map((c) => c.dataset.group);
}

async function bulk(body, question) {
  if (!window.confirm(question + " Each is recorded in the journal with your role.")) return;
  const {status, data} = await api("dlq/bulk", {method: "POST", headers: {"Content-Type": "application/json", "X-Dockyard-UI": "1"}, body: JSON.stringify(body)});
  const box = document.getElementById("dlq-detail");
  box.replaceChildren(el("p", {class: "msg", id: "bulk-result"}, status === 200
    ? `${data.action}: ${data.done} job(s) (by ${data.by})` + (data.note ? ". " + data.note : "") : (data.error || "failed")));
  showDlq();
}

function discard(selection, count) {
  const why = window.prompt(`Discard ${count} job(s) for good? Say why (recorded in the journal):`);
  if (why && why.trim()) bulk(Object.assign({action: "discard", reason: why.trim()}, selection), `Discard ${count} job(s)?`);
}

async function bulkPicked(action) {
  const groups = pickedGroups();
  if (!groups.length) { document.getElementById("dlq-detail").replaceChildren(el("p", {class: "msg"}, "select one or more groups first")); return; }
  for (const group of groups) {
    if (action === "replay") await bulk({action, group}, `Replay the jobs of group ${group}?`);
    else discard({group}, "the group's");
  }
}

async function showJob(id) {
  const box = document.getElementById("dlq-detail");
  box.replaceChildren();
  const {data} = await api("dlq/" + id);
  if (data.error) { box.append(el("p", {class: "msg"}, data.error)); return; }
  box.append(el("h3", {}, `Job ${data.id} (${data.state}) · ${data.warehouse} ${data.kind}`), el("p", {}, data.reason || ""));
  box.append(details("last outcome", data.outcome), details("event", data.event));
  const hist = el("ol", {class: "timeline"});
  for (const s of data.history) hist.append(el("li", {}, el("span", {class: "t"}, s.at), el("span", {class: "step"}, s.step), s.outcome, " ",
    s.detail && s.detail.reason ? s.detail.reason : ""));
  box.append(el("h4", {}, "History"), hist);
}

async function replayJob(id, orderNo, hopeless) {
  const warn = hopeless ? " A replay cannot help this one: it will fail the same way." : "";
  if (!window.confirm(`Replay job ${id}${orderNo ? " (order " + orderNo + ")" : ""}? It is sent to the warehouse again and recorded in the journal.${warn}`)) return;
  const {status, data} = await api("dlq/" + id + "/replay", {method: "POST", headers: {"Content-Type": "application/json", "X-Dockyard-UI": "1"}, body: "{}"});
  const text = status === 200 ? `job ${id}: ${data.result} (by ${data.by})` : `job ${id}: ${data.error || data.result}`;
  const onOrder = location.hash.startsWith("#order/");
  const box = document.getElementById(onOrder ? "order-summary" : "dlq-detail");
  if (onOrder) box.prepend(el("p", {class: "msg", id: "replay-result"}, text));
  else { box.replaceChildren(el("p", {class: "msg", id: "replay-result"}, text)); showDlq(); }
}

// -- warehouse errors -------------------------------------------------------------------------
async function showErrors() {
  const table = document.getElementById("error-groups");
  table.replaceChildren();
  const {data} = await api("errors");
  table.append(el("tr", {}, ...["warehouse", "reason", "count", "steps", "last", "orders"].map((h) => el("th", {}, h))));
  if (!data.groups.length) table.append(el("tr", {}, el("td", {colspan: 6}, "no errors in the last hour")));
  for (const g of data.groups) {
    table.append(el("tr", {class: "error-group"}, el("td", {}, g.warehouse), el("td", {}, g.reason), el("td", {}, g.count),
      el("td", {}, Object.entries(g.steps).map(([k, v]) => `${k} ${v}`).join(", ")), el("td", {}, g.last),
      el("td", {}, ...g.orders.map((o) => el("a", {href: "#order/" + encodeURIComponent(o), style: null}, o + " ")))));
  }
}

// -- routing ----------------------------------------------------------------------------------
function route() {
  const hash = location.hash.slice(1) || "overview";
  const [view, ...rest] = hash.split("/");
  const arg = decodeURIComponent(rest.join("/"));
  const name = ["overview", "search", "order", "dlq", "errors"].includes(view) ? view : "overview";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + name;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.view === (name === "order" ? "search" : name));
  if (name === "order") showOrder(arg);
  else if (name === "search" && arg) { document.getElementById("search-q").value = arg; doSearch(arg); }
  else if (name === "dlq") showDlq();
  else if (name === "errors") showErrors();
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = document.getElementById("search-q").value.trim();
    location.hash = "#search/" + encodeURIComponent(q);
  });
  document.getElementById("dlq-filter").addEventListener("submit", (e) => { e.preventDefault(); showDlq(); });
  document.getElementById("dlq-replay-picked").addEventListener("click", () => bulkPicked("replay"));
  document.getElementById("dlq-discard-picked").addEventListener("click", () => bulkPicked("discard"));
  document.getElementById("lineage-filter").addEventListener("input", (e) => {
    const q = e.target.value.toLowerCase();
    for (const tr of document.querySelectorAll("#lineage tr.lineage")) tr.hidden = q && !tr.dataset.field.toLowerCase().includes(q);
  });
  const {data} = await api("whoami");
  role = data.role;
  document.getElementById("role").textContent = "role: " + role;
  window.addEventListener("hashchange", route);
  route();
  startStream();
});
