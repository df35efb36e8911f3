/**
 * The mailed password reset link in a real browser: Debian's Chromium,
 * headless, driven by playwright-core, opens the page the daemon serves at
 * GET /users/<id>/reset?code=..., types a new password and submits it as a
 * person would; the SDK then logs in with it. The link is the one this
 * test's SMTP server received, with --public-url's origin (the proxy a
 * deployment would have) replaced by the daemon's own.
 */

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";

import { AccountsClient } from "socktopus";

import { startDaemon } from "../test-support/daemon.js";
import { startMailServer } from "../test-support/smtp.js";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PASSWORD = "correct horse battery";
const NEW_PASSWORD = "chosen in the browser ✓";
const PUBLIC_URL = "https://accounts.example.com";
const RESET_LINK = /https:\/\/accounts\.example\.com\/users\/\d+\/reset\?code=[0-9a-f]{64}(?![0-9a-f])/;
const REGISTRATION_LINK = /\/users\/\d+\/register\?code=[0-9a-f]{64}/;

let mail;
let daemon;
let context;
let userDataDir;
const pageErrors = [];

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: apt-get install chromium`);
  mail = await startMailServer();
  daemon = await startDaemon({
    args: ["--smtp", mail.url, "--mail-from", "accounts@example.com", "--public-url", PUBLIC_URL],
  });
  userDataDir = mkdtempSync(join(tmpdir(), "socktopus-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await context?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  assert.equal(await daemon?.stop(), 0);
  await mail?.close();
});

const SCENARIO =
  "the mailed reset link opens the daemon's page, which sets the password typed in; the SDK logs in with it";

test(SCENARIO, { timeout: 30_000 }, async () => {
  const accounts = new AccountsClient({ baseUrl: daemon.url });
  const created = await fetch(`${daemon.url}/users`, {
    method: "POST",
    body: JSON.stringify({ User: "alice", Password: PASSWORD, Email: "alice@example.com" }),
  });
  assert.equal(created.status, 200);
  const { UserID: userId } = await created.json();
  const registration = REGISTRATION_LINK.exec((await mail.next()).text);
  assert.equal((await fetch(daemon.url + registration[0], { redirect: "manual" })).status, 302);
  const before = await accounts.login("alice", PASSWORD);

  await accounts.resetPassword({ user: "alice" });
  const resetMail = await mail.next();
  assert.equal(resetMail.header("Subject"), "Reset your password");
  const mailed = new URL(RESET_LINK.exec(resetMail.text)[0]);
  assert.equal(mailed.pathname, `/users/${userId}/reset`);
  const link = daemon.url + mailed.pathname + mailed.search;

  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("console", (message) => {
    // A blocked script or fetch (the page's Content-Security-Policy) shows here.
    if (message.type() === "error") pageErrors.push(message.text());
  });
  const result = () => page.locator("#result").textContent();

  const opened = await page.goto(link);
  assert.equal(opened.status(), 200);
  assert.equal(await page.title(), "Choose a new password");
  await page.getByLabel("New password").fill(NEW_PASSWORD);
  await page.getByRole("button", { name: "Set password" }).click();
  await page.waitForFunction(() => document.getElementById("result").textContent !== "");
  assert.equal(await result(), "Your password is changed. Log in with it.", pageErrors.join("\n"));
  assert.equal(await page.locator("form").count(), 0);

  const after = await accounts.login("alice", NEW_PASSWORD);
  assert.equal(after.userId, userId);
  await assert.rejects(accounts.login("alice", PASSWORD), { status: 401 });
  // The reset ended the session from before it.
  await assert.rejects(accounts.events(before), { status: 401 });
  assert.deepEqual(
    (await accounts.events(after, { limit: 3 })).map((event) => event.type),
    ["loginFailed", "login", "passwordReset"],
  );

  // The same link again: the code was used; the page says so and keeps its form.
  await page.goto(link);
  await page.getByLabel("New password").fill("a third password here");
  await page.getByRole("button", { name: "Set password" }).click();
  await page.waitForFunction(() => document.getElementById("result").textContent !== "");
  assert.equal(await result(), "Invalid or expired code");
  assert.equal(await page.locator("form").count(), 1);
  await accounts.login("alice", NEW_PASSWORD);

  // The 400 of the used code is reported by Chromium as a failed resource.
  assert.deepEqual(
    pageErrors.filter((text) => !/status of 400/.test(text)),
    [],
  );
});
