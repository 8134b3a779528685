// Felix API test page. Plain modern JS, no dependencies, no build step.
// Element ids are listed at the top of test.html.
"use strict";

const $ = (id) => document.getElementById(id);

const ADMIN_TOKEN_STORAGE = "felix.adminToken";

// call sends a JSON request with token as the bearer (see request in
// felix.js) and returns the decoded JSON answer.
function call(method, path, { token, body } = {}) {
  return request(method, path, { bearer: token, body });
}

// run shows the busy state on button while task runs, and any error in the
// card's .error box.
async function run(button, task) {
  const card = button.closest(".card");
  const errorBox = card.querySelector(".error");
  const label = button.textContent;
  errorBox.hidden = true;
  errorBox.replaceChildren();
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = button.dataset.busyLabel || label;
  card.dataset.state = "busy";
  try {
    await task();
    card.dataset.state = "done";
  } catch (err) {
    showError(errorBox, err);
    card.dataset.state = "error";
  } finally {
    button.textContent = label;
    button.removeAttribute("aria-busy");
    button.disabled = false;
  }
}

function showError(box, err) {
  const e = err instanceof ApiError ? err : new ApiError(0, "page_error", String(err && err.message ? err.message : err));
  const head = el("div", "error-head");
  head.append(
    el("span", "error-status", e.status ? "HTTP " + e.status : e.code === "network_error" ? "Network error" : "Not sent"),
    el("span", "error-code", e.code),
  );
  box.replaceChildren(head, el("p", "error-message", e.message));
  box.hidden = false;
}

// inputError is a mistake caught before sending anything.
function inputError(message) {
  return new ApiError(0, "invalid_input", message);
}

// optionalInt reads a number input: undefined when empty, so the field is
// left out and the server's default or validation applies.
function optionalInt(id, label) {
  const input = $(id);
  if (input.validity && input.validity.badInput) throw inputError(label + " must be a number.");
  const v = input.value.trim();
  return v === "" ? undefined : Number(v);
}

function optionalText(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : v;
}

const adminToken = () => $("admin-token").value.trim();
const apiKey = () => $("key-input").value.trim();

// Statistics tables.

const STAT_FIELDS = [
  ["apiKey", "API key"],
  ["name", "Name"],
  ["remainingCalls", "Remaining calls"],
  ["reservedCalls", "Reserved (in flight)"],
  ["totalCalls", "Total calls"],
  ["successfulCalls", "Successful calls"],
  ["id", "ID"],
  ["createdAt", "Created"],
  ["updatedAt", "Updated"],
];

const numberFormat = new Intl.NumberFormat("en-US");

function humanize(key) {
  const words = key.replace(/([a-z0-9])([A-Z])/g, "$1 $2").replace(/[_-]+/g, " ").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function formatValue(key, value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number") return numberFormat.format(value);
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  if (/At$/.test(key)) {
    const d = new Date(value);
    if (!Number.isNaN(d.getTime())) return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace("Z", " UTC");
  }
  return String(value);
}

// fillStats writes one row per field of stats into table, known fields
// first, then any others the server added.
function fillStats(table, stats, skip = []) {
  const known = STAT_FIELDS.filter(([k]) => k in stats && !skip.includes(k));
  const extra = Object.keys(stats)
    .filter((k) => !STAT_FIELDS.some(([f]) => f === k) && !skip.includes(k))
    .map((k) => [k, humanize(k)]);
  const body = document.createElement("tbody");
  for (const [key, label] of [...known, ...extra]) {
    const value = stats[key];
    const tr = el("tr");
    tr.dataset.field = key;
    const th = el("th", "", label);
    th.scope = "row";
    const td = el("td", "", formatValue(key, value));
    td.dataset.value = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
    if (key === "apiKey") td.classList.add("mono");
    if (key === "remainingCalls") td.classList.add("strong");
    if (/At$/.test(key) && typeof value === "string") td.title = value;
    tr.append(th, td);
    body.append(tr);
  }
  table.replaceChildren(body);
  table.hidden = false;
}

// The tables that show a key's statistics. Each remembers its key
// (data-key), and every table showing a key is rewritten whenever the page
// learns that key's current numbers, so no card shows an older count.
const KEY_TABLES = ["created-table", "stats-table", "set-table"];

function shownKeyTables(key) {
  return KEY_TABLES.map($).filter((t) => key && t.dataset.key === key && !t.hidden && !t.closest("[hidden]"));
}

// showKeyStats writes stats of key into table and into every other table
// showing that key.
function showKeyStats(table, key, stats) {
  table.dataset.key = key;
  for (const t of new Set([table, ...shownKeyTables(key)])) {
    fillStats(t, stats, t.id === "created-table" ? ["apiKey"] : []);
  }
}

// refreshKeyTables reads key's statistics again into the tables showing it,
// after something may have changed them (a generate, even a refused one).
async function refreshKeyTables(key) {
  const tables = shownKeyTables(key);
  if (tables.length === 0) return;
  let stats;
  try {
    stats = expectObject(await call("GET", "/api/apikey?apiKey=" + encodeURIComponent(key)));
  } catch (err) {
    for (const t of tables) {
      const caption = el("caption", "stale", "Not current: reading the key again failed (" + err.message + ")");
      t.prepend(caption);
    }
    return;
  }
  showKeyStats(tables[0], key, stats);
}

function expectObject(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    throw new ApiError(200, "unexpected_response", "The server answered with JSON that is not an object.");
  }
  return data;
}

