# -*- test-case-name: tests.test_cli,tests.test_cli_listen,tests.deploy.test_first_contact -*-
"""
The C{socktopus} console command: what is not the daemon.

The daemon itself runs under twistd: C{twistd -n socktopus}. C{python -m
socktopus_tw} is the same command (L{socktopus_tw.__main__}).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from typing import Any, TextIO

# As a module: its ConnectionRefusedError and TimeoutError are not the builtins.
from twisted.internet import error as netError
from twisted.python import usage

import socktopus_tw
from socktopus_tw.apps import APP_NAME, environmentLine
from socktopus_tw.client import (
    Closed,
    Reconnecting,
    RelayConnection,
    SocktopusError,
    connect,
    make_token,
    receive_url,
)
from socktopus_tw.relay.tokens import MAX_CONNECTION_ID_BYTES, makeToken

PROGRAM = "socktopus"
#: Where C{socktopus listen} connects unless told: the daemon as the
#: README starts it.
DEFAULT_URL = "ws://localhost:8080"


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


class _ConnectionCommand(_Command):
    """
    A command about one client connection: C{APP SECRET CONNECTION_ID},
    checked as the daemon would check them.
    """

    def parseArgs(self, app: str, secret: str, connectionId: str) -> None:
        if not APP_NAME.fullmatch(app):
            raise usage.UsageError("APP must be 1 to 64 letters, digits or underscores")
        if not 1 <= len(connectionId.encode("utf-8")) <= MAX_CONNECTION_ID_BYTES:
            raise usage.UsageError(
                f"CONNECTION_ID must be 1 to {MAX_CONNECTION_ID_BYTES} bytes of UTF-8"
            )
        self["app"], self["secret"], self["connectionId"] = app, secret, connectionId


class TokenOptions(_ConnectionCommand):
    synopsis = "APP SECRET CONNECTION_ID"
    longdesc = "Print a relay token for one client connection, stamped now."


class ListenOptions(_ConnectionCommand):
    synopsis = "[--url URL] APP SECRET CONNECTION_ID"
    longdesc = (
        "Connect to the relay as CONNECTION_ID of APP, as a client would, and print the "
        "content of each message sent to it, one a line (line breaks in it written \\n). "
        "It makes a fresh token for each connection, so the token lifespan never gets in "
        "the way, and reconnects after a dropped connection. It stops when kicked "
        "(status 0), on Ctrl-C or SIGTERM (status 0), or when the daemon cannot be "
        "reached or refuses it (status 1). What happens is said on stderr."
    )
    optParameters = [
        [
            "url",
            "u",
            DEFAULT_URL,
            "The daemon: ws://, wss://, http:// or https://, with the prefix a proxy "
            "serves it under, if any.",
        ],
    ]

    def postOptions(self) -> None:
        try:
            self["receiveUrl"] = receive_url(self["url"])
        except ValueError as e:
            raise usage.UsageError(f"--url: {e}") from None


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
        [
            "listen",
            None,
            ListenOptions,
            "Connect as a client and print its messages: listen APP SECRET CONNECTION_ID",
        ],
    ]

    def getSynopsis(self) -> str:
        # A command's help joins this to its own synopsis:
        # "Usage: socktopus token APP SECRET CONNECTION_ID".
        if self.subCommand is not None:
            return f"Usage: {PROGRAM}"
        return f"Usage: {PROGRAM} [--version] COMMAND [ARGS]"

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("give a command: token, secret or listen")


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
    elif options.subCommand == "listen":
        return listen(sub)
    else:
        print(environmentLine(sub["app"], secrets.token_urlsafe(48)))
    return 0


# -- socktopus listen ----------------------------------------------------------

# Each message is one line of output, so that `socktopus listen | grep`
# sees one message per line and a message cannot write to the terminal:
# line breaks and other control characters (tab aside) are escaped.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(32), *range(0x7F, 0xA0)]}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r"})
del _ESCAPES[ord("\t")]


def printable(content: str) -> str:
    """
    C{content} as one line of text: line breaks written C{\\n} and C{\\r},
    other control characters C{\\xNN}; the rest as it is.
    """
    return content.translate(_ESCAPES)


def describeError(error: BaseException) -> str:
    """
    Why a connection could not open, in a few words.
    """
    if isinstance(error, SocktopusError):
        message = error.message.strip()
        if not message or message.startswith("<") or "\n" in message:
            # Not the daemon's JSON: a proxy's or another server's page.
            return f"{error.status} (that is not the relay's answer: is --url right?)"
        return f"{error.status} {message}"
    if isinstance(error, netError.ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, netError.DNSLookupError):
        return "the host name does not resolve"
    if isinstance(error, netError.TimeoutError | netError.TCPTimedOutError):
        return "timed out"
    if type(error) is netError.ConnectError and error.args and error.args[0]:
        # The SDK's own: why the WebSocket handshake failed.
        return str(error.args[0])
    return str(error).strip() or type(error).__name__


def refusalHint(error: SocktopusError, app: str) -> str:
    """
    What to check, for the daemon's refusals a user can cause.
    """
    variable = f"{app.upper()}_SOCKTOPUS_SECRET"
    if error.message == "Invalid signature":
        return f" (is SECRET the daemon's {variable}?)"
    if error.message == "Secret not found":
        return f" (the daemon has no app {app}: start it with {variable} set)"
    if error.message == "Token expired":
        return " (this clock and the daemon's differ by more than its --token-lifespan)"
    if error.status == 404:
        return " (nothing there: is --url the daemon, with a proxy's prefix if any?)"
    return ""


def listen(config: usage.Options, reactor: Any = None) -> int:
    """
    Run C{socktopus listen} with its parsed options until kicked,
    interrupted or refused; return the exit status. Runs the reactor.
    """
    if reactor is None:
        from twisted.internet import reactor
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr
    app, secret, connectionId = config["app"], config["secret"], config["connectionId"]
    url = config["receiveUrl"]
    state: dict[str, Any] = {"status": 0, "done": False, "stopping": False, "opened": False}
    connection: RelayConnection | None = None

    def say(line: str) -> None:
        try:
            err.write(f"{PROGRAM}: {line}\n")
            err.flush()
        except OSError:
            pass

    def end(status: int, line: str | None = None) -> None:
        # The outcome is decided once: by a kick, a refusal, a closed stdout,
        # or a signal, whichever comes first.
        if state["done"]:
            return
        state["done"], state["status"] = True, status
        if line is not None:
            say(line)
        if connection is not None:
            connection.close()
        if not state["stopping"]:
            reactor.stop()

    def token() -> str:
        # Made afresh for every connection: a token lives seconds.
        return make_token(app, secret, connectionId)

    def onOpen() -> None:
        state["opened"] = True
        say(f"connected to {url} as {app}/{connectionId}; printing its messages (Ctrl-C stops)")

    def onMessage(content: str) -> None:
        try:
            out.write(printable(content) + "\n")
            out.flush()
        except OSError:
            # The reader went away (`| head -1`): done, quietly, and without
            # Python complaining at exit that stdout cannot be flushed.
            _silence(out)
            end(0)

    def onReconnecting(event: Reconnecting) -> None:
        error = event.error
        if error is None:
            say(f"disconnected (close code {event.code}); reconnecting in {event.delay:.1f} s")
        elif isinstance(error, SocktopusError) and error.status < 500:
            # The daemon said no; asking again will not change its mind.
            end(1, f"the daemon refused {url}: {describeError(error)}{refusalHint(error, app)}")
        elif not state["opened"]:
            hint = " (is the daemon running? twistd -n socktopus)"
            if not isinstance(error, netError.ConnectionRefusedError):
                hint = " (is --url right?)"
            end(1, f"cannot connect to {url}: {describeError(error)}{hint}")
        else:
            say(f"cannot connect: {describeError(error)}; trying again in {event.delay:.1f} s")

    def onClosed(closed: Closed) -> None:
        if closed.reason == "kicked":
            end(
                0,
                "kicked: the daemon sent CLOSE (a /kick, a newer connection as "
                f"{app}/{connectionId}, or the daemon stopping)",
            )

    def start() -> None:
        nonlocal connection
        connection = connect(
            config["url"],
            token,
            onMessage,
            on_open=onOpen,
            on_reconnecting=onReconnecting,
            reactor=reactor,
            # Quick to come back while someone is trying things by hand.
            max_delay=5.0,
        )
        connection.when_closed().addCallback(onClosed)

    def beforeShutdown() -> Any:
        # SIGINT and SIGTERM stop the reactor (Twisted's handlers); close the
        # WebSocket cleanly first, so the daemon forgets this client at once.
        state["stopping"] = True
        if not state["done"]:
            state["done"] = True
            say("stopped; disconnecting")
        if connection is not None:
            return connection.close().addCallback(lambda _: None)
        return None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", beforeShutdown)
    reactor.run()
    return state["status"]


def _silence(stream: TextIO) -> None:
    """
    Point C{stream}'s file descriptor at /dev/null, so the interpreter's
    last flush of it does not fail.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    raise SystemExit(main())
