# -*- test-case-name: tests.accounts.test_api -*-
"""
reCAPTCHA: the answer a registering user's browser got is checked with the
verify URL over verified TLS. Fails closed: no answer is never a pass.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import treq
from twisted.internet import ssl
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from socktopus_tw.errors import BadRequest, Unavailable

log = Logger()

DEFAULT_VERIFY_URL = "https://www.google.com/recaptcha/api/siteverify"
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class RecaptchaFailed(BadRequest):
    message = "reCAPTCHA check failed"


class RecaptchaUnavailable(Unavailable):
    message = "reCAPTCHA verification unavailable, try again"


def loadTrustRoot(path: str | None) -> Any:
    """
    The platform's trust store, or exactly the CA certificates in the PEM
    file at C{path} (for tests and private deployments). Raises ValueError.
    """
    if path is None:
        return ssl.platformTrust()
    try:
        with open(path, "rb") as f:
            blocks = _PEM.findall(f.read())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not blocks:
        raise ValueError(f"{path} holds no PEM certificate")
    return ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(b) for b in blocks])


class Recaptcha:
    """
    Checks reCAPTCHA answers with the verify URL.
    """

    timeout = 10.0

    def __init__(self, secret: str, verifyUrl: str, reactor: Any, caFile: str | None = None):
        self.secret = secret
        self.verifyUrl = verifyUrl
        self.agent = Agent(
            reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=loadTrustRoot(caFile))
        )

    async def check(self, answer: str, remoteIp: str | None = None) -> None:
        """
        Return if the answer passes; raise L{RecaptchaFailed} if not, and
        L{RecaptchaUnavailable} if the verifier could not be asked.
        """
        if not answer:
            raise RecaptchaFailed()
        form = {"secret": self.secret, "response": answer}
        if remoteIp:
            form["remoteip"] = remoteIp
        try:
            response = await treq.post(
                self.verifyUrl, data=form, agent=self.agent, timeout=self.timeout
            )
            body = await response.content()
            if response.code != 200:
                raise ValueError(f"status {response.code}")
            verdict = orjson.loads(body)
        except Exception as e:
            # A refused connection, an untrusted certificate, a timeout or a
            # broken answer: all fail closed.
            log.warn("reCAPTCHA verifier {url} unavailable: {error}", url=self.verifyUrl, error=e)
            raise RecaptchaUnavailable() from None
        if not (isinstance(verdict, dict) and verdict.get("success") is True):
            raise RecaptchaFailed()
