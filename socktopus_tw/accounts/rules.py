# -*- test-case-name: tests.accounts.test_rules -*-
"""
What a user name, password and e-mail address must look like.
"""

from __future__ import annotations

import re

from socktopus_tw.errors import BadRequest

USER_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
# Deliberately plain: one @, no spaces or control characters, a dot in the
# domain. Anything stricter refuses real addresses; the mailed code proves it.
EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+")
MIN_PASSWORD_CHARACTERS = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores everything after byte 72


def checkUserName(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise BadRequest("User names are 1 to 64 letters, digits or underscores")
    return name


def checkPassword(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARACTERS:
        raise BadRequest(f"Passwords need at least {MIN_PASSWORD_CHARACTERS} characters")
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("Passwords must be text") from None
    if len(encoded) > MAX_PASSWORD_BYTES:
        # Refused, never cut: a cut password would accept other passwords.
        raise BadRequest(f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes of UTF-8")
    if "\x00" in password:
        raise BadRequest("Passwords cannot contain NUL characters")
    return password


def checkEmail(email: str) -> str:
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise BadRequest("Invalid email address")
    try:
        email.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("Invalid email address") from None
    return email
