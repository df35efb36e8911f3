/**
 * Relay tokens and Auth Headers with Web Crypto: the same code runs in
 * browsers (on secure pages: https or localhost), Node 20+, Deno, Bun and
 * edge functions. It is async because Web Crypto is.
 */

import { utf8 } from "./encoding.js";
import { headersRecipe, tokenRecipe } from "./signing.js";

/** Web Crypto's SubtleCrypto, or an Error saying why there is none. */
export function subtleCrypto() {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new Error(
      "Web Crypto (crypto.subtle) is not available: browsers only offer it on " +
        "secure pages (https:// or http://localhost)",
    );
  }
  return subtle;
}

/** An HMAC-SHA256 key of `key`'s UTF-8 bytes, for `usage` ("sign" or "verify"). */
export function hmacKey(key, usage) {
  return subtleCrypto().importKey("raw", utf8(key), { name: "HMAC", hash: "SHA-256" }, false, [
    usage,
  ]);
}

async function hmacSha256(key, message) {
  const cryptoKey = await hmacKey(key, "sign");
  return new Uint8Array(await subtleCrypto().sign("HMAC", cryptoKey, utf8(message)));
}

/**
 * A relay token for `connectionId`, stamped `now` (a Date or Unix time in
 * milliseconds; default: the current time). Resolves to the token string.
 */
export async function createToken(app, secret, connectionId, now) {
  const recipe = tokenRecipe(app, secret, connectionId, now);
  return recipe.finish(await hmacSha256(recipe.key, recipe.message));
}

/**
 * The Auth Headers signing one request to `path` (query string included)
 * with a session secret. `now` is a Date or Unix time in milliseconds
 * (Time-Sent is written in seconds). Resolves to a plain headers object.
 */
export async function authHeaders(userId, secret, path, now, encoding = "hex") {
  const recipe = headersRecipe(userId, secret, path, now, encoding);
  return recipe.finish(await hmacSha256(recipe.key, recipe.message));
}
