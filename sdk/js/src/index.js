/**
 * Socktopus for browsers and any runtime with Web Crypto, fetch and
 * WebSocket (Node 20+, Deno, Bun, edge functions). An ES module with no
 * dependencies: a page can import this file as it is.
 */

export { AccountsClient } from "./accounts.js";
export { connect } from "./connect.js";
export { SocktopusError } from "./http.js";
export { RelayClient } from "./relay.js";
export { authHeaders, createToken } from "./tokens.js";
export { verifyWebhook } from "./webhooks.js";
