/**
 * The backend's side of the relay: POST /send, POST /kick and POST
 * /presence over fetch, for Node, serverless and edge functions.
 */

import { createToken } from "./tokens.js";

/**
 * A request the daemon refused or failed: `status` is the HTTP status and
 * `message` the daemon's own words ("Invalid secret", "Malformed request"...).
 */
export class SocktopusError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "SocktopusError";
    this.status = status;
    this.body = body;
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

function asMessages(messages) {
  if (Array.isArray(messages)) return messages;
  if (messages instanceof Map) {
    return [...messages].map(([recipient, content]) => ({ recipient, content }));
  }
  if (messages && typeof messages === "object") {
    return Object.entries(messages).map(([recipient, content]) => ({ recipient, content }));
  }
  throw new TypeError("messages must be an array of {recipient, content} or a {recipient: content} object");
}

/**
 * Sends to, kicks and asks about the connections of one app.
 *
 *     const relay = new RelayClient({ baseUrl: "https://relay.example.com", app: "myapp", secret });
 *     await relay.send({ "user-42": "hello" });
 */
export class RelayClient {
  // Private, so logging the client never shows the secret.
  #secret;
  #fetch;

  constructor({ baseUrl, app, secret, fetch } = {}) {
    if (typeof baseUrl !== "string" || baseUrl === "") {
      throw new TypeError("baseUrl must be the daemon's URL, e.g. https://relay.example.com");
    }
    if (typeof app !== "string" || app === "") throw new TypeError("app must be the app's name");
    if (typeof secret !== "string" || secret === "") throw new TypeError("secret must be the app's secret");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.app = app;
    this.#secret = secret;
    // Called through globalThis: browsers refuse a fetch detached from window.
    this.#fetch = fetch ?? ((...args) => globalThis.fetch(...args));
  }

  /**
   * A token for one of this app's connections (see createToken).
   */
  token(connectionId, now) {
    return createToken(this.app, this.#secret, connectionId, now);
  }

  /**
   * Deliver messages, in order: an array of `{recipient, content}` or a
   * `{recipient: content}` object. Resolves to `{succeeded, failed}`, each
   * message echoed in the list it landed in.
   */
  send(messages) {
    return this.#post("/send", { messages: asMessages(messages) });
  }

  /**
   * Close connections (each receives CLOSE) and keep them from coming back
   * with a token stamped at or before now. Resolves to `{kicked, notConnected}`.
   */
  kick(connectionIds) {
    const connections = typeof connectionIds === "string" ? [connectionIds] : [...connectionIds];
    return this.#post("/kick", { connections });
  }

  /**
   * Which of these connections are connected now (a single id may be a
   * string): resolves to `{connected, notConnected}`, each in the order
   * asked. Without ids (undefined or null), every connected id of the app:
   * `{count, connected}`. Across the cluster, with --redis.
   */
  presence(connectionIds) {
    if (connectionIds === undefined || connectionIds === null) return this.#post("/presence", {});
    const connections = typeof connectionIds === "string" ? [connectionIds] : [...connectionIds];
    return this.#post("/presence", { connections });
  }

  async #post(path, fields) {
    const response = await this.#fetch(this.baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ secretName: this.app, secret: this.#secret, ...fields }),
    });
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    if (!response.ok) {
      throw new SocktopusError(response.status, describe(body, response), body);
    }
    if (!body || typeof body !== "object") {
      throw new SocktopusError(response.status, "The daemon's answer is not JSON", body);
    }
    return body;
  }
}
