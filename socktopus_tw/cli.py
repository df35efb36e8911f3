# -*- test-case-name: tests.test_cli,tests.deploy.test_first_contact -*-
"""
The C{socktopus} console command: what is not the daemon.

The daemon itself runs under twistd: C{twistd -n socktopus}. C{python -m
socktopus_tw} is the same command (L{socktopus_tw.__main__}).
"""

from __future__ import annotations

import secrets
import sys
import time

from twisted.python import usage

import socktopus_tw
from socktopus_tw.apps import APP_NAME, environmentLine
from socktopus_tw.relay.tokens import MAX_CONNECTION_ID_BYTES, makeToken

PROGRAM = "socktopus"


class _Command(usage.Options):
    """
    What every C{socktopus} command shares: C{--version} prints Socktopus'
    version (not Twisted's, as L{usage.Options} would).
    """

    def opt_version(self) -> None:
        """
        Print Socktopus' version and exit.
        """
        print(f"{PROGRAM} {socktopus_tw.__version__}")
        sys.exit(0)


class TokenOptions(_Command):
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


class SecretOptions(_Command):
    synopsis = "[APP]"
    longdesc = "Print a new random secret as the environment line that adds APP."

    def parseArgs(self, app: str = "MYAPP") -> None:
        if not APP_NAME.fullmatch(app):
            raise usage.UsageError("APP must be 1 to 64 letters, digits or underscores")
        self["app"] = app


class Options(_Command):
    longdesc = "Run the daemon with: twistd -n socktopus --help"
    subCommands = [
        ["token", None, TokenOptions, "Print a relay token: token APP SECRET CONNECTION_ID"],
        ["secret", None, SecretOptions, "Print a new app secret as an environment line"],
    ]

    def getSynopsis(self) -> str:
        # A command's help joins this to its own synopsis:
        # "Usage: socktopus token APP SECRET CONNECTION_ID".
        if self.subCommand is not None:
            return f"Usage: {PROGRAM}"
        return f"Usage: {PROGRAM} [--version] COMMAND [ARGS]"

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: token or secret")


def main(argv: list[str] | None = None) -> int:
    """
    Run C{socktopus ARGV}; return the exit status.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{PROGRAM}: {e} (see {PROGRAM} --help)\n")
        return 2
    except SystemExit as e:
        # --help and --version print, then exit.
        return e.code if isinstance(e.code, int) else 0
    sub = options.subOptions
    if options.subCommand == "token":
        now = int(time.time() * 1000)
        print(makeToken(sub["app"], sub["secret"], sub["connectionId"], now))
    else:
        print(environmentLine(sub["app"], secrets.token_urlsafe(48)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
