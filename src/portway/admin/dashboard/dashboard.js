// Portway dashboard: polls the admin API's /stats and draws it. No libraries, no external assets.
//
// The token, when the admin API has one, comes from the URL fragment (#token=...), which the
// browser never sends to the server; the page sends it as a bearer token with each request.
// #interval=SECONDS changes the polling interval (default 1).
//
// quantile, rowRates and liveNumbers mirror src/portway/admin/rates.py function for function: the
// page and `portway top` must show the same numbers for the same two /stats answers.
"use strict";

const ERROR_CLASSES = ["5xx"];
const HISTORY = 60; // chart points kept per route and service

// ---- the computation (mirror of portway.admin.rates) ------------------------------------------

function quantile(q, bounds, counts) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  const rank = q * total;
  let running = 0;
  for (let index = 0; index < counts.length; index++) {
    const count = counts[index];
    if (count > 0 && running + count >= rank) {
      if (index >= bounds.length) return bounds.length ? bounds[bounds.length - 1] : null;
      const lower = index > 0 ? bounds[index - 1] : 0;
      const upper = bounds[index];
      return lower + ((upper - lower) * (rank - running)) / count;
    }
    running += count;
  }
  return bounds.length ? bounds[bounds.length - 1] : null;
}

function requestCounts(row) {
  const byClass = row.requests || {};
  let total = 0;
  for (const value of Object.values(byClass)) total += value;
  let errors = 0;
  for (const c of ERROR_CLASSES) errors += byClass[c] || 0;
  return [total, errors];
}

function increase(now, before) {
  return now >= before ? now - before : now; // a counter reset counts from zero
}

function rowRates(previous, current, seconds, bounds) {
  const [requests, errors] = requestCounts(current);
  const name = current.name || "";
  if (seconds === null || seconds <= 0) {
    return { name, requests, errors, rps: null, eps: null, p50: null, p99: null };
  }
  const [beforeRequests, beforeErrors] = previous ? requestCounts(previous) : [0, 0];
  const counts = (current.duration && current.duration.counts) || [];
  let before = (previous && previous.duration && previous.duration.counts) || [];
  if (before.length !== counts.length || before.some((b, i) => b > counts[i])) {
    before = counts.map(() => 0);
  }
  const delta = counts.map((c, i) => c - before[i]);
  return {
    name,
    requests,
    errors,
    rps: increase(requests, beforeRequests) / seconds,
    eps: increase(errors, beforeErrors) / seconds,
    p50: quantile(0.5, bounds, delta),
    p99: quantile(0.99, bounds, delta),
  };
}

function rows(previous, current, key, seconds) {
  const bounds = current.buckets || [];
  const before = new Map();
  if (previous) for (const r of previous[key] || []) before.set(r.name, r);
  return (current[key] || []).map((r) => rowRates(before.get(r.name), r, seconds, bounds));
}

function liveNumbers(previous, current) {
  let seconds = null;
  if (previous) {
    seconds = current.time - previous.time;
    if (seconds <= 0) seconds = null;
  }
  return {
    seconds,
    routes: rows(previous, current, "routes", seconds),
    services: rows(previous, current, "services", seconds),
  };
}

// ---- formatting -------------------------------------------------------------------------------

function fmtRate(value) {
  return value === null ? "-" : value.toFixed(value >= 100 ? 0 : 1);
}

function fmtSeconds(value) {
  if (value === null) return "-";
  if (value < 1) return (value * 1000).toFixed(value < 0.01 ? 2 : 1) + " ms";
  return value.toFixed(2) + " s";
}

function fmtTime(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "never";
}

// ---- drawing ----------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function chart(points) {
  const width = 120;
  const height = 28;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("class", "axis");
  axis.setAttribute("x1", "0");
  axis.setAttribute("x2", String(width));
  axis.setAttribute("y1", String(height - 1));
  axis.setAttribute("y2", String(height - 1));
  svg.appendChild(axis);
  const top = Math.max(1, ...points.map((p) => p.rps));
  // Right-aligned; the x scale grows with the history up to HISTORY points.
  const slots = Math.min(HISTORY, Math.max(points.length, 10));
  const step = width / (slots - 1);
  const offset = (slots - points.length) * step;
  for (const [field, cls] of [["eps", "errors"], ["rps", "rate"]]) {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", cls);
    const coords = points.map((p, i) => {
      const x = offset + i * step;
      const y = height - 1 - ((height - 3) * p[field]) / top;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    line.setAttribute("points", coords.join(" "));
    svg.appendChild(line);
  }
  const title = document.createElementNS(SVG, "title");
  title.textContent = `peak ${fmtRate(top)} req/s over the last ${points.length} polls`;
  svg.appendChild(title);
  return svg;
}

function cell(row, text, field, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (field) td.dataset.field = field;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function numbers(tr, live) {
  cell(tr, String(live.requests), "requests", "num");
  cell(tr, String(live.errors), "errors", "num" + (live.errors ? " bad" : ""));
  cell(tr, fmtRate(live.rps), "rps", "num");
  cell(tr, fmtRate(live.eps), "eps", "num" + (live.eps ? " bad" : ""));
  cell(tr, fmtSeconds(live.p50), "p50", "num");
  cell(tr, fmtSeconds(live.p99), "p99", "num");
}

function fill(tableId, items, columns, build) {
  const body = document.querySelector(`#${tableId} tbody`);
  const fresh = document.createElement("tbody");
  for (const item of items) fresh.appendChild(build(item));
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "none", null, "empty");
    td.colSpan = columns;
    fresh.appendChild(tr);
  }
  body.replaceWith(fresh);
}

