// Felix admin dashboard. Plain modern JS, no build step; the only library is
// uPlot (vendored) for the charts. Everything shown comes from Felix's JSON
// API, called with the admin token that the login keeps in this tab's
// sessionStorage. Element ids are listed at the top of admin.html.
"use strict";

const $ = (id) => document.getElementById(id);

// The /test page keeps the admin token under the same name, so one login
// serves both pages of a tab.
const TOKEN_STORAGE = "felix.adminToken";
const PAGE_SIZE = 50;
const OVERVIEW_KEYS = 1000; // keys the overview ranks, newest first

// --- The admin token --------------------------------------------------------

let memoryToken = ""; // used only when sessionStorage is blocked
const session = {
  get() {
    try {
      return sessionStorage.getItem(TOKEN_STORAGE) || "";
    } catch {
      return memoryToken;
    }
  },
  set(token) {
    memoryToken = token;
    try {
      sessionStorage.setItem(TOKEN_STORAGE, token);
    } catch {
      // Kept in memory for this page only.
    }
  },
  clear() {
    memoryToken = "";
    try {
      sessionStorage.removeItem(TOKEN_STORAGE);
    } catch {
      // Nothing stored.
    }
  },
};

// --- Talking to the API -----------------------------------------------------

// SessionEnded is thrown when the token stopped working; the login shows.
class SessionEnded extends Error {}

// api calls Felix with the admin token (see request in felix.js). A 401 on
// a dashboard call ends the session; a login passes token to check it.
async function api(method, path, { body, raw, token } = {}) {
  const checking = token !== undefined;
  try {
    return await request(method, path, { bearer: checking ? token : session.get(), body, raw });
  } catch (err) {
    if (!checking && err.status === 401 && err.code === "admin_required") {
      endSession("Felix no longer accepts the admin token of this tab (it may have been changed on the server): log in again.");
      throw new SessionEnded();
    }
    throw err;
  }
}

// explain turns an error into the sentence an operator reads.
function explain(err) {
  if (!(err instanceof ApiError)) return { status: "Not sent", code: "page_error", message: messageOf(err) };
  let message = err.message;
  if (err.status === 401 && err.code === "admin_required") {
    message = "That is not the admin token: check ADMIN_TOKEN on the server and try again.";
  } else if (err.status === 429 && err.code === "too_many_attempts") {
    message = "Too many wrong admin tokens came from this address, so Felix refuses it for a while, whatever token it sends.";
  }
  let retry = "";
  if (err.retryAfter > 0) {
    const at = new Date(Date.now() + err.retryAfter * 1000);
    retry = "Try again in " + duration(err.retryAfter) + " (at " + clock.format(at) + ").";
  }
  const status = err.status ? "HTTP " + err.status : err.code === "network_error" ? "Network error" : "Not sent";
  return { status, code: err.code, message, retry };
}

function duration(seconds) {
  if (seconds < 90) return seconds + (seconds === 1 ? " second" : " seconds");
  const minutes = Math.ceil(seconds / 60);
  return minutes + " minutes";
}

function showError(box, err) {
  const e = explain(err);
  const head = el("div", "error-head");
  head.append(el("span", "error-status", e.status), el("span", "error-code", e.code));
  box.replaceChildren(head, el("p", "error-message", e.message));
  if (e.retry) box.append(el("p", "error-retry", e.retry));
  box.hidden = false;
}

function hideError(box) {
  box.hidden = true;
  box.replaceChildren();
}

// inputError is a mistake caught before anything is sent.
function inputError(message) {
  return new ApiError(0, "invalid_input", message);
}

// --- Formatting -------------------------------------------------------------

const numbers = new Intl.NumberFormat();
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";

function num(n) {
  const node = el("span", "num", n === null || n === undefined ? "—" : numbers.format(n));
  node.dataset.value = n === null || n === undefined ? "" : String(n);
  return node;
}

function setNumber(id, n) {
  const node = $(id);
  node.textContent = n === null || n === undefined ? "—" : numbers.format(n);
  node.dataset.value = n === null || n === undefined ? "" : String(n);
}

function utc(d) {
  return d.toISOString().replace("T", " ").replace(/(\.\d+)?Z$/, " UTC");
}

// when shows a time in the browser's zone, with UTC on hover.
function when(iso, empty = "—") {
  if (!iso) return el("span", "muted", empty);
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return el("span", "", String(iso));
  const t = el("time", "", dateTime.format(d));
  t.dateTime = iso;
  t.title = utc(d);
  return t;
}

// dayDate is a calendar day (YYYY-MM-DD) as a local Date at midnight.
function dayDate(day) {
  const [y, m, d] = String(day).split("-").map(Number);
  return new Date(y, m - 1, d);
}

function isoDay(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
}

// localInput is an RFC 3339 time as a datetime-local value in this zone.
function localInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return isoDay(d) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
}

function fromLocalInput(value) {
  const d = new Date(value);
  if (!value || Number.isNaN(d.getTime())) return null;
  return d.toISOString();
}

function keyLabel(k) {
  return k.name ? "“" + k.name + "” (" + k.apiKey + ")" : k.apiKey;
}

