# -*- test-case-name: tests.accounts.test_api -*-
"""
The registration mail, through the configured SMTP server with Twisted's
own ESMTP client.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.mail.smtp import sendmail

from socktopus_tw.errors import Unavailable

log = Logger()


class MailUnavailable(Unavailable):
    message = "Could not send the registration mail, try again"


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False


def parseSmtpUrl(url: str) -> SmtpServer:
    """
    C{smtp://[USER:PASSWORD@]HOST:PORT[?starttls=1]}; raises ValueError.
    """
    parts = urlsplit(url)
    if parts.scheme != "smtp" or not parts.hostname:
        raise ValueError("expected smtp://[USER:PASSWORD@]HOST:PORT[?starttls=1]")
    try:
        port = parts.port or 25
    except ValueError:
        raise ValueError("the SMTP port must be a number") from None
    starttls = parse_qs(parts.query).get("starttls", ["0"])[0].lower() in ("1", "true", "yes")
    return SmtpServer(
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        starttls,
    )


class Mailer:
    """
    Sends registration and password reset links. C{timeout} bounds a mail server that
    accepts the connection and then says nothing.
    """

    timeout = 30.0

    def __init__(self, server: SmtpServer, sender: str, reactor: Any) -> None:
        self.server = server
        self.sender = sender
        self.reactor = reactor

    def message(
        self,
        to: str,
        userName: str,
        link: str,
        subject: str = "Confirm your registration",
        purpose: str = "complete your registration",
        otherwise: str = "If you did not register, ignore this mail.",
    ) -> bytes:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = to
        mail["Subject"] = subject
        mail["Date"] = formatdate(self.reactor.seconds(), usegmt=True)
        mail["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        mail.set_content(
            f"Hello {userName},\n\nOpen this link to {purpose}:\n\n{link}\n\n{otherwise}\n"
        )
        return mail.as_bytes()

    async def sendRegistration(self, to: str, userName: str, link: str) -> None:
        await self._send(to, self.message(to, userName, link))

    async def sendReset(self, to: str, userName: str, link: str) -> None:
        """
        Mail a password reset link (SPEC §8.2).
        """
        message = self.message(
            to,
            userName,
            link,
            subject="Reset your password",
            purpose="choose a new password (within the hour, once)",
            otherwise="If you did not ask for this, ignore this mail: your password is unchanged.",
        )
        await self._send(to, message)

    async def _send(self, to: str, message: bytes) -> None:
        server = self.server
        d: Deferred[Any] = sendmail(
            server.host,
            self.sender,
            [to],
            message,
            port=server.port,
            reactor=self.reactor,
            username=server.username,
            password=server.password,
            requireAuthentication=server.username is not None,
            requireTransportSecurity=server.starttls,
        )
        d.addTimeout(self.timeout, self.reactor)
        try:
            await d
        except Exception as e:
            log.warn(
                "Could not mail {to} through {host}:{port}: {error}",
                to=to,
                host=server.host,
                port=server.port,
                error=e,
            )
            raise MailUnavailable() from None
