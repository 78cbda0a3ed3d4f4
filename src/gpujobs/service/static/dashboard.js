// The gpujobs dashboard: plain DOM, no framework, no CDN.  Every text from the API is set as
// textContent, never parsed as HTML.  Requests carry X-Gpujobs-Dashboard, without which the service
// ignores the session cookie (a page on another site cannot add it).
"use strict";

const REFRESH_MS = 5000;
const ACTIVE = new Set(["queued", "pending", "running"]);
let me = null;
let timer = null;
let follower = null; // the AbortController of a followed log

class LoginNeeded extends Error {}

async function call(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    credentials: "same-origin",
    headers: { "X-Gpujobs-Dashboard": "1", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    location.assign("oauth_login");
    throw new LoginNeeded("logging in");
  }
  return response;
}

async function api(path, options) {
  const response = await call(path, options);
  const body = await response.json();
  if (!body.success) throw new Error(body.message);
  return body.data;
}

// el("td", {class: "x"}, "text", child): attributes and children; strings become text nodes.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function seconds(from, to) {
  return Math.max(0, Math.round(((to ? new Date(to) : new Date()) - new Date(from)) / 1000));
}

function duration(total) {
  if (total < 60) return `${total} s`;
  if (total < 3600) return `${Math.floor(total / 60)} min ${total % 60} s`;
  return `${Math.floor(total / 3600)} h ${Math.floor((total % 3600) / 60)} min`;
}

// Hours of GPU (or CPU) time, readable from a few seconds of it to thousands of hours.
function hoursText(hours, unit) {
  if (hours === 0) return `0 ${unit}-h`;
  if (hours < 1 / 60) return `${Math.max(1, Math.round(hours * 3600))} ${unit}-s`;
  if (hours < 1) return `${(hours * 60).toFixed(1)} ${unit}-min`;
  return `${hours.toFixed(hours < 100 ? 2 : 0)} ${unit}-h`;
}

function runtime(job) {
  return job.started_at ? duration(seconds(job.started_at, job.finished_at)) : "—";
}

function where(job) {
  if (!job.node) return "—";
  return job.gpus.length ? `${job.node}: GPU ${job.gpus.join(", ")}` : job.node;
}

function gpusOf(job) {
  return job.gpu_required ? `${job.gpu_count} × ${job.gpu_type}` : "CPU only";
}

function stateCell(job) {
  return el("td", { class: `state state-${job.status}` }, job.status);
}

function cancelButton(job, after) {
  if (!ACTIVE.has(job.status)) return "";
  return el("button", {
    class: "danger",
    "aria-label": `Cancel ${job.name}`,
    onclick: async (event) => {
      event.target.disabled = true;
      try {
        await api(`api/k8s/job/${encodeURIComponent(job.job_id)}/cancel`, { method: "POST" });
      } catch (error) {
        if (!(error instanceof LoginNeeded)) alert(error.message);
      }
      after();
    },
  }, "Cancel");
}

function jobTable(jobs, { showUser = false, showPriority = false, after = () => {} } = {}) {
  if (!jobs.length) return el("p", { class: "note" }, "No jobs.");
  const head = ["Job", ...(showUser ? ["User"] : []), "State", ...(showPriority ? ["Priority"] : []),
    showPriority ? "Why it waits" : "Why / how it ended", "GPUs", "Where", "Runtime", ""];
  return el("div", { class: "table-wrap" }, el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, jobs.map((job) => el("tr", {},
      el("td", {}, el("a", { href: `#/job/${encodeURIComponent(job.job_id)}` }, job.name || job.job_id)),
      showUser ? el("td", {}, job.user) : null,
      stateCell(job),
      showPriority ? el("td", {}, job.priority) : null,
      el("td", { class: "why" }, job.queue_position ? `#${job.queue_position}: ${job.message || ""}`
        : job.message || job.reason || ""),
      el("td", {}, gpusOf(job)),
      el("td", {}, where(job)),
      el("td", {}, runtime(job)),
      el("td", {}, cancelButton(job, after)),
    )))));
}

function bar(parts, total) {
  const node = el("span", { class: "bar", role: "img" });
  for (const [cls, count] of parts) {
    if (!count || !total) continue;
    const piece = el("span", { class: cls });
    piece.style.width = `${(100 * count) / total}%`;
    node.append(piece);
  }
  return node;
}