// Credentials.

function setupCredentials() {
  const token = $("admin-token");
  try {
    token.value = sessionStorage.getItem(ADMIN_TOKEN_STORAGE) || "";
  } catch {
    // Storage may be blocked; the field then simply starts empty.
  }
  token.addEventListener("input", () => {
    try {
      if (token.value) sessionStorage.setItem(ADMIN_TOKEN_STORAGE, token.value);
      else sessionStorage.removeItem(ADMIN_TOKEN_STORAGE);
    } catch {
      // Not stored; the field still works for this page.
    }
  });

  const toggle = $("admin-token-toggle");
  toggle.addEventListener("click", () => {
    const show = token.type === "password";
    token.type = show ? "text" : "password";
    toggle.textContent = show ? "Hide" : "Show";
    toggle.setAttribute("aria-pressed", String(show));
  });
}

// Create key: POST /api/apikey {apiKey?, initialRemainingCalls, name?}.

function setupCreate() {
  const button = $("create-submit");
  $("create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, async () => {
      $("create-result").hidden = true;
      const body = {};
      const custom = optionalText("create-key");
      if (custom !== undefined) body.apiKey = custom;
      body.initialRemainingCalls = optionalInt("create-remaining", "Initial remaining calls");
      const name = optionalText("create-name");
      if (name !== undefined) body.name = name;

      const stats = expectObject(await call("POST", "/api/apikey", { token: adminToken(), body }));
      const key = typeof stats.apiKey === "string" ? stats.apiKey : "";
      $("created-key").textContent = key;
      $("created-key-copy").textContent = "Copy";
      if (key) $("key-input").value = key;
      $("create-result").hidden = false;
      showKeyStats($("created-table"), key, stats);
    });
  });

  const copy = $("created-key-copy");
  copy.addEventListener("click", async () => {
    const copied = await copyText($("created-key"));
    copy.textContent = copied ? "Copied" : "Press Ctrl+C";
  });
}

// Key statistics: GET /api/apikey?apiKey=K.

function setupStats() {
  const button = $("stats-submit");
  $("stats-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, async () => {
      $("stats-table").hidden = true;
      const key = apiKey();
      if (!key) throw inputError("Enter an API key in the Credentials card first.");
      const stats = expectObject(await call("GET", "/api/apikey?apiKey=" + encodeURIComponent(key)));
      $("stats-table").hidden = false;
      showKeyStats($("stats-table"), key, stats);
    });
  });
}

// Set remaining calls: PUT /api/apikey {apiKey, remainingCalls}.

function setupSet() {
  const button = $("set-submit");
  $("set-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, async () => {
      $("set-result").hidden = true;
      const key = apiKey();
      if (!key) throw inputError("Enter an API key in the Credentials card first.");
      const body = { apiKey: key, remainingCalls: optionalInt("set-remaining", "Remaining calls") };
      const stats = expectObject(await call("PUT", "/api/apikey", { token: adminToken(), body }));
      const remaining = "remainingCalls" in stats ? formatValue("remainingCalls", stats.remainingCalls) : "the new value";
      $("set-message").textContent = "Remaining calls set to " + remaining + ".";
      $("set-result").hidden = false;
      showKeyStats($("set-table"), key, stats);
    });
  });
}

// Generate: POST /api/generate with the API key as a Bearer token.