function statusBadge(status, k) {
  let s = status;
  if (k && s === "active" && k.remainingCalls - (k.reservedCalls || 0) <= 0) s = "exhausted";
  const labels = { active: "active", disabled: "disabled", expired: "expired", exhausted: "no calls left", success: "success", failed: "failed", open: "in flight" };
  const badge = el("span", "status status-" + s, labels[s] || s);
  badge.dataset.value = status;
  return badge;
}

function link(href, text, className) {
  const a = el("a", className, text);
  a.href = href;
  a.dataset.nav = "";
  return a;
}

// fillTable writes rows into table under a header of columns. A column is
// {label, cell(row) → Node|string, num?, narrow?}; narrow columns are hidden
// on small screens. With no rows the table shows the empty sentence.
function fillTable(table, columns, rows, empty) {
  const head = el("thead");
  const hr = el("tr");
  for (const c of columns) {
    const th = el("th", (c.num ? "num" : "") + (c.narrow ? " wide-only" : ""), c.label);
    th.scope = "col";
    hr.append(th);
  }
  head.append(hr);
  const body = el("tbody");
  if (rows.length === 0 && empty) {
    const tr = el("tr", "empty-row");
    const td = el("td", "empty", empty);
    td.colSpan = columns.length;
    tr.append(td);
    body.append(tr);
  }
  for (const row of rows) {
    const tr = el("tr");
    if (row.id !== undefined) tr.dataset.id = String(row.id);
    for (const c of columns) {
      const td = el("td", (c.num ? "num" : "") + (c.narrow ? " wide-only" : ""));
      const v = c.cell(row);
      td.append(v instanceof Node ? v : document.createTextNode(v === null || v === undefined ? "—" : String(v)));
      tr.append(td);
    }
    body.append(tr);
  }
  table.replaceChildren(head, body);
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value, field] of pairs) {
    const dt = el("dt", "", label);
    const dd = el("dd");
    if (field) dd.dataset.field = field;
    dd.append(value instanceof Node ? value : document.createTextNode(value));
    dl.append(dt, dd);
  }
}

// --- Charts (uPlot) -----------------------------------------------------------

const charts = new Map(); // figure id → {plot, days}

// completeDays returns n days ending at end (YYYY-MM-DD), oldest first,
// with the generations of days, zero for days it lacks.
function completeDays(days, n, end) {
  const byDate = new Map(days.map((d) => [d.date, Number(d.generations) || 0]));
  const last = dayDate(end);
  const out = [];
  for (let i = n - 1; i >= 0; i--) {
    const d = new Date(last.getFullYear(), last.getMonth(), last.getDate() - i);
    const date = isoDay(d);
    out.push({ date, generations: byDate.get(date) || 0 });
  }
  return out;
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// drawChart draws days (oldest first) as bars in figure, with a caption
// saying what it shows, and fills table with the same numbers.
function drawChart(figure, table, days) {
  const old = charts.get(figure.id);
  if (old && old.plot) old.plot.destroy();
  const total = days.reduce((s, d) => s + d.generations, 0);
  const peak = days.reduce((p, d) => (d.generations > p.generations ? d : p), days[0] || { generations: 0 });
  figure.dataset.days = String(days.length);
  figure.dataset.total = String(total);
  figure.dataset.last = String(days.length ? days[days.length - 1].generations : 0);
  const holder = el("div", "chart-canvas");
  let caption = numbers.format(total) + (total === 1 ? " generation" : " generations") + " in the last " + days.length + " days";
  if (total > 0) caption += "; the most, " + numbers.format(peak.generations) + ", on " + dayFormat.format(dayDate(peak.date));
  else caption += ". Calls that succeed show up here by day.";
  const cap = el("figcaption", "chart-caption", caption + ".");
  const hover = el("p", "chart-hover");
  hover.setAttribute("aria-hidden", "true"); // the table says the same to a screen reader
  figure.replaceChildren(hover, holder, cap);

  fillTable(table, [
    { label: "Day", cell: (d) => dayFormat.format(dayDate(d.date)) },
    { label: "Generations", num: true, cell: (d) => num(d.generations) },
  ], [...days].reverse().map((d) => ({ ...d, id: d.date })));

  let plot = null;
  if (typeof uPlot === "function") {
    const accent = cssVar("--accent");
    const muted = cssVar("--muted");
    const grid = cssVar("--border");
    const xs = days.map((d) => dayDate(d.date).getTime() / 1000);
    const ys = days.map((d) => d.generations);
    const width = Math.max(200, figure.clientWidth);
    plot = new uPlot({
      width,
      height: width < 500 ? 180 : 220,
      padding: [12, 18, 0, 0],
      cursor: { drag: { x: false, y: false }, points: { show: false } },
      legend: { show: false },
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          hover.textContent = i === null || i === undefined ? "" : dayFormat.format(dayDate(days[i].date)) + ": " +
            numbers.format(days[i].generations) + (days[i].generations === 1 ? " generation" : " generations");
        }],
      },
      scales: {
        // Half a day either side, so that the first and last bars show whole.
        x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] },
        y: { range: (u, min, max) => [0, Math.max(4, Math.ceil(max * 1.1))] },
      },
      series: [
        { value: (u, ts) => (ts === null || ts === undefined ? "—" : dayFormat.format(new Date(ts * 1000))) },
        {
          label: "Generations",
          stroke: accent,
          fill: accent + "cc",
          width: 0,
          points: { show: false },
          paths: uPlot.paths.bars({ size: [0.7, 28], align: 0 }),
          value: (u, v) => (v === null || v === undefined ? "—" : numbers.format(v)),
        },
      ],
      axes: [
        { stroke: muted, grid: { show: false }, ticks: { stroke: grid }, space: 60 },
        {
          stroke: muted,
          grid: { stroke: grid, width: 1 },
          ticks: { show: false },
          incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6, 1e7],
          values: (u, ticks) => ticks.map((v) => numbers.format(v)),
          size: (u, values) => (values ? Math.max(...values.map((v) => v.length)) * 8 + 16 : 40),
        },
      ],
    }, [xs, ys], holder);
  } else {
    holder.append(el("p", "empty", "The chart library did not load; the table below has the numbers."));
  }
  charts.set(figure.id, { plot, days, table });
}