// Replaces the page's content; keyboard focus stays on the same control across a refresh.
function show(...children) {
  const main = document.getElementById("main");
  const focused = document.activeElement;
  const key = focused && main.contains(focused) && (focused.id || focused.getAttribute("aria-label"));
  main.replaceChildren(...children);
  if (key) {
    const again = [...main.querySelectorAll("[id], [aria-label]")].find(
      (node) => node.id === key || node.getAttribute("aria-label") === key);
    if (again) again.focus();
  }
}

function markNav(route) {
  for (const link of document.querySelectorAll("nav a")) {
    const here = link.getAttribute("href") === `#/${route}`;
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// --- overview: GPUs per type, the queue, my jobs ---------------------------------------------

async function overview() {
  const [status, mine, queued, health] = await Promise.all([
    api("api/k8s/gpu-status?nodes=false"),
    api("api/k8s/jobs?limit=50"),
    api("api/k8s/jobs?status=queued&limit=500"),
    api("healthz"),
  ]);
  const age = seconds(status.synced_at || status.last_updated);
  const types = status.gpu_types.map((t) => {
    const scale = Math.max(t.total, t.used + t.available + t.queued_demand);
    const label = bar([["used", t.used], ["free", t.available], ["wanted", t.queued_demand]], scale);
    label.setAttribute("aria-label", `${t.gpu_type}: ${t.used} used, ${t.available} free, ` +
      `${t.queued_demand} wanted by waiting jobs`);
    return el("div", { class: "type-row" },
      el("span", { class: "type-name" }, t.gpu_type), label,
      el("span", { class: "type-text" },
        `${t.used} used, ${t.available} free of ${t.total}` +
        (t.queued_demand ? `; ${t.queued_demand} wanted by waiting jobs` : "")));
  });
  const myQueued = queued.jobs.sort((a, b) => (a.queue_position || 1e9) - (b.queue_position || 1e9));
  const waiting = health.queued ?? 0;
  show(
    el("h1", {}, "GPUs"),
    el("p", { class: "note" },
      `${status.available_gpus} of ${status.total_gpus} GPUs free (${status.source}); updated ${duration(age)} ago`,
      status.stale ? el("span", { class: "error" }, " — out of touch with the cluster: figures may be old") : ""),
    el("p", { class: "legend note" }, el("span", { class: "l-used" }, "used"),
      el("span", { class: "l-free" }, "free"), el("span", { class: "l-wanted" }, "wanted by waiting jobs")),
    status.gpu_types.length ? el("div", { class: "types" }, types) : el("p", {}, "No GPUs here."),
    el("h2", {}, "Queue"),
    el("p", {}, `${waiting} job(s) waiting: ${myQueued.length} yours, ${Math.max(0, waiting - myQueued.length)} ` +
      "of other users."),
    myQueued.length ? el("section", { id: "queue", "aria-label": "My waiting jobs" },
      jobTable(myQueued, { showPriority: true, after: route })) : "",
    el("h2", {}, "My jobs"),
    jobTable(mine.jobs, { after: route }),
  );
}

// --- nodes: paged and filtered on the service ------------------------------------------------

const nodeView = { cursors: [null], type: "", free: "0", state: "" };

async function nodes() {
  const params = new URLSearchParams({ limit: "50" });
  const cursor = nodeView.cursors[nodeView.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  if (nodeView.type) params.set("gpu_type", nodeView.type);
  if (nodeView.free !== "0") params.set("free", nodeView.free);
  if (nodeView.state) params.set("state", nodeView.state);
  const status = await api(`api/k8s/gpu-status?${params}`);
  const typeSelect = el("select", { id: "f-type", onchange: (e) => refilter("type", e.target.value) },
    el("option", { value: "" }, "any"),
    status.gpu_types.map((t) => el("option", { value: t.gpu_type, selected: t.gpu_type === nodeView.type },
      t.gpu_type)));
  const freeInput = el("input", { id: "f-free", type: "number", min: "0", max: "1024", value: nodeView.free,
    onchange: (e) => refilter("free", String(Math.max(0, parseInt(e.target.value, 10) || 0))) });
  const stateSelect = el("select", { id: "f-state", onchange: (e) => refilter("state", e.target.value) },
    ["", "ready", "cordoned", "not-ready"].map((s) => el("option", { value: s, selected: s === nodeView.state },
      s || "any")));
  const rows = status.gpu_nodes.map((n) => el("tr", {},
    el("td", {}, n.name), el("td", {}, n.gpu_type || "—"),
    el("td", {}, `${n.available} / ${n.total}`), el("td", {}, `${n.used}`),
    el("td", {}, !n.ready ? "not ready" : n.schedulable ? "ready" : "cordoned"),
    el("td", {}, n.taints.join(", "))));
  show(
    el("h1", {}, "Nodes"),
    el("div", { class: "filters" },
      el("label", { for: "f-type" }, "GPU type", typeSelect),
      el("label", { for: "f-free" }, "At least free", freeInput),
      el("label", { for: "f-state" }, "State", stateSelect)),
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, ["Node", "GPU type", "Free / total", "Used", "State", "Taints"]
        .map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows))),
    rows.length ? "" : el("p", { class: "note" }, "No node matches."),
    el("div", { class: "pager" },
      el("button", { disabled: nodeView.cursors.length === 1, onclick: () => { nodeView.cursors.pop(); route(); } },
        "Previous"),
      el("span", { class: "note" }, `page ${nodeView.cursors.length}`),
      el("button", { disabled: !status.next_cursor,
        onclick: () => { nodeView.cursors.push(status.next_cursor); route(); } }, "Next")),
  );
}

