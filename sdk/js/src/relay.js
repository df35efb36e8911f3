/**
 * The backend's side of the relay: POST /send, POST /kick and POST
 * /presence over fetch, for Node, serverless and edge functions.
 */

import { fetchJson, fetchOf } from "./http.js";
import { createToken } from "./tokens.js";

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
    this.#fetch = fetchOf(fetch);
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

  #post(path, fields) {
    return fetchJson(this.#fetch, this.baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ secretName: this.app, secret: this.#secret, ...fields }),
    });
  }
}
