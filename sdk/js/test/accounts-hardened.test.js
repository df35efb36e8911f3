/**
 * AccountsClient against the real daemon (SPEC §8): a password reset
 * through this test's own SMTP server, the audit log, relay tokens a
 * signed-in user connects with, and login throttling's 429 with its
 * retryAfter.
 */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AccountsClient, connect, RelayClient, SocktopusError } from "socktopus";

import { Channel } from "../test-support/channel.js";
import { APP, SECRET, startDaemon } from "../test-support/daemon.js";
import { startMailServer } from "../test-support/smtp.js";

const PASSWORD = "correct horse battery";
const NEW_PASSWORD = "a brand new password";
const PUBLIC_URL = "https://accounts.example.com";
const OTHER_APP = "other";
const RESET_LINK = /https:\/\/accounts\.example\.com\/users\/(\d+)\/reset\?code=([0-9a-f]{64})(?![0-9a-f])/;
const REGISTRATION_LINK = /\/users\/\d+\/register\?code=[0-9a-f]{64}/;

let mail;
let daemon;
let accounts;
before(async () => {
  mail = await startMailServer();
  daemon = await startDaemon({
    args: ["--smtp", mail.url, "--mail-from", "accounts@example.com", "--public-url", PUBLIC_URL],
    env: {
      [`${APP.toUpperCase()}_SOCKTOPUS_USER_TOKENS`]: "1",
      [`${OTHER_APP.toUpperCase()}_SOCKTOPUS_SECRET`]: "other-secret-9876543210",
    },
  });
  accounts = new AccountsClient({ baseUrl: `${daemon.url}/` });
});
after(async () => {
  assert.equal(await daemon?.stop(), 0);
  await mail?.close();
});

/** The next mail, which must be to `name` and about `subject`. */
async function nextMail(name, subject) {
  const received = await mail.next();
  assert.deepEqual(received.to, [`${name}@example.com`]);
  assert.equal(received.header("Subject"), subject);
  return received;
}

/** A user registered as a person would: POST /users, then the mailed link. Resolves to its id. */
async function register(name) {
  const created = await fetch(`${daemon.url}/users`, {
    method: "POST",
    body: JSON.stringify({ User: name, Password: PASSWORD, Email: `${name}@example.com` }),
  });
  assert.equal(created.status, 200, await created.clone().text());
  const { UserID } = await created.json();
  const link = REGISTRATION_LINK.exec((await nextMail(name, "Confirm your registration")).text);
  const followed = await fetch(daemon.url + link[0], { redirect: "manual" });
  assert.equal(followed.status, 302);
  return UserID;
}

/** The user id and code of the next mail, a reset link to `name`. */
async function resetLink(name) {
  const [, userId, code] = RESET_LINK.exec((await nextMail(name, "Reset your password")).text);
  return { userId, code };
}

describe("AccountsClient: password reset", { timeout: 20_000 }, () => {
  test("resetPassword({user}) mails a code that confirmReset takes, once; sessions end", async () => {
    const userId = await register("alice");
    const session = await accounts.login("alice", PASSWORD);
    assert.equal(await accounts.resetPassword({ user: "alice" }), undefined);
    const link = await resetLink("alice");
    assert.equal(Number(link.userId), userId);
    assert.equal(await accounts.confirmReset(userId, link.code, NEW_PASSWORD), undefined);

    await assert.rejects(accounts.events(session), { name: "SocktopusError", status: 401 });
    await assert.rejects(accounts.login("alice", PASSWORD), { status: 401 });
    assert.equal((await accounts.login("alice", NEW_PASSWORD)).userId, userId);
    await assert.rejects(accounts.confirmReset(userId, link.code, "yet another password"), {
      status: 400,
      message: "Invalid or expired code",
    });
  });

  test("resetPassword({email}), in any case; confirmReset takes the link's id as it is written", async () => {
    await register("bob");
    await accounts.resetPassword({ email: "BOB@example.com" });
    const { userId, code } = await resetLink("bob");
    await accounts.confirmReset(userId, code, NEW_PASSWORD);
    await accounts.login("bob", NEW_PASSWORD);
  });

  test("users nobody has get the same answer, and nobody is mailed", async () => {
    await register("carol");
    assert.equal(await accounts.resetPassword({ user: "nobody" }), undefined);
    assert.equal(await accounts.resetPassword({ email: "nobody@example.com" }), undefined);
    const before = mail.messages.length;
    await accounts.resetPassword({ user: "carol" });
    await resetLink("carol");
    assert.deepEqual(
      mail.messages.slice(before).map((received) => received.to),
      [["carol@example.com"]],
    );
  });

  test("a made-up code is a 400 with the daemon's reason", async () => {
    const userId = await register("dora");
    await assert.rejects(accounts.confirmReset(userId, "ab".repeat(32), NEW_PASSWORD), {
      status: 400,
      message: "Invalid or expired code",
    });
  });

  test("neither or both of user and email, or a bad id, reject at once, with no request", async () => {
    const requests = [];
    const offline = new AccountsClient({
      baseUrl: "http://127.0.0.1:1",
      fetch: async (...args) => requests.push(args),
    });
    await assert.rejects(offline.resetPassword({}), TypeError);
    await assert.rejects(offline.resetPassword(), TypeError);
    await assert.rejects(offline.resetPassword({ user: "a", email: "a@example.com" }), TypeError);
    await assert.rejects(offline.confirmReset("1x", "ab".repeat(32), NEW_PASSWORD), TypeError);
    await assert.rejects(offline.confirmReset(0, "ab".repeat(32), NEW_PASSWORD), TypeError);
    await assert.rejects(offline.events({ userId: 1 }), TypeError);
    await assert.rejects(offline.relayToken({ userId: 1, secret: "x" }, ""), TypeError);
    assert.deepEqual(requests, []);
  });
});

