// Shared by Felix's pages (/test and /admin): the error type and the one way
// they call Felix's JSON API, and a DOM helper. A plain script with no build
// step, loaded before each page's own script, which uses these globals.
"use strict";

// ApiError is a failed request, shaped like Felix's error JSON.
class ApiError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message);
    this.status = status; // HTTP status, 0 when no answer came
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After, or 0
  }
}

function messageOf(err) {
  return err && err.message ? err.message : String(err);
}

// request sends a request to Felix, with bearer as the Authorization token
// and body as JSON, and returns the decoded JSON answer (null when empty),
// or with raw the Response of a 2xx as it is. A 4xx/5xx, an unreadable
// answer or a network failure throws an ApiError.
async function request(method, path, { bearer, body, raw } = {}) {
  const headers = { Accept: raw ? "text/csv, application/json" : "application/json" };
  if (bearer) headers.Authorization = "Bearer " + bearer;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network_error", "The request did not reach Felix (" + messageOf(err) + "): check that it is running, then try again.");
  }
  if (res.ok && raw) return res;
  let text;
  try {
    text = await res.text();
  } catch (err) {
    throw new ApiError(0, "network_error", "The connection broke while reading the answer (" + messageOf(err) + ").");
  }
  let data;
  try {
    data = text === "" ? null : JSON.parse(text);
  } catch {
    data = undefined;
  }
  if (!res.ok) {
    const retry = Math.max(0, Number.parseInt(res.headers.get("Retry-After") || "0", 10) || 0);
    if (data && typeof data === "object" && typeof data.error === "string") {
      throw new ApiError(res.status, typeof data.code === "string" ? data.code : "unknown_error", data.error, retry);
    }
    const snippet = text.trim().slice(0, 300);
    throw new ApiError(res.status, "unexpected_response",
      snippet ? "The server answered without Felix's error JSON: " + snippet : "The server answered " + res.status + " " + res.statusText + " with an empty body.", retry);
  }
  if (data === undefined) {
    throw new ApiError(res.status, "invalid_json", "The server answered " + res.status + " but the body is not JSON.");
  }
  return data;
}

// el makes an element with a class and text (never markup).
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// copyText copies node's text to the clipboard and reports whether it did.
// Without clipboard access (e.g. not a secure context) it selects the text,
// so that Ctrl+C copies it, and tries the legacy command.
async function copyText(node) {
  try {
    await navigator.clipboard.writeText(node.textContent);
    return true;
  } catch {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    return !!(document.execCommand && document.execCommand("copy"));
  }
}