// ---- polling ----------------------------------------------------------------------------------

const params = new URLSearchParams(location.hash.slice(1));
const token = params.get("token");
const interval = Math.max(0.2, Number(params.get("interval")) || 1) * 1000;
const history = new Map(); // "route:NAME" / "service:NAME" -> [{rps, eps}]
let previous = null;
let polls = 0;

function remember(key, live) {
  if (live.rps === null) return history.get(key) || [];
  const points = history.get(key) || [];
  points.push({ rps: live.rps, eps: live.eps });
  if (points.length > HISTORY) points.shift();
  history.set(key, points);
  return points;
}

function render(stats, live) {
  const routes = new Map(live.routes.map((r) => [r.name, r]));
  const services = new Map(live.services.map((r) => [r.name, r]));
  fill("routes", stats.routes, 10, (route) => {
    const tr = document.createElement("tr");
    tr.dataset.route = route.name;
    const numbersOf = routes.get(route.name);
    cell(tr, route.name, "name");
    const where = route.configured ? (route.hosts.join(", ") || "any host") + " " + route.path : "";
    cell(tr, where, "match");
    cell(tr, route.service, "service");
    numbers(tr, numbersOf);
    tr.appendChild(document.createElement("td")).appendChild(
      chart(remember("route:" + route.name, numbersOf)),
    );
    return tr;
  });
  fill("services", stats.services, 10, (service) => {
    const tr = document.createElement("tr");
    tr.dataset.service = service.name;
    const numbersOf = services.get(service.name);
    cell(tr, service.name, "name");
    cell(tr, service.algorithm, "algorithm");
    numbers(tr, numbersOf);
    cell(tr, String(service.retries), "retries", "num");
    tr.appendChild(document.createElement("td")).appendChild(
      chart(remember("service:" + service.name, numbersOf)),
    );
    return tr;
  });
  const instances = stats.services.flatMap((s) => s.instances.map((i) => [s.name, i]));
  fill("instances", instances, 7, ([service, instance]) => {
    const tr = document.createElement("tr");
    tr.dataset.instance = `${service}/${instance.address}`;
    cell(tr, service, "service");
    cell(tr, instance.address, "address");
    cell(tr, String(instance.weight), "weight", "num");
    cell(tr, instance.health, "health", "health-" + instance.health);
    cell(tr, instance.ejected ? "ejected" : "no", "ejected", instance.ejected ? "ejected" : "");
    cell(tr, String(instance.ejections), "ejections", "num");
    cell(tr, String(instance.active_requests), "active", "num");
    return tr;
  });
  fill("errors", Object.entries(stats.errors), 2, ([cause, count]) => {
    const tr = document.createElement("tr");
    tr.dataset.cause = cause;
    cell(tr, cause, "cause");
    cell(tr, String(count), "count", "num");
    return tr;
  });
  fill("policy-rejections", stats.policy_rejections, 5, (row) => {
    const tr = document.createElement("tr");
    tr.dataset.rejection = `${row.route}/${row.policy}/${row.reason}`;
    cell(tr, row.route, "route");
    cell(tr, row.policy, "policy");
    cell(tr, row.kind, "kind");
    cell(tr, row.reason, "reason");
    cell(tr, String(row.count), "count", "num");
    return tr;
  });
  const text = (id, value) => {
    document.getElementById(id).textContent = value;
  };
  text("updated", fmtTime(stats.time));
  text("workers", String(stats.workers));
  text("connections-open", String(stats.connections.open));
  text("connections-total", String(stats.connections.total));
  text("reloads-success", String(stats.reloads.success));
  text("reloads-failure", String(stats.reloads.failure));
  text("reloads-last", fmtTime(stats.reloads.last_success));
  document.getElementById("reloads-failure").className = stats.reloads.failure ? "bad" : "";
  for (const [signal, id] of [["access_log", "dropped-access-log"], ["spans", "dropped-spans"]]) {
    const dropped = stats.telemetry_dropped[signal];
    text(id, String(dropped));
    document.getElementById(id).className = dropped ? "bad" : "";
  }
  fill("reload-events", stats.reloads.recent, 3, (event) => {
    const tr = document.createElement("tr");
    cell(tr, fmtTime(event.time), "time");
    cell(tr, event.ok ? "applied" : "refused", "result", event.ok ? "" : "bad");
    cell(tr, event.error || "", "error", "reload-error");
    return tr;
  });
}

function status(message, ok) {
  const element = document.getElementById("status");
  element.textContent = message;
  element.className = ok ? "ok" : "bad";
}

async function poll() {
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch("stats", { headers, cache: "no-store" });
    if (response.status === 401) {
      status("unauthorized: open this page with #token=<admin.token> in its URL", false);
    } else if (!response.ok) {
      status(`admin API answered ${response.status}`, false);
    } else {
      const stats = await response.json();
      render(stats, liveNumbers(previous, stats));
      previous = stats;
      polls += 1;
      document.body.dataset.polls = String(polls);
      status("live", true);
    }
  } catch (error) {
    status(`admin API unreachable (${error.message}); retrying`, false);
  }
  setTimeout(poll, interval);
}

poll();