describe("AccountsClient: the audit log", { timeout: 20_000 }, () => {
  test("events() is the log, newest first, with Dates and the client's IP", async () => {
    const started = Date.now() - 1000;
    await register("erin");
    const session = await accounts.login("erin", PASSWORD);
    const events = await accounts.events(session);
    assert.deepEqual(
      events.map((event) => event.type),
      ["login", "registered", "register"],
    );
    for (const event of events) {
      assert.deepEqual(Object.keys(event).sort(), ["ip", "time", "type"]);
      assert.equal(event.ip, "127.0.0.1");
      assert.ok(event.time instanceof Date);
      assert.ok(started <= event.time.getTime() && event.time.getTime() <= Date.now(), event.time);
    }
  });

  test("{limit} is passed on, asking twice a second is no replay, out of range is a 400", async () => {
    await register("fred");
    const session = await accounts.login("fred", PASSWORD);
    assert.deepEqual(
      (await accounts.events(session, { limit: 1 })).map((event) => event.type),
      ["login"],
    );
    assert.equal((await accounts.events(session, { limit: 2 })).length, 2);
    assert.equal((await accounts.events(session, { limit: 2 })).length, 2);
    for (const limit of [0, 501]) {
      await assert.rejects(accounts.events(session, { limit }), { status: 400 });
    }
    await assert.rejects(accounts.events(session, { limit: "3" }), TypeError);
  });
});

describe("AccountsClient: login throttling", { timeout: 20_000 }, () => {
  test("5 wrong passwords, then a 429 SocktopusError with retryAfter 1, even for the right one", async () => {
    await register("gina");
    const session = await accounts.login("gina", PASSWORD);
    for (let attempt = 0; attempt < 5; attempt += 1) {
      await assert.rejects(accounts.login("gina", "not the password"), { status: 401 });
    }
    const error = await accounts.login("gina", PASSWORD).catch((caught) => caught);
    assert.ok(error instanceof SocktopusError, error);
    assert.deepEqual(
      [error.status, error.message, error.retryAfter, error.body],
      [429, "Too many attempts", 1, { Error: "Too many attempts" }],
    );
    const events = await accounts.events(session, { limit: 7 });
    assert.deepEqual(
      events.map((event) => event.type),
      ["throttled", ...Array(5).fill("loginFailed"), "login"],
    );
  });

  test("retryAfter counts to a proxy's HTTP date, and is undefined without the header", async () => {
    const answer = (headers) => async () => new Response("slow down", { status: 429, headers });
    const dated = new RelayClient({
      baseUrl: "http://127.0.0.1:1",
      app: APP,
      secret: SECRET,
      fetch: answer({ "Retry-After": new Date(Date.now() + 120_000).toUTCString() }),
    });
    const error = await dated.send({ a: "b" }).catch((caught) => caught);
    assert.equal(error.status, 429);
    assert.ok(error.retryAfter >= 115 && error.retryAfter <= 121, error.retryAfter);
    const bare = new AccountsClient({ baseUrl: "http://127.0.0.1:1", fetch: answer({}) });
    await assert.rejects(bare.login("a", "b"), { status: 429, retryAfter: undefined });
  });
});

describe("AccountsClient: relay tokens", { timeout: 20_000 }, () => {
  test("a signed-in user connects with relayToken() and is reached as user:<id>", async () => {
    const userId = await register("hana");
    const session = await accounts.login("hana", PASSWORD);
    const first = await accounts.relayToken(session, APP);
    assert.deepEqual(Object.keys(first).sort(), ["connectionId", "token"]);
    assert.equal(first.connectionId, `user:${userId}`);

    const events = new Channel();
    // A token lives seconds: a fresh one for each (re)connection.
    const token = async () => (await accounts.relayToken(session, APP)).token;
    const connection = connect(daemon.wsUrl, token, {
      onOpen: () => events.push("open"),
      onMessage: (content) => events.push(`message ${content}`),
      onClose: ({ reason }) => events.push(`close ${reason}`),
      onReconnecting: (event) => events.push(`reconnecting ${event.code ?? event.error}`),
    });
    try {
      assert.equal(await events.next(), "open");
      const relay = new RelayClient({ baseUrl: daemon.url, app: APP, secret: SECRET });
      assert.deepEqual((await relay.send({ [`user:${userId}`]: "hello" })).failed, []);
      assert.equal(await events.next(), "message hello");
    } finally {
      await connection.close();
    }
    assert.equal(await events.next(), "close closed");
  });

  test("an app that did not opt in, or none, is a 404", async () => {
    await register("ivan");
    const session = await accounts.login("ivan", PASSWORD);
    for (const app of [OTHER_APP, "nosuchapp"]) {
      await assert.rejects(accounts.relayToken(session, app), { status: 404, message: "App not found" });
    }
  });
});