function refilter(key, value) {
  nodeView[key] = value;
  nodeView.cursors = [null];
  route();
}

// --- one job: its fields, what happened, its log live ---------------------------------------

async function jobPage(jobId) {
  const job = await api(`api/k8s/job/${encodeURIComponent(jobId)}/status`);
  const events = [
    ["submitted", job.created_at], ["given its GPUs", job.admitted_at], ["started", job.started_at],
    [job.status, job.finished_at],
  ].filter(([, at]) => at);
  const fields = [
    ["Job", job.job_id], ["User", job.user], ["State", job.status], ["Reason", job.reason],
    ["Message", job.message], ["Queue position", job.queue_position], ["GPUs", gpusOf(job)],
    ["Where", where(job)], ["Priority", job.priority], ["CPU", job.cpu_limit], ["Memory", job.memory_limit],
    ["Timeout", job.timeout_seconds ? duration(job.timeout_seconds) : null], ["Script", job.script_path],
    ["Image", job.image], ["Attempts", `${job.attempts} (retries allowed: ${job.retries})`],
    ["Exit code", job.exit_code], ["Runtime", runtime(job)],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  const log = el("pre", { class: "log", id: "log", "aria-live": "polite", tabindex: "0" });
  show(
    el("p", {}, el("a", { href: "#/" }, "← Overview")),
    el("h1", {}, job.name || job.job_id),
    el("p", {}, cancelButton(job, route)),
    el("dl", { class: "fields" }, fields.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))])),
    el("h2", {}, "Events"),
    el("ol", { class: "events" }, events.map(([what, at]) => el("li", {},
      `${new Date(at).toLocaleString()}: ${what}`))),
    el("h2", {}, ACTIVE.has(job.status) ? "Log (following)" : "Log"),
    log,
  );
  followLog(job.job_id, log);
}

