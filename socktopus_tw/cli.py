# -*- test-case-name: tests.test_cli -*-
"""
The C{socktopus} console command: what is not the daemon.

The daemon itself runs under twistd: C{twistd -n socktopus}.
"""

from __future__ import annotations

import secrets
import sys
import time

from twisted.python import usage

from socktopus_tw.apps import APP_NAME, environmentLine
from socktopus_tw.relay.tokens import MAX_CONNECTION_ID_BYTES, makeToken


class TokenOptions(usage.Options):
    synopsis = "APP SECRET CONNECTION_ID"
    longdesc = "Print a relay token for one client connection, stamped now."

    def parseArgs(self, app: str, secret: str, connectionId: str) -> None:
        if not APP_NAME.fullmatch(app):
            raise usage.UsageError("APP must be 1 to 64 letters, digits or underscores")
        if not 1 <= len(connectionId.encode("utf-8")) <= MAX_CONNECTION_ID_BYTES:
            raise usage.UsageError(
                f"CONNECTION_ID must be 1 to {MAX_CONNECTION_ID_BYTES} bytes of UTF-8"
            )
        self["app"], self["secret"], self["connectionId"] = app, secret, connectionId


class SecretOptions(usage.Options):
    synopsis = "[APP]"
    longdesc = "Print a new random secret as the environment line that adds APP."

    def parseArgs(self, app: str = "MYAPP") -> None:
        if not APP_NAME.fullmatch(app):
            raise usage.UsageError("APP must be 1 to 64 letters, digits or underscores")
        self["app"] = app


class Options(usage.Options):
    synopsis = "COMMAND [ARGS]"
    longdesc = "Run the daemon with: twistd -n socktopus --help"
    subCommands = [
        ["token", None, TokenOptions, "Print a relay token: token APP SECRET CONNECTION_ID"],
        ["secret", None, SecretOptions, "Print a new app secret as an environment line"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: token or secret")


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"socktopus: {e} (see socktopus --help)\n")
        return 2
    sub = options.subOptions
    if options.subCommand == "token":
        now = int(time.time() * 1000)
        print(makeToken(sub["app"], sub["secret"], sub["connectionId"], now))
    else:
        print(environmentLine(sub["app"], secrets.token_urlsafe(48)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
