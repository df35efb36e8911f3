/**
 * Socktopus for Node: everything the browser build has, plus synchronous
 * token and Auth Headers functions on node:crypto.
 */

import { createHmac } from "node:crypto";

import { headersRecipe, tokenRecipe } from "./signing.js";

export * from "./index.js";

function hmacSha256(key, message) {
  return createHmac("sha256", Buffer.from(key, "utf8")).update(message, "utf8").digest();
}

/** As createToken, without the Promise. */
export function createTokenSync(app, secret, connectionId, now) {
  const recipe = tokenRecipe(app, secret, connectionId, now);
  return recipe.finish(hmacSha256(recipe.key, recipe.message));
}

/** As authHeaders, without the Promise. */
export function authHeadersSync(userId, secret, path, now, encoding = "hex") {
  const recipe = headersRecipe(userId, secret, path, now, encoding);
  return recipe.finish(hmacSha256(recipe.key, recipe.message));
}