// Charts follow their figure's width and the colour scheme.
const resizer = typeof ResizeObserver === "function" ? new ResizeObserver((entries) => {
  for (const entry of entries) {
    const c = charts.get(entry.target.id);
    const w = Math.floor(entry.contentRect.width);
    if (c && c.plot && w > 0 && Math.abs(c.plot.width - w) > 1) c.plot.setSize({ width: Math.max(200, w), height: w < 500 ? 180 : 220 });
  }
}) : null;
for (const id of ["ov-chart", "key-chart"]) if (resizer) resizer.observe($(id));
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const [id, c] of charts) if (c.plot) drawChart($(id), c.table, c.days);
});

// setupRange wires a 30/90 days toggle: show(days) redraws.
function setupRange(prefix, show) {
  const buttons = [$(prefix + "-range-30"), $(prefix + "-range-90")];
  for (const b of buttons) {
    b.addEventListener("click", () => {
      for (const o of buttons) o.setAttribute("aria-pressed", String(o === b));
      show(Number(b.dataset.days));
    });
  }
  return () => Number(buttons.find((b) => b.getAttribute("aria-pressed") === "true").dataset.days);
}

// --- Busy states --------------------------------------------------------------

// run disables button while task runs, shows its error in errorBox, and
// records the outcome in form.dataset.state (busy, done, error).
async function run(form, button, errorBox, task) {
  const label = button.textContent;
  const busy = button.dataset.busyLabel;
  hideError(errorBox);
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (busy) button.textContent = busy;
  form.dataset.state = "busy";
  try {
    await task();
    form.dataset.state = "done";
  } catch (err) {
    if (err instanceof SessionEnded) return;
    showError(errorBox, err);
    form.dataset.state = "error";
  } finally {
    // The task may have relabelled the button (Disable ↔ Enable).
    if (busy && button.textContent === busy) button.textContent = label;
    button.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

// --- Navigation ---------------------------------------------------------------

const views = ["login", "overview", "keys", "key", "usage", "notfound"];
const titles = { login: "Log in", overview: "Overview", keys: "Keys", key: "Key", usage: "Usage log", notfound: "No such page" };

function currentRoute() {
  const path = location.pathname.replace(/\/+$/, "") || "/admin";
  const params = new URLSearchParams(location.search);
  if (path === "/admin") return { view: "overview", params };
  if (path === "/admin/keys") return { view: "keys", params };
  if (path === "/admin/usage") return { view: "usage", params };
  const m = /^\/admin\/keys\/([1-9][0-9]{0,17})$/.exec(path);
  if (m) return { view: "key", id: m[1], params };
  return { view: "notfound", params };
}

let renderCount = 0;
let flashKeep = false;

function flash(message) {
  const f = $("flash");
  f.textContent = message;
  f.hidden = !message;
  flashKeep = !!message;
}

function navigate(url) {
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
  render({ focus: true });
}

// render shows the view the address names, or the login without a token,
// and loads its data. A later render makes an earlier one's answers moot.
async function render({ focus = false } = {}) {
  const seq = ++renderCount;
  const live = () => seq === renderCount;
  if (flashKeep) flashKeep = false;
  else flash("");
  const route = currentRoute();
  const loggedIn = session.get() !== "";
  const name = loggedIn ? route.view : "login";
  $("nav").hidden = !loggedIn;
  $("logout").hidden = !loggedIn;
  for (const a of $("nav").querySelectorAll("a")) {
    if (a.dataset.view === (route.view === "key" ? "keys" : route.view)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const v of views) $(v + "-view").hidden = v !== name;
  if (name !== "keys") forgetCreatedKey();
  if (name !== "key") $("key-action-status").hidden = true;
  document.title = titles[name] + " · Felix admin";
  const view = $(name + "-view");
  if (focus || name === "login") {
    const target = name === "login" ? $("login-token") : view.querySelector("h1");
    target.focus({ preventScroll: false });
  }
  const load = loaders[name];
  if (!load) {
    view.dataset.state = "ready";
    return;
  }
  view.dataset.state = "loading";
  const errorBox = view.querySelector(":scope > .error");
  if (errorBox) hideError(errorBox);
  try {
    await load(route, live);
    if (!live()) return;
    view.dataset.state = "ready";
    const anchor = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (anchor && view.contains(anchor)) anchor.scrollIntoView();
  } catch (err) {
    if (err instanceof SessionEnded || !live()) return;
    if (errorBox) showError(errorBox, err);
    view.dataset.state = "error";
  }
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => render({ focus: true }));

// --- Login and logout ---------------------------------------------------------

function endSession(message) {
  session.clear();
  for (const c of charts.values()) if (c.plot) c.plot.destroy();
  charts.clear();
  forgetCreatedKey();
  keysState.cursors = [null];
  usageState.cursors = [null];
  flash(message);
  render();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const button = $("login-submit");
  run($("login-form"), button, $("login-error"), async () => {
    const token = $("login-token").value.trim();
    if (!token) throw inputError("Enter the admin token (the server's ADMIN_TOKEN).");
    await api("GET", "/api/stats?days=1", { token });
    session.set(token);
    $("login-token").value = "";
    render({ focus: true });
  });
});

$("logout").addEventListener("click", () => {
  endSession("Logged out: this tab no longer holds the admin token.");
  $("login-token").focus();
});

// --- Overview -----------------------------------------------------------------

const overviewState = { days: [], end: "" };

// allKeys reads up to max keys, newest first.
async function allKeys(max) {
  const keys = [];
  let cursor = null;
  do {
    const page = await api("GET", "/api/keys?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    keys.push(...page.keys);
    cursor = page.nextCursor;
  } while (cursor && keys.length < max);
  return { keys, more: !!cursor };
}

const overviewRange = setupRange("ov", (n) => showOverviewChart(n));

function showOverviewChart(n) {
  drawChart($("ov-chart"), $("ov-chart-table"), completeDays(overviewState.days, n, overviewState.end));
}

async function loadOverview(route, live) {
  const [stats, listed, targets] = await Promise.all([
    api("GET", "/api/stats?days=90"),
    allKeys(OVERVIEW_KEYS),
    api("GET", "/api/targets").catch((err) => err),
  ]);
  if (!live()) return;
  setNumber("ov-total", stats.totalGenerations);
  setNumber("ov-today", stats.dailyGenerations);
  const days = Array.isArray(stats.days) ? stats.days : [];
  // /api/stats leaves out days without generations and counts days in the
  // server's time zone: end the chart at the later of its last day and
  // the browser's today.
  const today = isoDay(new Date());
  const lastListed = days.length ? days[days.length - 1].date : "";
  overviewState.days = days;
  overviewState.end = lastListed > today ? lastListed : today;
  showOverviewChart(overviewRange());

  const keys = listed.keys;
  const active = keys.filter((k) => k.status === "active");
  const exhausted = active.filter((k) => k.remainingCalls - k.reservedCalls <= 0);
  setNumber("ov-keys", active.length);
  setNumber("ov-exhausted", exhausted.length);
  const note = $("ov-keys-note");
  note.hidden = !listed.more;
  note.textContent = listed.more ? "Counted over the newest " + numbers.format(keys.length) + " keys." : "";

  const nameCell = (k) => link("/admin/keys/" + k.id, k.name || k.apiKey);
  const top = keys.filter((k) => k.successfulCalls > 0).sort((a, b) => b.successfulCalls - a.successfulCalls).slice(0, 5);
  fillTable($("ov-top"), [
    { label: "Key", cell: nameCell },
    { label: "Successful", num: true, cell: (k) => num(k.successfulCalls) },
    { label: "Last used", narrow: true, cell: (k) => when(k.lastUsedAt, "never") },
  ], top, keys.length ? "No successful calls yet — generate with a key and it shows here." : "No keys yet — create one under Keys.");
  const low = active.sort((a, b) => (a.remainingCalls - a.reservedCalls) - (b.remainingCalls - b.reservedCalls)).slice(0, 5);
  fillTable($("ov-low"), [
    { label: "Key", cell: nameCell },
    { label: "Calls left", num: true, cell: (k) => num(k.remainingCalls) },
    { label: "", cell: (k) => link("/admin/keys/" + k.id + "#key-actions", "Top up", "quiet") },
  ], low, "No active keys — create one under Keys.");

  showTargets(targets);
}

// showTargets fills the targets card from GET /api/targets; the card stays
// hidden where the server has no such endpoint (404).
function showTargets(answer) {
  const card = $("ov-targets");
  const box = card.querySelector(".error");
  if (answer instanceof SessionEnded) throw answer;
  if (answer instanceof ApiError && answer.status === 404) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  if (answer instanceof Error) {
    showError(box, answer);
    return;
  }
  hideError(box);
  const targets = Array.isArray(answer.targets) ? answer.targets : [];
  const queue = answer.queue || {};
  $("ov-queue").textContent = queue.length !== undefined
    ? numbers.format(queue.length) + (queue.length === 1 ? " call waits" : " calls wait") + (queue.max ? " (at most " + numbers.format(queue.max) + ")" : "")
    : "";
  fillTable($("ov-targets-table"), [
    { label: "Target", cell: (t) => el("code", "", t.url) },
    { label: "State", cell: (t) => el("span", "status status-" + (t.up ? "active" : "disabled"), t.up ? "up" : "down") },
    { label: "In flight", num: true, cell: (t) => t.maxInFlight ? numbers.format(t.inFlight) + " / " + numbers.format(t.maxInFlight) : num(t.inFlight) },
    { label: "Served", num: true, cell: (t) => num(t.served) },
    { label: "Failed", num: true, cell: (t) => num(t.failed) },
    { label: "Last error", narrow: true, cell: (t) => t.lastError || "—" },
  ], targets.map((t, i) => ({ ...t, id: i })), "No targets configured.");
}

// --- Keys -------------------------------------------------------------------------

const keysState = { filter: "", cursors: [null], page: 0 };

function forgetCreatedKey() {
  $("created").hidden = true;
  $("created-key").textContent = "";
  $("created-copy-status").textContent = "";
}

async function loadKeys(route, live) {
  const q = route.params.get("q") || "";
  const status = route.params.get("status") || "";
  $("keys-q").value = q;
  $("keys-status").value = status;
  const filter = q + "\u0000" + status;
  if (keysState.filter !== filter) Object.assign(keysState, { filter, cursors: [null], page: 0 });
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (q) params.set("q", q);
  if (status) params.set("status", status);
  const cursor = keysState.cursors[keysState.page];
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", "/api/keys?" + params);
  if (!live()) return;
  keysState.cursors[keysState.page + 1] = page.nextCursor;
  const keys = page.keys;
  fillTable($("keys-table"), [
    { label: "Name", cell: (k) => link("/admin/keys/" + k.id, k.name || "Unnamed key", k.name ? "" : "muted") },
    { label: "Key", cell: (k) => el("code", "", k.apiKey) },
    { label: "Status", cell: (k) => statusBadge(k.status, k) },
    { label: "Calls left", num: true, cell: (k) => num(k.remainingCalls) },
    { label: "Successful", num: true, narrow: true, cell: (k) => num(k.successfulCalls) },
    { label: "Last used", narrow: true, cell: (k) => when(k.lastUsedAt, "never") },
    { label: "Created", narrow: true, cell: (k) => when(k.createdAt) },
  ], keys);
  $("keys-table").hidden = keys.length === 0;
  const empty = $("keys-empty");
  empty.hidden = keys.length !== 0;
  if (keys.length === 0) {
    const filtered = q || status;
    const button = el("button", "secondary", filtered ? "Clear the filters" : "Create a key");
    button.type = "button";
    button.id = "keys-empty-action";
    button.addEventListener("click", () => (filtered ? navigate("/admin/keys") : openCreate()));
    empty.replaceChildren(el("p", "", filtered ? "No keys match these filters — change or clear them." : "No keys yet — create one."), button);
  }
  const first = keysState.page * PAGE_SIZE;
  $("keys-range").textContent = keys.length ? "Keys " + numbers.format(first + 1) + "–" + numbers.format(first + keys.length) : "";
  $("keys-prev").disabled = keysState.page === 0;
  $("keys-next").disabled = !page.nextCursor;
}

function openCreate() {
  $("keys-create").hidden = false;
  $("keys-new").setAttribute("aria-expanded", "true");
  $("create-remaining").focus();
}

function closeCreate() {
  $("keys-create").hidden = true;
  $("keys-new").setAttribute("aria-expanded", "false");
  hideError($("create-error"));
}

$("keys-new").addEventListener("click", () => ($("keys-create").hidden ? openCreate() : closeCreate()));
$("create-cancel").addEventListener("click", () => {
  closeCreate();
  $("keys-new").focus();
});

$("keys-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams();
  const q = $("keys-q").value.trim();
  if (q) params.set("q", q);
  if ($("keys-status").value) params.set("status", $("keys-status").value);
  const qs = params.toString();
  navigate("/admin/keys" + (qs ? "?" + qs : ""));
});

// setupPager wires the Previous and Next buttons of a list whose state
// keeps the page number and the cursors seen.
function setupPager(prefix, state) {
  $(prefix + "-prev").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    render();
  });
  $(prefix + "-next").addEventListener("click", () => {
    state.page++;
    render();
  });
}
setupPager("keys", keysState);

