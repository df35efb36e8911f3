/**
 * A local SMTP server that keeps every message it is given, for the tests
 * of mailed links (registration, password reset): just enough of RFC 5321
 * for the daemon's client (Twisted's ESMTP sender, without AUTH or
 * STARTTLS). Outside test/ so that `node --test test/` does not run it.
 */

import { createServer } from "node:net";

import { Channel } from "./channel.js";

/** A header's value from a message's raw head, unfolded; undefined when absent. */
function headerOf(head, name) {
  const unfolded = head.replace(/\r?\n[ \t]+/g, " ");
  for (const line of unfolded.split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name.toLowerCase()) {
      return line.slice(colon + 1).trim();
    }
  }
  return undefined;
}

/**
 * The body as a mail reader shows it: quoted-printable and base64 undone,
 * UTF-8. `body` holds the raw bytes, one character each (latin1).
 */
function decodeBody(body, encoding = "7bit") {
  switch (encoding.toLowerCase()) {
    case "quoted-printable": {
      const joined = body.replace(/=\r?\n/g, "");
      const bytes = [];
      for (let i = 0; i < joined.length; i += 1) {
        const hex = joined.slice(i + 1, i + 3);
        if (joined[i] === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
          bytes.push(Number.parseInt(hex, 16));
          i += 2;
        } else {
          bytes.push(joined.charCodeAt(i));
        }
      }
      return Buffer.from(bytes).toString("utf8");
    }
    case "base64":
      return Buffer.from(body.replace(/\s+/g, ""), "base64").toString("utf8");
    default:
      return Buffer.from(body, "latin1").toString("utf8");
  }
}

/** One message as the server received it: envelope, raw data, and readers. */
function mailOf(from, to, data) {
  const split = /\r?\n\r?\n/.exec(data);
  const head = split ? data.slice(0, split.index) : data;
  const body = split ? data.slice(split.index + split[0].length) : "";
  return {
    from,
    to,
    data,
    header: (name) => headerOf(head, name),
    text: decodeBody(body, headerOf(head, "Content-Transfer-Encoding")),
  };
}

function session(socket, received) {
  let buffer = "";
  let from;
  let to = [];
  let data; // the lines of DATA while it is being read, else undefined
  const reply = (line) => socket.write(`${line}\r\n`);
  const line = (text) => {
    if (data !== undefined) {
      if (text === ".") {
        received(mailOf(from, to, data.join("\r\n")));
        data = undefined;
        from = undefined;
        to = [];
        reply("250 2.0.0 kept");
      } else {
        // Dot-stuffing (RFC 5321 4.5.2): a leading dot was doubled.
        data.push(text.startsWith(".") ? text.slice(1) : text);
      }
      return;
    }
    const verb = text.slice(0, 4).toUpperCase();
    if (verb === "EHLO") {
      reply("250-localhost");
      reply("250 8BITMIME");
    } else if (verb === "HELO" || verb === "NOOP") {
      reply("250 localhost");
    } else if (verb === "MAIL") {
      from = /<([^>]*)>/.exec(text)?.[1] ?? "";
      to = [];
      reply("250 2.1.0 ok");
    } else if (verb === "RCPT") {
      to.push(/<([^>]*)>/.exec(text)?.[1] ?? "");
      reply("250 2.1.5 ok");
    } else if (verb === "DATA") {
      data = [];
      reply("354 end with <CRLF>.<CRLF>");
    } else if (verb === "RSET") {
      from = undefined;
      to = [];
      reply("250 2.0.0 ok");
    } else if (verb === "QUIT") {
      reply("221 2.0.0 bye");
      socket.end();
    } else {
      reply("502 5.5.2 not here");
    }
  };
  // One character a byte: DATA may be 8-bit, and lines are split on CRLF bytes.
  socket.setEncoding("latin1");
  socket.on("data", (chunk) => {
    buffer += chunk;
    let end = buffer.indexOf("\r\n");
    while (end >= 0) {
      line(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\r\n");
    }
  });
  socket.on("error", () => {});
  reply("220 localhost ESMTP test sink");
}

/**
 * Listen on a free port of 127.0.0.1. Resolves to `{url, messages, next(),
 * close()}`: `url` is for the daemon's --smtp, `messages` every message so
 * far, `next()` the next message not yet taken, as it arrives.
 */
export async function startMailServer() {
  const messages = [];
  const arrivals = new Channel();
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    session(socket, (mail) => {
      messages.push(mail);
      arrivals.push(mail);
    });
  });
  await new Promise((resolveListen) => server.listen(0, "127.0.0.1", resolveListen));
  return {
    url: `smtp://127.0.0.1:${server.address().port}`,
    messages,
    next: () => arrivals.next(),
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolveClose) => server.close(resolveClose));
    },
  };
}
