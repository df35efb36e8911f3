/**
 * The accounts API over fetch (SPEC §4 and §8): log in, reset a password
 * by mail, read the audit log, and get relay tokens for a signed-in user,
 * for Node, serverless and edge functions, and pages served from the
 * daemon's own origin (it sends no CORS headers).
 */

import { fetchJson, fetchOf } from "./http.js";
import { authHeaders } from "./tokens.js";

function requireSession(session) {
  if (
    !session ||
    typeof session.secret !== "string" ||
    !/^[0-9]{1,19}$/.test(String(session.userId))
  ) {
    throw new TypeError("session must be {userId, secret}, as login() resolves to");
  }
}

function requireString(value, name) {
  if (typeof value !== "string" || value === "") throw new TypeError(`${name} must be a non-empty string`);
}

function asUserId(userId) {
  // A number, or the digits of a reset link's /users/<id>/reset.
  const id = typeof userId === "string" && /^[0-9]{1,16}$/.test(userId) ? Number(userId) : userId;
  if (!Number.isSafeInteger(id) || id < 1) {
    throw new TypeError("userId must be a user's id, a positive integer");
  }
  return id;
}

/**
 * Users of the daemon's accounts service.
 *
 *     const accounts = new AccountsClient({ baseUrl: "https://relay.example.com" });
 *     const session = await accounts.login("alice", password);
 *     const { token } = await accounts.relayToken(session, "myapp");
 */
export class AccountsClient {
  #fetch;
  // The last Time-Sent (seconds) per user and path, see #timeSent.
  #lastSent = new Map();

  constructor({ baseUrl, fetch } = {}) {
    if (typeof baseUrl !== "string" || baseUrl === "") {
      throw new TypeError("baseUrl must be the daemon's URL, e.g. https://relay.example.com");
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#fetch = fetchOf(fetch);
  }

  /**
   * Log in. Resolves to a session, `{userId, secret, expiration}` (a Date:
   * when the secret expires unless used); the live one, extended, if the
   * user is logged in already. Rejects with a SocktopusError: 401 for a
   * wrong user or password, 429 with `retryAfter` (seconds) after too many
   * of them from this IP, even for the right password.
   */
  async login(user, password, { stayLoggedIn = false } = {}) {
    const answer = await this.#post("/login", {
      User: user,
      Password: password,
      StayLoggedIn: Boolean(stayLoggedIn),
    });
    return { userId: answer.UserID, secret: answer.Secret, expiration: new Date(answer.Expiration) };
  }

  /**
   * Ask for a password reset link for the user named `user`, or for every
   * user of `email`: give exactly one. The daemon mails the link (a page
   * that asks for the new password) and answers the same whether or not
   * there is such a user, so this resolves to undefined either way; a 503
   * SocktopusError when the daemon has no mail configured.
   */
  async resetPassword({ user, email } = {}) {
    if ((user === undefined) === (email === undefined)) {
      throw new TypeError("give exactly one of {user} or {email}");
    }
    await this.#post("/resetPassword", user !== undefined ? { User: user } : { Email: email });
  }

  /**
   * Set a new password with the code of a mailed reset link (its
   * `/users/<userId>/reset?code=<code>`); every session of the user ends.
   * A 400 SocktopusError for a wrong, used or expired code, or a refused
   * password.
   */
  async confirmReset(userId, code, newPassword) {
    await this.#post("/resetPassword/confirm", {
      UserID: asUserId(userId),
      Code: code,
      NewPassword: newPassword,
    });
  }

  /**
   * The session's user's audit log, newest first: an array of
   * `{type, time, ip}` (`time` a Date), the daemon's default of 50 unless
   * `limit` says how many (1 to 500; a 400 SocktopusError otherwise).
   */
  async events(session, { limit } = {}) {
    requireSession(session);
    let path = `/users/${session.userId}/events`;
    if (limit !== undefined) {
      if (!Number.isSafeInteger(limit)) throw new TypeError("limit must be an integer");
      path += `?limit=${limit}`;
    }
    const answer = await this.#signed(session, "GET", path);
    return answer.Events.map((event) => ({ type: event.Type, time: new Date(event.Time), ip: event.IP }));
  }

  /**
   * A relay token of `app` for the session's user, who connects as
   * `user:<userId>`: resolves to `{token, connectionId}`. A token lives
   * seconds, so ask for one per connection:
   *
   *     connect(relayUrl, async () => (await accounts.relayToken(session, "myapp")).token, handlers);
   *
   * A 404 SocktopusError for an unknown app or one that does not set
   * <APP>_SOCKTOPUS_USER_TOKENS=1.
   */
  async relayToken(session, app) {
    requireSession(session);
    requireString(app, "app");
    const answer = await this.#signed(session, "POST", "/relayToken", { App: app });
    return { token: answer.Token, connectionId: answer.ConnectionID };
  }

  #post(path, fields) {
    return fetchJson(this.#fetch, this.baseUrl + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(fields),
    });
  }

  async #signed(session, method, path, fields) {
    // The path signed is the one the daemon sees: below baseUrl, which may
    // be a proxy's prefix.
    const stamp = this.#timeSent(session.userId, path);
    const headers = await authHeaders(session.userId, session.secret, path, stamp * 1000);
    const init = { method, headers: { ...headers, Accept: "application/json" } };
    if (fields !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(fields);
    }
    return fetchJson(this.#fetch, this.baseUrl + path, init);
  }

  /**
   * Now, in seconds, unless this client already signed the same request
   * this second: the daemon accepts a set of Auth Headers once, so a repeat
   * (the audit log asked twice) is stamped a second later. The daemon
   * allows 10 s either way, so bursts of up to about ten a second work.
   */
  #timeSent(userId, path) {
    const now = Math.floor(Date.now() / 1000);
    for (const [key, stamp] of this.#lastSent) {
      if (stamp < now) this.#lastSent.delete(key);
    }
    const key = `${userId} ${path}`;
    const stamp = Math.max(now, (this.#lastSent.get(key) ?? now - 1) + 1);
    this.#lastSent.set(key, stamp);
    return stamp;
  }
}