function readInt(id, label, { min, required = true } = {}) {
  const input = $(id);
  const v = input.value.trim();
  if (v === "") {
    if (required) throw inputError(label + ": enter a whole number.");
    return undefined;
  }
  const n = Number(v);
  if (input.validity.badInput || !Number.isSafeInteger(n)) throw inputError(label + " must be a whole number.");
  if (min !== undefined && n < min) throw inputError(label + " must be at least " + min + ".");
  return n;
}

$("create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("create-form"), $("create-submit"), $("create-error"), async () => {
    const body = { remainingCalls: readInt("create-remaining", "Calls", { min: 0 }) };
    const name = $("create-name").value.trim();
    const note = $("create-note").value.trim();
    if (name) body.name = name;
    if (note) body.note = note;
    if ($("create-expires").value) {
      const at = fromLocalInput($("create-expires").value);
      if (!at) throw inputError("Expires is not a date and time.");
      body.expiresAt = at;
    }
    const k = await api("POST", "/api/keys", { body });
    $("create-form").reset();
    closeCreate();
    $("created-key").textContent = k.apiKey;
    $("created-open").href = "/admin/keys/" + k.id;
    $("created-copy").textContent = "Copy";
    $("created-copy-status").textContent = "";
    $("created").hidden = false;
    $("created-copy").focus();
    await render();
  });
});