async function followLog(jobId, log) {
  if (follower) follower.abort();
  follower = new AbortController();
  const signal = follower.signal;
  try {
    const response = await call(`api/k8s/job/${encodeURIComponent(jobId)}/logs?follow=true`, { signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(document.createTextNode(decoder.decode(value, { stream: true })));
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
    if (!log.textContent) log.textContent = "(no output)";
    log.dataset.ended = "true";
  } catch (error) {
    if (error.name !== "AbortError" && !(error instanceof LoginNeeded)) {
      log.append(document.createTextNode(`\n[the log stopped: ${error.message}]`));
    }
  }
}

// --- admin: all jobs, usage over time -------------------------------------------------------

const adminView = { user: "", status: "", groupBy: "user", days: 7 };

async function admin() {
  if (!me.admin) {
    show(el("h1", {}, "Admin"), el("p", {}, "This page is for gpujobs admins."));
    return;
  }
  const params = new URLSearchParams({ limit: "100", user: adminView.user || "*" });
  if (adminView.status) params.set("status", adminView.status);
  const day = 86400 * 1000;
  const today = new Date(new Date().toISOString().slice(0, 10) + "T00:00:00Z");
  const days = [...Array(adminView.days).keys()].map((i) => new Date(today.getTime() - (adminView.days - 1 - i) * day));
  const [listing, ...perDay] = await Promise.all([
    api(`api/k8s/jobs?${params}`),
    ...days.map((start) => api(`api/k8s/usage?${new URLSearchParams({
      group_by: adminView.groupBy, from: start.toISOString(), to: new Date(start.getTime() + day).toISOString() })}`)),
  ]);
  const keys = [...new Set(perDay.flatMap((report) => report.rows.map((row) => row.key)))].sort();
  const peak = Math.max(0, ...perDay.map((report) => report.rows.reduce((sum, row) => sum + row.gpu_hours, 0)));
  const totals = new Map();
  for (const report of perDay) {
    for (const row of report.rows) {
      const sum = totals.get(row.key) || { jobs: 0, gpu_hours: 0, cpu_seconds: 0, cost: 0 };
      for (const field of ["jobs", "gpu_hours", "cpu_seconds", "cost"]) sum[field] += row[field];
      totals.set(row.key, sum);
    }
  }
  const chart = perDay.map((report, i) => {
    const byKey = new Map(report.rows.map((row) => [row.key, row.gpu_hours]));
    const hours = report.rows.reduce((sum, row) => sum + row.gpu_hours, 0);
    const line = bar(keys.map((key) => ["", byKey.get(key) || 0]), peak);
    line.setAttribute("aria-label", `${days[i].toISOString().slice(0, 10)}: ${hoursText(hours, "GPU")}`);
    return el("div", { class: "chart-row" }, el("span", {}, days[i].toISOString().slice(5, 10)), line,
      el("span", { class: "total" }, hoursText(hours, "GPU")));
  });
  const userInput = el("input", { id: "a-user", value: adminView.user, placeholder: "everyone",
    onchange: (e) => { adminView.user = e.target.value.trim(); route(); } });
  const statusSelect = el("select", { id: "a-status", onchange: (e) => { adminView.status = e.target.value; route(); } },
    ["", "queued", "pending", "running", "completed", "failed", "cancelled"].map((s) =>
      el("option", { value: s, selected: s === adminView.status }, s || "any")));
  const groupSelect = el("select", { id: "a-group", onchange: (e) => { adminView.groupBy = e.target.value; route(); } },
    [["user", "user"], ["group", "group"], ["gpu_type", "GPU type"]].map(([v, label]) =>
      el("option", { value: v, selected: v === adminView.groupBy }, label)));
  show(
    el("h1", {}, "Admin"),
    el("h2", {}, `Usage per day, last ${adminView.days} days (GPU-hours of jobs that ended)`),
    el("div", { class: "filters" }, el("label", { for: "a-group" }, "By", groupSelect),
      el("button", { id: "csv", onclick: downloadCsv }, "Download CSV (30 days)")),
    el("div", { class: "keys" }, keys.map((key) => el("span", {}, key))),
    el("div", { class: "chart", id: "usage-chart" }, chart),
    el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, [adminView.groupBy, "Jobs", "GPU time", "CPU time", "Cost"]
        .map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, [...totals].map(([key, sum]) => el("tr", {},
        el("td", {}, key), el("td", {}, sum.jobs), el("td", {}, hoursText(sum.gpu_hours, "GPU")),
        el("td", {}, hoursText(sum.cpu_seconds / 3600, "CPU")), el("td", {}, sum.cost.toFixed(2))))))),
    el("h2", {}, "All jobs"),
    el("div", { class: "filters" }, el("label", { for: "a-user" }, "User", userInput),
      el("label", { for: "a-status" }, "State", statusSelect)),
    jobTable(listing.jobs, { showUser: true, after: route }),
    listing.next_cursor ? el("p", { class: "note" }, "Newest 100 shown.") : "",
  );
}

async function downloadCsv() {
  const response = await call(`api/k8s/usage?${new URLSearchParams({ group_by: adminView.groupBy, format: "csv" })}`);
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `gpujobs-usage-${adminView.groupBy}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
}

// --- routing --------------------------------------------------------------------------------

async function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, arg] = hash.split("/");
  markNav(page === "job" ? "" : page);
  clearTimeout(timer);
  if (page !== "job" && follower) follower.abort();
  try {
    if (page === "nodes") await nodes();
    else if (page === "admin") await admin();
    else if (page === "job" && arg) await jobPage(decodeURIComponent(arg));
    else await overview();
  } catch (error) {
    if (error instanceof LoginNeeded) return;
    show(el("p", { class: "error", role: "alert" }, `Could not load this page: ${error.message}`));
  }
  // The overview refreshes by itself; the other pages when asked (a filter, a page, a cancel), so
  // that nothing moves under someone reading or typing.
  if (!page) timer = setTimeout(route, REFRESH_MS);
}

async function start() {
  try {
    me = await api("api/k8s/whoami");
  } catch (error) {
    if (!(error instanceof LoginNeeded)) show(el("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  document.getElementById("who").textContent = me.admin ? `${me.name} (admin)` : me.name;
  document.getElementById("nav-admin").hidden = !me.admin;
  window.addEventListener("hashchange", () => {
    route();
    document.getElementById("main").focus();
  });
  route();
}

start();
