/**
 * Checking that a webhook request came from the daemon (SPEC §7.2), with
 * Web Crypto: the same code runs in Node 20+, Deno, Bun, edge functions and
 * browsers. It is async because Web Crypto is; Node also has the
 * synchronous verifyWebhookSync (node.js).
 */

import { webhookRecipe } from "./signing.js";
import { hmacKey, subtleCrypto } from "./tokens.js";

/**
 * Whether `body`, the raw request body (a string, Buffer, Uint8Array or
 * ArrayBuffer), is signed by `header`, its Socktopus-Signature header
 * (`t=<ms>,v1=<hex>`), with the app's `secret`, at a time within 5 minutes
 * of `now` (a Date or Unix time in milliseconds; default the current time).
 * Resolves to false for a missing or malformed header, a wrong signature,
 * or a time too old (a replay) or too far ahead; rejects with a TypeError
 * for a body that is not raw (a parsed object) or an empty secret.
 */
export async function verifyWebhook(body, header, secret, now) {
  const recipe = webhookRecipe(body, header, secret, now);
  if (recipe === null) return false;
  const key = await hmacKey(recipe.key, "verify");
  let matched = false;
  for (const mac of recipe.macs) {
    // verify() compares in constant time; sign() and === would not.
    if (await subtleCrypto().verify("HMAC", key, mac, recipe.message)) matched = true;
  }
  return matched;
}