$("created-copy").addEventListener("click", async () => {
  const copied = await copyText($("created-key"));
  $("created-copy").textContent = copied ? "Copied" : "Copy";
  $("created-copy-status").textContent = copied
    ? "Copied to the clipboard."
    : "The browser did not let the page copy: the key is selected, press Ctrl+C.";
});

// --- One key ----------------------------------------------------------------------

const keyState = { key: null, daily: [] };
const keyRange = setupRange("key", (n) => showKeyChart(n));

function showKeyChart(n) {
  drawChart($("key-chart"), $("key-chart-table"), keyState.daily.slice(-n));
}

function describeLimits(k) {
  const per = (p) => ({ second: "second", minute: "minute", hour: "hour", day: "day", month: "month" })[p] || p;
  return [
    ["Rate limit", k.rateLimit ? numbers.format(k.rateLimit.requests) + " calls per " + per(k.rateLimit.per) : "not set", "rateLimit"],
    ["Calls at once", k.maxConcurrent !== null && k.maxConcurrent !== undefined ? numbers.format(k.maxConcurrent) : "not set", "maxConcurrent"],
    ["Cost of a call", k.costPerImage ? "one unit per image (its batch size)" : "one unit", "costPerImage"],
    ["Refill", k.refill ? "to " + numbers.format(k.refill.calls) + " calls every " + per(k.refill.every) : "not set", "refill"],
  ];
}

