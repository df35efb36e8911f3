# -*- test-case-name: tests.test_apps -*-
"""
Apps and their secrets (SPEC §2): an app exists when the environment holds
C{<APP>_SOCKTOPUS_SECRET}; with C{<APP>_SOCKTOPUS_WEBHOOK} it has a webhook
(SPEC §7.2).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from socktopus_tw.errors import InvalidSecret, SecretNotFound

APP_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_SUFFIX = "_SOCKTOPUS_SECRET"
_WEBHOOK = "_SOCKTOPUS_WEBHOOK"


class Apps:
    """
    The apps this daemon serves, read once from the environment at start.

    Names are matched case-insensitively, so they are kept lower-cased.
    """

    def __init__(
        self, secrets: Mapping[str, str], webhooks: Mapping[str, str] | None = None
    ) -> None:
        self._secrets = {name.lower(): secret for name, secret in secrets.items()}
        self._webhooks = {name.lower(): url for name, url in (webhooks or {}).items()}
        unknown = sorted(set(self._webhooks) - set(self._secrets))
        if unknown:
            name = unknown[0].upper()
            raise ValueError(
                f"{name}{_WEBHOOK} is set but {name}{_SUFFIX} is not: an app needs a secret"
            )

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str]) -> Apps:
        """
        The apps C{environ} configures; L{ValueError} for a webhook of no app.
        """
        secrets, webhooks = {}, {}
        for key, value in environ.items():
            for suffix, found in ((_SUFFIX, secrets), (_WEBHOOK, webhooks)):
                name = key[: -len(suffix)]
                if key.endswith(suffix) and value and APP_NAME.fullmatch(name):
                    found[name] = value
        return cls(secrets, webhooks)

    def webhooks(self) -> dict[str, str]:
        """
        App (lower-cased) -> its webhook URL, for the apps that have one.
        """
        return dict(self._webhooks)

    def names(self) -> list[str]:
        """
        The app names, lower-cased and sorted; never their secrets.
        """
        return sorted(self._secrets)

    def secretFor(self, app: str) -> str:
        """
        The secret of C{app}, or L{SecretNotFound}.
        """
        secret = self._secrets.get(app.lower())
        if secret is None:
            raise SecretNotFound()
        return secret

    def authenticate(self, app: str, secret: str) -> str:
        """
        Check a backend's app name and secret; return the canonical app name.
        """
        expected = self.secretFor(app)
        # Constant time, so response timing does not leak the secret's prefix.
        # surrogatepass: a lone surrogate from hostile JSON is just a mismatch.
        if not hmac.compare_digest(
            expected.encode("utf-8", "surrogatepass"), secret.encode("utf-8", "surrogatepass")
        ):
            raise InvalidSecret()
        return app.lower()

    def __len__(self) -> int:
        return len(self._secrets)


def environmentLine(app: str, secret: str) -> str:
    """
    The exact environment line that makes C{app} an app with C{secret}.
    """
    return f"{app.upper()}{_SUFFIX}={secret}"
