# -*- test-case-name: tests.accounts.test_store -*-
"""
All of the accounts service's SQL: small blocking functions, each run in one
transaction by L{socktopus_tw.db.Database.run}. Placeholders are C{?}.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    email: str
    passwordHash: bytes
    registered: bool


@dataclass(frozen=True, slots=True)
class StoredSession:
    userId: int
    secret: str
    expiresAt: int
    stayLoggedIn: bool
    registered: bool


_USER_COLUMNS = "id, name, email, password_hash, registered"


def _user(row: Any) -> User | None:
    if row is None:
        return None
    hashed = row[3] if isinstance(row[3], bytes) else row[3].encode("ascii")
    return User(int(row[0]), row[1], row[2], hashed, bool(row[4]))


def userNamed(cursor: Any, name: str) -> User | None:
    cursor.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name_key = ?", (name.lower(),))
    return _user(cursor.fetchone())


def userWithId(cursor: Any, userId: int) -> User | None:
    cursor.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (userId,))
    return _user(cursor.fetchone())


def addUser(
    cursor: Any, name: str, email: str, passwordHash: bytes, code: str | None, now: int
) -> int:
    """
    Insert a user, registered at once unless it has a registration code.
    A taken name raises the driver's IntegrityError (the database's unique
    index decides, so two racing registrations cannot both win).
    """
    cursor.execute(
        "INSERT INTO users (name, name_key, email, password_hash, registered,"
        " registration_code, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, name.lower(), email, passwordHash.decode("ascii"), int(code is None), code, now),
    )
    return int(cursor.lastrowid)


def removeUser(cursor: Any, userId: int) -> None:
    for table in ("sessions", "password_resets", "account_events"):
        cursor.execute(f"DELETE FROM {table} WHERE user_id = ?", (userId,))
    cursor.execute("DELETE FROM users WHERE id = ?", (userId,))


def usersWithEmail(cursor: Any, email: str) -> list[int]:
    """
    The ids of the users registered with C{email}, in any case.
    """
    cursor.execute("SELECT id FROM users WHERE LOWER(email) = ? ORDER BY id", (email.lower(),))
    return [int(row[0]) for row in cursor.fetchall()]


def completeRegistration(cursor: Any, userId: int, code: str) -> bool:
    """
    Register the user if C{code} is its one-time code; the code is used up.
    """
    cursor.execute("SELECT registration_code FROM users WHERE id = ? AND registered = 0", (userId,))
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return False
    if not hmac.compare_digest(row[0].encode("ascii"), code.encode("utf-8", "surrogatepass")):
        return False
    cursor.execute(
        "UPDATE users SET registered = 1, registration_code = NULL WHERE id = ?", (userId,)
    )
    return True


def setPassword(cursor: Any, userId: int, passwordHash: bytes) -> None:
    """
    Change the password and end every session of the user.
    """
    cursor.execute(
        "UPDATE users SET password_hash = ? WHERE id = ?", (passwordHash.decode("ascii"), userId)
    )
    cursor.execute("DELETE FROM sessions WHERE user_id = ?", (userId,))


def rehashPassword(cursor: Any, userId: int, oldHash: bytes, newHash: bytes) -> bool:
    """
    Replace the stored hash with the same password hashed at another cost,
    keeping every session. Only if it is still C{oldHash}: a password change
    that won a race must not be undone. Whether it was replaced.
    """
    cursor.execute(
        "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
        (newHash.decode("ascii"), userId, oldHash.decode("ascii")),
    )
    return cursor.rowcount == 1


def passwordCosts(cursor: Any) -> dict[int, int]:
    """
    How many stored password hashes there are of each bcrypt cost (the
    C{12} of C{$2b$12$...}).
    """
    cursor.execute(
        "SELECT SUBSTR(password_hash, 5, 2), COUNT(*) FROM users"
        " GROUP BY SUBSTR(password_hash, 5, 2)"
    )
    costs: dict[int, int] = {}
    for cost, count in cursor.fetchall():
        if isinstance(cost, bytes):
            cost = cost.decode("ascii", "replace")
        if cost and cost.isdigit():
            costs[int(cost)] = costs.get(int(cost), 0) + int(count)
    return costs


def sessionOf(cursor: Any, userId: int) -> StoredSession | None:
    cursor.execute(
        "SELECT s.secret, s.expires_at, s.stay_logged_in, u.registered"
        " FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.user_id = ?",
        (userId,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return StoredSession(userId, row[0], int(row[1]), bool(row[2]), bool(row[3]))


def saveSession(cursor: Any, userId: int, secret: str, expiresAt: int, stayLoggedIn: bool) -> None:
    cursor.execute("DELETE FROM sessions WHERE user_id = ?", (userId,))
    cursor.execute(
        "INSERT INTO sessions (user_id, secret, expires_at, stay_logged_in) VALUES (?, ?, ?, ?)",
        (userId, secret, expiresAt, int(stayLoggedIn)),
    )


def extendSession(
    cursor: Any, userId: int, secret: str, expiresAt: int, stayLoggedIn: bool
) -> None:
    # Guarded by the secret: a late write must not revive a replaced session.
    cursor.execute(
        "UPDATE sessions SET expires_at = ?, stay_logged_in = ? WHERE user_id = ? AND secret = ?",
        (expiresAt, int(stayLoggedIn), userId, secret),
    )


def endSession(cursor: Any, userId: int) -> None:
    cursor.execute("DELETE FROM sessions WHERE user_id = ?", (userId,))


def idsNamed(cursor: Any, names: list[str]) -> dict[str, int]:
    """
    The ids of those names that exist, keyed by lower-cased name.
    """
    keys = sorted({name.lower() for name in names})
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        cursor.execute(f"SELECT name_key, id FROM users WHERE name_key IN ({marks})", chunk)
        found.update((key, int(userId)) for key, userId in cursor.fetchall())
    return found


def acceptHeaders(cursor: Any, timeSent: int, userId: int, mac: bytes) -> None:
    """
    Note a set of Auth Headers as used. Used before (by this daemon before a
    restart, or by another on this database), the insert raises the driver's
    IntegrityError: the primary key decides, so two daemons given the same
    headers at once cannot both accept them.

    The insert is its transaction's only statement: joined with the DELETE of
    L{forgetHeaders}, two daemons' transactions each waited for the gap lock
    the other's DELETE took (an InnoDB deadlock).
    """
    cursor.execute(
        "INSERT INTO seen_headers (time_sent, user_id, mac) VALUES (?, ?, ?)",
        (timeSent, userId, mac.hex()),
    )


def forgetHeaders(cursor: Any, before: int) -> None:
    """
    Forget the headers sent before the Unix time C{before}, which the time
    check refuses anyway: what L{acceptHeaders} keeps does not grow without
    bound.
    """
    cursor.execute("DELETE FROM seen_headers WHERE time_sent < ?", (before,))


# -- failed logins (SPEC 8.1) ----------------------------------------------


def loginBlockedUntil(cursor: Any, nameKey: str, ip: str) -> int:
    """
    Until when (Unix milliseconds) logins of C{nameKey} from C{ip} are
    refused: the later of the pair's block and the IP's (C{0}: none).
    """
    cursor.execute(
        "SELECT MAX(blocked_until) FROM login_failures WHERE ip = ? AND name_key IN (?, '')",
        (ip, nameKey),
    )
    row = cursor.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def countLoginFailure(
    cursor: Any, nameKey: str, ip: str, now: int, window: int, wait: Callable[[int], int]
) -> tuple[int, int]:
    """
    Count a failed login of C{nameKey} from C{ip} (C{''}: of the IP alone):
    one more in a row if the last was within C{window} milliseconds, else
    the first. Return the failures in a row and the block they earn (until
    C{now + wait(failures)}, or C{0} when C{wait} is C{0}).

    Two daemons counting the first failure of a pair at once: one insert
    raises the driver's IntegrityError, and the caller counts again.
    """
    cursor.execute(
        "SELECT failures, last_failure FROM login_failures WHERE name_key = ? AND ip = ?",
        (nameKey, ip),
    )
    row = cursor.fetchone()
    failures = int(row[0]) + 1 if row is not None and now - int(row[1]) <= window else 1
    pause = wait(failures)
    blockedUntil = now + pause if pause > 0 else 0
    if row is None:
        cursor.execute(
            "INSERT INTO login_failures (name_key, ip, failures, last_failure, blocked_until)"
            " VALUES (?, ?, ?, ?, ?)",
            (nameKey, ip, failures, now, blockedUntil),
        )
    else:
        cursor.execute(
            "UPDATE login_failures SET failures = ?, last_failure = ?, blocked_until = ?"
            " WHERE name_key = ? AND ip = ?",
            (failures, now, blockedUntil, nameKey, ip),
        )
    return failures, blockedUntil


def clearLoginFailures(cursor: Any, nameKey: str, ip: str) -> None:
    cursor.execute("DELETE FROM login_failures WHERE name_key = ? AND ip = ?", (nameKey, ip))


def forgetLoginFailures(cursor: Any, before: int, now: int) -> None:
    """
    Drop the counts whose last failure is before C{before} and whose block
    is over: the next failure would start them again anyway.
    """
    cursor.execute(
        "DELETE FROM login_failures WHERE last_failure < ? AND blocked_until < ?", (before, now)
    )


# -- password reset (SPEC 8.2) ---------------------------------------------


def saveResetCode(cursor: Any, userId: int, codeHash: str, expiresAt: int) -> None:
    """
    Make C{codeHash} the user's one reset code: an older one is void.
    """
    cursor.execute("DELETE FROM password_resets WHERE user_id = ?", (userId,))
    cursor.execute(
        "INSERT INTO password_resets (user_id, code_hash, expires_at) VALUES (?, ?, ?)",
        (userId, codeHash, expiresAt),
    )


def resetCodeValid(cursor: Any, userId: int, codeHash: str, now: int) -> bool:
    """
    Whether C{codeHash} is the user's live reset code.
    """
    cursor.execute("SELECT code_hash, expires_at FROM password_resets WHERE user_id = ?", (userId,))
    row = cursor.fetchone()
    return (
        row is not None
        and int(row[1]) > now
        and hmac.compare_digest(row[0].encode("ascii"), codeHash.encode("ascii"))
    )


def resetPassword(cursor: Any, userId: int, codeHash: str, now: int, passwordHash: bytes) -> bool:
    """
    Use up the reset code and set the password, ending every session; or
    nothing and C{False}, when the code is no longer the user's live one.
    """
    if not resetCodeValid(cursor, userId, codeHash, now):
        return False
    cursor.execute("DELETE FROM password_resets WHERE user_id = ?", (userId,))
    setPassword(cursor, userId, passwordHash)
    return True


# -- the audit log (SPEC 8.3) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    #: Unix milliseconds
    time: int
    ip: str


def addEvent(cursor: Any, userId: int, kind: str, now: int, ip: str) -> None:
    cursor.execute(
        "INSERT INTO account_events (user_id, type, time, ip) VALUES (?, ?, ?, ?)",
        (userId, kind, now, ip),
    )


def eventsOf(cursor: Any, userId: int, limit: int) -> list[Event]:
    """
    The user's C{limit} latest events, newest first.
    """
    cursor.execute(
        "SELECT type, time, ip FROM account_events WHERE user_id = ? ORDER BY id DESC LIMIT ?",
        (userId, limit),
    )
    return [Event(kind, int(time), ip) for kind, time, ip in cursor.fetchall()]


def forgetEvents(cursor: Any, before: int) -> int:
    """
    Drop the events older than C{before} (Unix milliseconds); how many.
    """
    cursor.execute("DELETE FROM account_events WHERE time < ?", (before,))
    return int(cursor.rowcount)