async function loadKey(route, live) {
  const id = route.id;
  let k;
  let daily;
  let events;
  let calls;
  try {
    [k, daily, events, calls] = await Promise.all([
      api("GET", "/api/keys/" + id),
      api("GET", "/api/keys/" + id + "/daily?days=90"),
      api("GET", "/api/keys/" + id + "/events"),
      api("GET", "/api/usage?limit=10&keyId=" + id),
    ]);
  } catch (err) {
    if (err instanceof ApiError && err.code === "key_not_found") {
      throw new ApiError(404, "key_not_found", "There is no key with id " + id + ": it may have been deleted. Find keys under Keys.");
    }
    throw err;
  }
  if (!live()) return;
  if (!keyState.key || keyState.key.id !== k.id) showLimitsForm(false);
  keyState.key = k;
  keyState.daily = daily.days;
  document.title = (k.name || k.apiKey) + " · Felix admin";
  const title = $("key-title");
  title.textContent = k.name || "Unnamed key";
  title.classList.toggle("muted", !k.name);
  $("key-prefix").textContent = k.apiKey;
  $("key-status").replaceWith(Object.assign(statusBadge(k.status, k), { id: "key-status" }));
  setNumber("key-remaining", k.remainingCalls);
  setNumber("key-inflight", k.reservedCalls);
  setNumber("key-successful", k.successfulCalls);
  setNumber("key-total", k.totalCalls);
  setNumber("key-units", k.usedUnits);
  facts($("key-facts"), [
    ["Id", String(k.id), "id"],
    ["Note", k.note || "—", "note"],
    ["Created", when(k.createdAt), "createdAt"],
    ["Last used", when(k.lastUsedAt, "never"), "lastUsedAt"],
    ["Expires", when(k.expiresAt, "never"), "expiresAt"],
    ["Changed", when(k.updatedAt), "updatedAt"],
  ]);
  facts($("key-limits"), describeLimits(k));
  if ($("limits-form").hidden) fillLimitsForm(k);
  showKeyChart(keyRange());

  const toggle = $("toggle-disabled");
  toggle.textContent = k.status === "disabled" ? "Enable key" : "Disable key";
  toggle.dataset.disabled = String(k.status === "disabled");
  $("expiry-at").value = localInput(k.expiresAt);
  $("expiry-at").title = "In " + zone;
  $("edit-name").value = k.name;
  $("edit-note").value = k.note;

  fillTable($("key-events"), [
    { label: "When", cell: (e) => when(e.at) },
    { label: "What", cell: (e) => eventText(e) },
  ], [...events.events].reverse().map((e, i) => ({ ...e, id: i })));
  fillCalls($("key-calls"), calls.calls, "No calls with this key yet.", false);
  $("key-calls-all").href = "/admin/usage?keyId=" + k.id;
}

// fieldNames are the Key's fields as an operator reads them.
const fieldNames = {
  name: "name", note: "note", expiresAt: "expiry", rateLimit: "rate limit", maxConcurrent: "calls at once",
  costPerImage: "cost of a call", refill: "refill", remainingCalls: "calls left", disabled: "status",
};

function eventText(e) {
  const calls = (n) => numbers.format(n) + (Math.abs(n) === 1 ? " call" : " calls");
  const change = e.before !== undefined && e.after !== undefined ? " (" + numbers.format(e.before) + " → " + numbers.format(e.after) + ")" : "";
  switch (e.action) {
    case "created": return "Created with " + calls(e.calls ?? e.after ?? 0);
    case "topup": return (e.calls >= 0 ? "Topped up by " : "Reduced by ") + calls(Math.abs(e.calls)) + change;
    case "set": return "Calls left set" + change;
    case "refilled": return "Refilled" + change;
    case "disabled": return "Disabled";
    case "enabled": return "Enabled";
    case "deleted": return "Deleted";
    case "updated": return "Changed " + (e.detail ? e.detail.split(/,\s*/).map((f) => fieldNames[f] || f).join(", ") : "details");
  }
  return e.action + (e.detail ? ": " + e.detail : "") + change;
}

