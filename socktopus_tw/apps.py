# -*- test-case-name: tests.test_apps -*-
"""
Apps and their secrets (SPEC §2): an app exists when the environment holds
C{<APP>_SOCKTOPUS_SECRET}; with C{<APP>_SOCKTOPUS_WEBHOOK} it has a webhook
(SPEC §7.2), and with C{<APP>_SOCKTOPUS_USER_TOKENS=1} the accounts service
hands its signed-in users relay tokens (SPEC §8.4).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from socktopus_tw.errors import InvalidSecret, SecretNotFound

APP_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_SUFFIX = "_SOCKTOPUS_SECRET"
_WEBHOOK = "_SOCKTOPUS_WEBHOOK"
_USER_TOKENS = "_SOCKTOPUS_USER_TOKENS"


class Apps:
    """
    The apps this daemon serves, read once from the environment at start.

    Names are matched case-insensitively, so they are kept lower-cased.
    """

    def __init__(
        self,
        secrets: Mapping[str, str],
        webhooks: Mapping[str, str] | None = None,
        userTokens: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self._secrets = {name.lower(): secret for name, secret in secrets.items()}
        self._webhooks = {name.lower(): url for name, url in (webhooks or {}).items()}
        self._userTokens = {name.lower() for name in userTokens}
        for suffix, names in ((_WEBHOOK, self._webhooks), (_USER_TOKENS, self._userTokens)):
            unknown = sorted(set(names) - set(self._secrets))
            if unknown:
                name = unknown[0].upper()
                raise ValueError(
                    f"{name}{suffix} is set but {name}{_SUFFIX} is not: an app needs a secret"
                )

    @classmethod
    def fromEnvironment(cls, environ: Mapping[str, str]) -> Apps:
        """
        The apps C{environ} configures; L{ValueError} for a webhook of no app.
        """
        secrets, webhooks, userTokens = {}, {}, {}
        for key, value in environ.items():
            for suffix, found in (
                (_SUFFIX, secrets),
                (_WEBHOOK, webhooks),
                (_USER_TOKENS, userTokens),
            ):
                name = key[: -len(suffix)]
                if key.endswith(suffix) and value and APP_NAME.fullmatch(name):
                    found[name] = value
        for name, value in userTokens.items():
            if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name}{_USER_TOKENS} must be 1 or 0, not {value!r}")
        opted = {n for n, v in userTokens.items() if v.strip().lower() in ("1", "true", "yes")}
        return cls(secrets, webhooks, opted)

    def givesUserTokens(self, app: str) -> bool:
        """
        Whether signed-in users may get relay tokens for C{app} (SPEC §8.4).
        """
        return app.lower() in self._userTokens

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