function imageSource(b64) {
  if (typeof b64 !== "string") return null;
  if (b64.startsWith("data:image/")) return b64;
  let type = "image/png";
  if (b64.startsWith("/9j/")) type = "image/jpeg";
  else if (b64.startsWith("UklGR")) type = "image/webp";
  else if (b64.startsWith("R0lGOD")) type = "image/gif";
  return "data:" + type + ";base64," + b64;
}

function formatElapsed(ms) {
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s";
}

function setupGenerate() {
  const button = $("generate-submit");
  $("generate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, async () => {
      const images = $("images");
      const json = $("generate-json");
      const meta = $("generate-meta");
      images.replaceChildren();
      json.hidden = true;
      json.textContent = "";
      meta.textContent = "";

      const body = { prompt: $("prompt").value };
      const fields = [
        ["width", "width", "Width"],
        ["height", "height", "Height"],
        ["steps", "steps", "Steps"],
        ["batch_size", "batch-size", "Batch size"],
      ];
      for (const [name, id, label] of fields) {
        const v = optionalInt(id, label);
        if (v !== undefined) body[name] = v;
      }
      const model = optionalText("model");
      if (model !== undefined) body.model = model;

      const key = apiKey();
      const started = performance.now();
      let data;
      try {
        data = await call("POST", "/api/generate", { token: key, body });
      } catch (err) {
        meta.textContent = "Failed after " + formatElapsed(performance.now() - started);
        await refreshKeyTables(key);
        throw err;
      }
      const elapsed = formatElapsed(performance.now() - started);
      await refreshKeyTables(key);

      const list = data && Array.isArray(data.images) ? data.images.map(imageSource).filter(Boolean) : [];
      if (list.length === 0) {
        meta.textContent = "No images in the answer · " + elapsed;
        json.textContent = JSON.stringify(data, null, 2);
        json.hidden = false;
        return;
      }
      meta.textContent = list.length + (list.length === 1 ? " image" : " images") + " · " + elapsed;
      const nodes = list.map((src, i) => {
        const figure = el("figure");
        const img = el("img");
        img.src = src;
        img.alt = "Generated image " + (i + 1) + " for: " + body.prompt;
        img.decoding = "async";
        const caption = el("figcaption");
        const link = el("a", "", "Download");
        link.href = src;
        link.download = "felix-" + (i + 1) + "." + src.slice(11, src.indexOf(";")).replace("jpeg", "jpg");
        caption.append(el("span", "", "Image " + (i + 1)), link);
        figure.append(img, caption);
        return figure;
      });
      images.replaceChildren(...nodes);
    });
  });
}

// Site statistics: GET /api/stats.

function setupSite() {
  const button = $("site-submit");
  $("site-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, async () => {
      $("site-stats").hidden = true;
      const stats = expectObject(await call("GET", "/api/stats", { token: adminToken() }));
      $("site-total").textContent = formatValue("totalGenerations", stats.totalGenerations);
      $("site-total").dataset.value = String(stats.totalGenerations ?? "");
      $("site-daily").textContent = formatValue("dailyGenerations", stats.dailyGenerations);
      $("site-daily").dataset.value = String(stats.dailyGenerations ?? "");

      const days = Array.isArray(stats.days) ? [...stats.days] : [];
      days.sort((a, b) => String(b.date).localeCompare(String(a.date)));
      const peak = Math.max(1, ...days.map((d) => Number(d.generations) || 0));
      const tbody = $("site-days").tBodies[0];
      if (days.length === 0) {
        const tr = el("tr");
        const td = el("td", "empty", "No generations recorded yet.");
        td.colSpan = 3;
        tr.append(td);
        tbody.replaceChildren(tr);
      } else {
        tbody.replaceChildren(...days.map((d) => {
          const n = Number(d.generations) || 0;
          const tr = el("tr");
          tr.dataset.date = String(d.date);
          const bar = el("div", "bar");
          bar.style.width = ((n / peak) * 100).toFixed(1) + "%"; // CSSOM, allowed by the CSP
          const barCell = el("td", "bar-col");
          barCell.append(bar);
          const count = el("td", "num", numberFormat.format(n));
          count.dataset.value = String(n);
          tr.append(el("td", "", String(d.date)), count, barCell);
          return tr;
        }));
      }
      $("site-stats").hidden = false;
    });
  });
}

setupCredentials();
setupCreate();
setupStats();
setupSet();
setupGenerate();
setupSite();