// fillCalls writes usage rows; withKey adds the key column.
function fillCalls(table, calls, empty, withKey) {
  const columns = [{ label: "Started", cell: (c) => when(c.startedAt) }];
  if (withKey) columns.push({ label: "Key", cell: (c) => link("/admin/keys/" + c.keyId, c.keyPrefix + "…") });
  columns.push(
    { label: "Outcome", cell: (c) => statusBadge(c.outcome) },
    { label: "HTTP", num: true, cell: (c) => (c.status === null ? "—" : String(c.status)) },
    { label: "Time", num: true, cell: (c) => (c.latencyMs === null ? "—" : numbers.format(c.latencyMs) + " ms") },
    { label: "Cost", num: true, narrow: true, cell: (c) => num(c.cost) },
  );
  if (withKey) {
    columns.push(
      { label: "Target", narrow: true, cell: (c) => (c.target ? el("code", "", c.target) : "—") },
      { label: "Request ID", narrow: true, cell: (c) => el("code", "", c.requestId) },
    );
  }
  fillTable(table, columns, calls, empty);
}

// keyAction runs a change to the current key from form (or a button) and
// reloads the key's page with a sentence saying what happened.
function keyAction(form, button, task) {
  return run(form, button, $("key-action-error"), async () => {
    $("key-action-status").hidden = true;
    const k = keyState.key;
    if (!k) throw inputError("The key has not loaded yet.");
    const sentence = await task(k);
    await render();
    $("key-action-status").textContent = sentence;
    $("key-action-status").hidden = false;
  });
}

const patchKey = (k, body) => api("PATCH", "/api/keys/" + k.id, { body });

// Limits: the form shows the key's policies; saving sends only what
// changed (an empty field clears its policy: null).

function fillLimitsForm(k) {
  $("limit-rate").value = k.rateLimit ? String(k.rateLimit.requests) : "";
  $("limit-rate-per").value = k.rateLimit ? k.rateLimit.per : "minute";
  $("limit-concurrent").value = k.maxConcurrent ?? "";
  $("limit-refill").value = k.refill ? String(k.refill.calls) : "";
  $("limit-refill-every").value = k.refill ? k.refill.every : "month";
  $("limit-cost").checked = !!k.costPerImage;
}

function showLimitsForm(show) {
  $("limits-form").hidden = !show;
  $("limits-edit").setAttribute("aria-expanded", String(show));
  if (show) {
    fillLimitsForm(keyState.key);
    $("limit-rate").focus();
  }
}

$("limits-edit").addEventListener("click", () => showLimitsForm($("limits-form").hidden));
$("limits-cancel").addEventListener("click", () => {
  showLimitsForm(false);
  $("limits-edit").focus();
});

$("limits-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keyAction($("limits-form"), $("limits-submit"), async (k) => {
    const rate = readInt("limit-rate", "Rate limit", { min: 1, required: false });
    const concurrent = readInt("limit-concurrent", "Calls at once", { min: 1, required: false });
    const refill = readInt("limit-refill", "Refill", { min: 0, required: false });
    const want = {
      rateLimit: rate === undefined ? null : { requests: rate, per: $("limit-rate-per").value },
      maxConcurrent: concurrent === undefined ? null : concurrent,
      refill: refill === undefined ? null : { calls: refill, every: $("limit-refill-every").value },
      costPerImage: $("limit-cost").checked,
    };
    const body = {};
    for (const [field, value] of Object.entries(want)) {
      if (JSON.stringify(value) !== JSON.stringify(k[field] ?? (field === "costPerImage" ? false : null))) body[field] = value;
    }
    if (Object.keys(body).length === 0) {
      showLimitsForm(false);
      return "The limits are as they were.";
    }
    await patchKey(k, body);
    showLimitsForm(false);
    return "Limits saved: " + Object.keys(body).map((f) => describeLimits(want).find(([, , name]) => name === f)[0].toLowerCase()).join(", ") + ".";
  });
});

$("topup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keyAction($("topup-form"), $("topup-submit"), async (k) => {
    const n = readInt("topup-calls", "Top up calls");
    if (n === 0) throw inputError("Top up calls: enter a number other than 0 (negative removes calls).");
    const after = await api("POST", "/api/keys/" + k.id + "/topup", { body: { calls: n } });
    $("topup-calls").value = "";
    return (n > 0 ? "Added " : "Removed ") + numbers.format(Math.abs(n)) + " calls: " + numbers.format(after.remainingCalls) + " left.";
  });
});

$("set-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keyAction($("set-form"), $("set-submit"), async (k) => {
    const n = readInt("set-calls", "Set calls left", { min: 0 });
    const after = await patchKey(k, { remainingCalls: n });
    $("set-calls").value = "";
    return "Calls left set to " + numbers.format(after.remainingCalls) + ".";
  });
});

$("expiry-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keyAction($("expiry-form"), $("expiry-submit"), async (k) => {
    const at = fromLocalInput($("expiry-at").value);
    if (!at) throw inputError("Expires: pick a date and time, or choose Never expires.");
    const after = await patchKey(k, { expiresAt: at });
    return "The key expires " + dateTime.format(new Date(after.expiresAt)) + ".";
  });
});

