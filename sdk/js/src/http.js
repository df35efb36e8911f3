/**
 * JSON over fetch, and the one error every client of the daemon rejects
 * with: shared by the relay's backend API and the accounts API.
 */

/**
 * A request the daemon refused or failed: `status` is the HTTP status and
 * `message` the daemon's own words ("Invalid secret", "Too many
 * attempts"...). `retryAfter` is the seconds its Retry-After header asked
 * to wait (a 429 of login throttling has it), else undefined.
 */
export class SocktopusError extends Error {
  constructor(status, message, body, retryAfter) {
    super(message);
    this.name = "SocktopusError";
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

function describe(body, response) {
  if (body && typeof body === "object") {
    // Relay errors are {"code","message"}; accounts errors are {"Error"}.
    if (typeof body.message === "string") return body.message;
    if (typeof body.Error === "string") return body.Error;
  }
  return response.statusText || `HTTP ${response.status}`;
}

/**
 * The seconds a Retry-After header says: the daemon writes seconds; an
 * HTTP date (RFC 9110, which a proxy may send) is counted from now.
 */
export function retryAfterSeconds(value) {
  if (typeof value !== "string") return undefined;
  const text = value.trim();
  if (/^[0-9]+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

/**
 * Fetch `url` and resolve to its JSON answer, or reject with a
 * SocktopusError for an error status or an answer that is not JSON.
 */
export async function fetchJson(fetch, url, init) {
  const response = await fetch(url, init);
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  if (!response.ok) {
    const retryAfter = retryAfterSeconds(response.headers?.get("retry-after") ?? undefined);
    throw new SocktopusError(response.status, describe(body, response), body, retryAfter);
  }
  if (!body || typeof body !== "object") {
    throw new SocktopusError(response.status, "The daemon's answer is not JSON", body);
  }
  return body;
}

/** fetch as the caller gave it, else the global one. */
export function fetchOf(fetch) {
  // Called through globalThis: browsers refuse a fetch detached from window.
  return fetch ?? ((...args) => globalThis.fetch(...args));
}
