// The public REST API, with the caller's bearer token: the dashboard's only back end.

import { forget, token } from "./auth.js";

export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body.detail || [])
      .map((d) => (d.loc ? `${d.loc}: ${d.msg}` : d.msg))
      .join("; ");
    super(`${body.message || body.error || `HTTP ${status}`}${detail ? ` (${detail})` : ""}`);
    this.status = status;
    this.body = body;
  }
}

let onUnauthenticated = () => {};

/** What to do when the token is refused (401): typically, show the login screen. */
export function whenUnauthenticated(fn) {
  onUnauthenticated = fn;
}

function headers(json) {
  const h = { Authorization: `Bearer ${token() || ""}` };
  if (json) h["content-type"] = "application/json";
  return h;
}

export async function api(path, { method = "GET", body, signal } = {}) {
  const r = await fetch(`/api/v1${path}`, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (r.status === 401) {
    forget();
    onUnauthenticated();
  }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/**
 * Follow a text stream (a step's log with ?follow=true): calls onText with each piece as it
 * arrives, until the server ends the stream or `signal` aborts.
 */
export async function follow(path, onText, signal) {
  const r = await fetch(`/api/v1${path}`, { headers: headers(false), signal });
  if (!r.ok) throw new ApiError(r.status, await r.json().catch(() => ({})));
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    onText(decoder.decode(value, { stream: true }));
  }
  onText(decoder.decode());
}