$("expiry-clear").addEventListener("click", () => {
  keyAction($("expiry-form"), $("expiry-clear"), async (k) => {
    await patchKey(k, { expiresAt: null });
    return "The key never expires.";
  });
});

$("edit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  keyAction($("edit-form"), $("edit-submit"), async (k) => {
    await patchKey(k, { name: $("edit-name").value.trim(), note: $("edit-note").value.trim() });
    return "Name and note saved.";
  });
});

$("toggle-disabled").addEventListener("click", () => {
  const button = $("toggle-disabled");
  keyAction(button, button, async (k) => {
    const disable = k.status !== "disabled";
    await patchKey(k, { disabled: disable });
    return disable ? "Disabled: calls with this key get 403 key_disabled until you enable it." : "Enabled: the key works again.";
  });
});

$("delete-open").addEventListener("click", () => {
  const k = keyState.key;
  if (!k) return;
  $("delete-title").textContent = "Delete " + (k.name ? "“" + k.name + "”" : k.apiKey) + "?";
  $("delete-text").textContent = "Key " + keyLabel(k) + ", id " + k.id + ", stops working at once: its calls get 401. " +
    "Its usage rows, events and the site totals stay. This cannot be undone.";
  hideError($("delete-error"));
  $("delete-dialog").showModal();
});
$("delete-cancel").addEventListener("click", () => $("delete-dialog").close());
$("delete-confirm").addEventListener("click", () => {
  const k = keyState.key;
  run($("delete-form"), $("delete-confirm"), $("delete-error"), async () => {
    await api("DELETE", "/api/keys/" + k.id);
    $("delete-dialog").close();
    keyState.key = null;
    history.pushState(null, "", "/admin/keys");
    flash("Deleted key " + keyLabel(k) + ".");
    await render({ focus: true });
  });
});

// --- Usage log ----------------------------------------------------------------------

const usageState = { filter: "", cursors: [null], page: 0 };
const usageFilters = ["keyId", "from", "to", "outcome"];
const usageInputs = { keyId: "usage-key", from: "usage-from", to: "usage-to", outcome: "usage-outcome" };

// usageQuery is the filters of the address, as the API takes them.
function usageQuery(params) {
  const q = new URLSearchParams();
  for (const f of usageFilters) if (params.get(f)) q.set(f, params.get(f));
  return q;
}

async function loadUsage(route, live) {
  const filters = usageQuery(route.params);
  for (const f of usageFilters) $(usageInputs[f]).value = filters.get(f) || "";
  const filter = filters.toString();
  if (usageState.filter !== filter) Object.assign(usageState, { filter, cursors: [null], page: 0 });
  const params = new URLSearchParams(filters);
  params.set("limit", String(PAGE_SIZE));
  const cursor = usageState.cursors[usageState.page];
  if (cursor) params.set("cursor", cursor);
  const page = await api("GET", "/api/usage?" + params);
  if (!live()) return;
  usageState.cursors[usageState.page + 1] = page.nextCursor;
  const calls = page.calls;
  fillCalls($("usage-table"), calls, "", true);
  $("usage-table").hidden = calls.length === 0;
  const empty = $("usage-empty");
  empty.hidden = calls.length !== 0;
  if (calls.length === 0) {
    empty.replaceChildren(el("p", "", filter
      ? "No calls match these filters — widen or clear them."
      : "No calls yet — generate with a key (POST /api/generate) and each call shows up here."));
  }
  const first = usageState.page * PAGE_SIZE;
  $("usage-range").textContent = calls.length ? "Calls " + numbers.format(first + 1) + "–" + numbers.format(first + calls.length) : "";
  $("usage-prev").disabled = usageState.page === 0;
  $("usage-next").disabled = !page.nextCursor;
}

function usageFormQuery() {
  const q = new URLSearchParams();
  const keyId = readInt("usage-key", "Key id", { min: 1, required: false });
  if (keyId !== undefined) q.set("keyId", String(keyId));
  for (const f of ["from", "to", "outcome"]) if ($(usageInputs[f]).value) q.set(f, $(usageInputs[f]).value);
  return q;
}

$("usage-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  run($("usage-filter"), $("usage-apply"), $("usage-error"), async () => {
    const q = usageFormQuery().toString();
    navigate("/admin/usage" + (q ? "?" + q : ""));
  });
});
$("usage-clear").addEventListener("click", () => navigate("/admin/usage"));
setupPager("usage", usageState);

// The CSV holds exactly the rows the table's filters select (those of the
// address, as shown), every page of them.
$("usage-csv").addEventListener("click", () => {
  const status = $("usage-csv-status");
  run($("usage-filter"), $("usage-csv"), $("usage-error"), async () => {
    status.textContent = "";
    const q = usageQuery(new URLSearchParams(location.search)).toString();
    const res = await api("GET", "/api/usage.csv" + (q ? "?" + q : ""), { raw: true });
    const blob = await res.blob();
    const disposition = res.headers.get("Content-Disposition") || "";
    const m = /filename="([^"]+)"/.exec(disposition);
    const name = m ? m[1] : "felix-usage.csv";
    const url = URL.createObjectURL(blob);
    const a = el("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    status.textContent = "Downloaded " + name + ".";
  });
});

// --- Start ----------------------------------------------------------------------------

const loaders = { overview: loadOverview, keys: loadKeys, key: loadKey, usage: loadUsage };
render();
