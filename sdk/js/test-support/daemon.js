/**
 * The real daemon for the tests: `twistd -n socktopus` from the project's
 * virtualenv, on a free port of 127.0.0.1, with a SQLite file in a fresh
 * directory. Outside test/ so that `node --test test/` does not run it.
 */

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** Where twistd and python are: the suite passes its own, else the checkout's .venv. */
export const VENV_BIN = process.env.SOCKTOPUS_VENV_BIN || resolve(here, "../../../.venv/bin");
export const APP = "demo";
export const SECRET = "demo-secret-0123456789";

/**
 * Start the daemon and resolve once it says which port it listens on.
 *
 * `env` adds variables to the few it is given (or overrides them), e.g.
 * `{ DEMO_SOCKTOPUS_WEBHOOK: "http://127.0.0.1:<port>/hook" }`; `args` adds
 * options after the few it is given, e.g. `["--smtp", mail.url, ...]`.
 */
export async function startDaemon({ env = {}, args = [] } = {}) {
  const directory = mkdtempSync(join(tmpdir(), "socktopus-js-"));
  const child = spawn(
    join(VENV_BIN, "twistd"),
    [
      "-n",
      "--pidfile=",
      "socktopus",
      "--listen",
      "tcp:0:interface=127.0.0.1",
      "--database",
      `sqlite:${join(directory, "socktopus.sqlite3")}`,
      "--bcrypt-rounds",
      "4",
      ...args,
    ],
    {
      // Only what it needs, so no developer's .env or variables leak in.
      cwd: directory,
      env: {
        PATH: process.env.PATH,
        HOME: directory,
        PYTHONUNBUFFERED: "1",
        [`${APP.toUpperCase()}_SOCKTOPUS_SECRET`]: SECRET,
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  let output = "";
  const exited = new Promise((resolveExit) => {
    child.on("exit", (code, signal) => resolveExit(code ?? signal));
  });
  const port = await new Promise((resolvePort, reject) => {
    child.stdout.on("data", (chunk) => {
      output += chunk;
      const match = /Listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (match) resolvePort(Number(match[1]));
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    child.on("error", reject);
    exited.then((status) =>
      reject(new Error(`the daemon exited (${status}) before listening:\n${output}`)),
    );
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}`,
    get output() {
      return output;
    },
    /** SIGTERM, as systemd stops it; resolves with its exit status. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const status = await exited;
      process.off("exit", killOnExit);
      rmSync(directory, { recursive: true, force: true });
      return status;
    },
  };
}
