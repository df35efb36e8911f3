# -*- test-case-name: tests.accounts.test_api,tests.accounts.test_faults -*-
"""
The accounts domain: what each endpoint of SPEC §4 does, with no HTTP in it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet.defer import DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from socktopus_tw.accounts import store
from socktopus_tw.accounts.headers import WINDOW, ReplayGuard, SignedRequest
from socktopus_tw.accounts.mail import Mailer
from socktopus_tw.accounts.passwords import HashCosts, Passwords
from socktopus_tw.accounts.recaptcha import Recaptcha
from socktopus_tw.accounts.rules import checkEmail, checkPassword, checkUserName
from socktopus_tw.accounts.sessions import Session, Sessions
from socktopus_tw.accounts.throttle import LoginThrottle
from socktopus_tw.apps import Apps
from socktopus_tw.db import Conflict, Database, Unreachable
from socktopus_tw.errors import (
    AccountsError,
    BadRequest,
    NotAuthorized,
    Unavailable,
    UserNameTaken,
    WrongCredentials,
)
from socktopus_tw.metrics import Metrics
from socktopus_tw.relay.tokens import makeToken

log = Logger()
T = TypeVar("T")

#: Seconds a count of the stored hashes' costs is used before it is made
#: again: other daemons on the database register and rehash users too.
COSTS_LIFE = 600
#: Seconds before a count the database did not answer is tried again.
COSTS_RETRY = 30
#: Milliseconds a password reset code is valid (SPEC §8.2).
RESET_LIFE = 60 * 60 * 1000
#: Events a user's audit log answers by default, and at most (SPEC §8.3).
EVENTS_DEFAULT = 50
EVENTS_MOST = 500


class WrongSecret(AccountsError):
    status = 401
    message = "User and secret combination incorrect"


class BadRegistrationCode(AccountsError):
    status = 400
    message = "Invalid or used registration code"


class BadResetCode(AccountsError):
    status = 400
    message = "Invalid or expired code"


class AppNotFound(AccountsError):
    status = 404
    message = "App not found"


class Accounts:
    """
    Users, their passwords, sessions and signed requests.

    @ivar mailer: mails registration and reset links; when None, users are
        registered as soon as they are created, and cannot reset passwords.
    @ivar recaptcha: checks registrations; when None, there is no check.
    @ivar throttle: counts failed logins and refuses guessing (SPEC §8.1);
        when None, there is no throttling.
    @ivar apps: the relay's apps, for relay tokens (SPEC §8.4).
    @ivar auditRetention: seconds an audit event is kept (SPEC §8.3).
    """

    def __init__(
        self,
        database: Database,
        passwords: Passwords,
        clock: IReactorTime,
        publicUrl: str = "http://localhost:8080",
        mailer: Mailer | None = None,
        recaptcha: Recaptcha | None = None,
        registeredRedirect: str = "/",
        metrics: Metrics | None = None,
        throttle: bool = True,
        apps: Apps | None = None,
        auditRetention: float = 90 * 86400,
    ) -> None:
        self.database = database
        self.passwords = passwords
        self.clock = clock
        self.sessions = Sessions(database, clock)
        self.replays = ReplayGuard()
        # When the seen_headers rows out of the window are next dropped.
        self._forgetDue = 0.0
        self.hashCosts = HashCosts()
        self._costsDue = 0.0
        self._counting = DeferredLock()
        self.publicUrl = publicUrl.rstrip("/")
        self.mailer = mailer
        self.recaptcha = recaptcha
        self.registeredRedirect = registeredRedirect
        self.metrics = metrics
        self.throttle = LoginThrottle(database, clock) if throttle else None
        self.apps = apps if apps is not None else Apps({})
        self.auditRetention = auditRetention

    async def _db(self, f: Callable[..., T], *arguments: Any) -> T:
        try:
            return await self.database.run(f, *arguments)
        except Unreachable:
            raise Unavailable() from None

    async def _guarded(self, work: Awaitable[T]) -> T:
        try:
            return await work
        except Unreachable:
            raise Unavailable() from None

    def _now(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def _record(self, userId: int, kind: str, ip: str | None) -> None:
        """
        Add an event to the user's audit log (SPEC §8.3).
        """
        await self._db(store.addEvent, userId, kind, self._now(), ip or "")

    # -- registration ----------------------------------------------------

    async def register(
        self,
        name: str,
        password: str,
        email: str,
        recaptchaAnswer: str,
        remoteIp: str | None = None,
    ) -> int:
        checkUserName(name)
        checkPassword(password)
        checkEmail(email)
        # Cheap refusals first: no bcrypt or reCAPTCHA call for a taken name.
        if await self._db(store.userNamed, name) is not None:
            raise UserNameTaken()
        if self.recaptcha is not None:
            await self.recaptcha.check(recaptchaAnswer, remoteIp)
        hashed = await self.passwords.hash(password)
        code = secrets.token_hex(32) if self.mailer is not None else None
        try:
            userId = await self._db(
                store.addUser, name, email, hashed, code, int(self.clock.seconds())
            )
        except Conflict:
            # Lost a race with another registration of the same name.
            raise UserNameTaken() from None
        self.hashCosts.changed(None, hashed)
        if self.mailer is not None and code is not None:
            link = f"{self.publicUrl}/users/{userId}/register?code={code}"
            try:
                await self.mailer.sendRegistration(email, name, link)
            except Unavailable:
                # No half-made user: the name is free again, the user can retry.
                await self._db(store.removeUser, userId)
                raise
        await self._record(userId, "register", remoteIp)
        if self.mailer is None:
            await self._record(userId, "registered", remoteIp)
        log.info("Registered user {name} as {userId}", name=name, userId=userId)
        return userId

    async def completeRegistration(self, userId: int, code: str, ip: str | None = None) -> None:
        if not await self._db(store.completeRegistration, userId, code):
            log.info("Refused registration code for user {userId}", userId=userId)
            raise BadRegistrationCode()
        self.sessions.registered(userId)
        await self._record(userId, "registered", ip)
        log.info("User {userId} completed registration", userId=userId)

    # -- passwords and secrets -------------------------------------------

    async def _checkPassword(self, name: str, password: str, ip: str | None) -> store.User:
        """
        The user whose name and password these are, or L{WrongCredentials};
        or, while the name and C{ip} (or C{ip} alone) wait for too many
        failures, L{TooManyAttempts} without a bcrypt check.
        """
        nameKey = name.lower() if checkNameQuietly(name) else None
        if self.throttle is not None:
            try:
                await self._guarded(self.throttle.check(nameKey, ip or ""))
            except AccountsError as e:
                if e.status == 429:
                    log.info("Throttled login for {name!r} from {ip}", name=name[:64], ip=ip)
                raise
        user = None
        if nameKey is not None:
            user = await self._db(store.userNamed, name)
        # Unknown users cost a bcrypt check too, of the cost most stored
        # hashes have: same answer, same steps, same time.
        await self._knowCosts()
        matches = await self.passwords.check(password, user.passwordHash if user else None)
        if user is None or not matches:
            log.info("Failed login for {name!r}", name=name[:64])
            if self.metrics is not None:
                self.metrics.logins.labels("failed").inc()
            throttled = False
            if self.throttle is not None:
                throttled = await self._guarded(self.throttle.failed(nameKey, ip or ""))
            if user is not None:
                await self._record(user.id, "loginFailed", ip)
                if throttled:
                    await self._record(user.id, "throttled", ip)
            raise WrongCredentials()
        if self.throttle is not None and nameKey is not None:
            await self._guarded(self.throttle.succeeded(nameKey, ip or ""))
        return user

    async def _knowCosts(self) -> None:
        """
        Count the stored hashes by cost when the last count is old, and have
        unknown users' checks cost what most of them cost. One count at a
        time; logins meanwhile wait for it, known and unknown users alike.
        """
        await self._counting.acquire()
        try:
            now = self.clock.seconds()
            if now < self._costsDue:
                return
            try:
                self.hashCosts.counted(await self._db(store.passwordCosts))
            except Unavailable:
                # The last count (or the current cost) until it answers.
                self._costsDue = now + COSTS_RETRY
            else:
                self._costsDue = now + COSTS_LIFE
            await self._expectCommonCost()
        finally:
            self._counting.release()

    async def _expectCommonCost(self) -> None:
        await self.passwords.expectCost(self.hashCosts.mostCommon(self.passwords.rounds))

    async def _upgradeHash(self, user: store.User, password: str) -> None:
        """
        After a successful login, store the password hashed at the current
        cost if it was hashed at another (C{--bcrypt-rounds} changed).
        """
        if not self.passwords.needsRehash(user.passwordHash):
            return
        hashed = await self.passwords.hash(password)
        try:
            replaced = await self._db(store.rehashPassword, user.id, user.passwordHash, hashed)
        except Unavailable:
            # Logged in all the same; the next login tries again.
            return
        if replaced:
            self.hashCosts.changed(user.passwordHash, hashed)
            await self._expectCommonCost()
            log.info("Rehashed the password of user {userId} at the current cost", userId=user.id)

    async def login(
        self, name: str, password: str, stayLoggedIn: bool, ip: str | None = None
    ) -> Session:
        user = await self._checkPassword(name, password, ip)
        session = await self._guarded(self.sessions.open(user.id, user.registered, stayLoggedIn))
        await self._upgradeHash(user, password)
        await self._record(user.id, "login", ip)
        log.info("User {userId} logged in", userId=user.id)
        if self.metrics is not None:
            self.metrics.logins.labels("ok").inc()
        return session

    async def verifySecret(self, name: str, secret: str) -> Session:
        user = await self._db(store.userNamed, name) if checkNameQuietly(name) else None
        session = await self._guarded(self.sessions.find(user.id)) if user else None
        if session is None or not _same(session.secret, secret):
            log.info("Failed secret check for {name!r}", name=name[:64])
            raise WrongSecret()
        await self._guarded(self.sessions.extend(session))
        return session

    async def changePassword(
        self, name: str, password: str, newPassword: str, ip: str | None = None
    ) -> None:
        checkPassword(newPassword)
        user = await self._checkPassword(name, password, ip)
        hashed = await self.passwords.hash(newPassword)
        await self.sessions.revoke(user.id, self._db(store.setPassword, user.id, hashed))
        self.hashCosts.changed(user.passwordHash, hashed)
        await self._record(user.id, "passwordChanged", ip)
        log.info("User {userId} changed password; sessions ended", userId=user.id)

    async def logout(self, session: Session, ip: str | None = None) -> None:
        await self._guarded(self.sessions.close(session.userId))
        await self._record(session.userId, "logout", ip)
        log.info("User {userId} logged out", userId=session.userId)

    # -- password reset (SPEC §8.2) --------------------------------------

    async def requestReset(self, name: str | None, email: str | None, ip: str | None) -> None:
        """
        Mail a reset link to the user named C{name}, or to each user of
        C{email}. The same answer, and the same time, whether or not there
        is such a user: the code is stored and mailed after the answer.
        """
        if self.mailer is None:
            raise Unavailable()
        # One query either way; the rest (a code stored, a mail) after the answer.
        if name is not None:
            user = await self._db(store.userNamed, name) if checkNameQuietly(name) else None
            userIds = [user.id] if user is not None else []
        else:
            userIds = await self._db(store.usersWithEmail, email or "")
        for userId in userIds:
            self._background(self._mailReset(userId, ip), "mail a reset link to user", userId)

    def _background(self, work: Awaitable[None], what: str, userId: int) -> None:
        async def logged() -> None:
            try:
                await work
            except Exception as e:
                log.warn("Could not {what} {userId}: {error}", what=what, userId=userId, error=e)

        ensureDeferred(logged())

    async def _mailReset(self, userId: int, ip: str | None) -> None:
        assert self.mailer is not None
        user = await self._db(store.userWithId, userId)
        if user is None:
            return
        code = secrets.token_hex(32)
        await self._db(store.saveResetCode, user.id, _hashCode(code), self._now() + RESET_LIFE)
        await self._record(user.id, "resetRequested", ip)
        link = f"{self.publicUrl}/users/{user.id}/reset?code={code}"
        await self.mailer.sendReset(user.email, user.name, link)
        log.info("Mailed a password reset link to user {userId}", userId=user.id)

    async def confirmReset(
        self, userId: int, code: str, newPassword: str, ip: str | None = None
    ) -> None:
        """
        Set a new password with a mailed code: once, within the hour; every
        session of the user ends.
        """
        checkPassword(newPassword)
        codeHash = _hashCode(code)
        # Checked before bcrypt: a wrong code costs no hash.
        if not await self._db(store.resetCodeValid, userId, codeHash, self._now()):
            log.info("Refused a password reset code for user {userId}", userId=userId)
            raise BadResetCode()
        hashed = await self.passwords.hash(newPassword)
        done = await self.sessions.revoke(
            userId, self._db(store.resetPassword, userId, codeHash, self._now(), hashed)
        )
        if not done:
            raise BadResetCode()  # used meanwhile, by another request
        self.hashCosts.changed(None, hashed)
        await self._record(userId, "passwordReset", ip)
        log.info("User {userId} reset password; sessions ended", userId=userId)

    # -- the audit log (SPEC §8.3) ---------------------------------------

    async def events(self, session: Session, userId: int, limit: int) -> list[store.Event]:
        if session.userId != userId:
            raise NotAuthorized()
        return await self._db(store.eventsOf, userId, limit)

    async def forgetOld(self) -> None:
        """
        Delete the audit events past retention and the failed-login counts
        that would start again anyway.
        """
        before = self._now() - int(self.auditRetention * 1000)
        forgotten = await self._db(store.forgetEvents, before)
        if forgotten:
            log.info("Deleted {count} audit events past retention", count=forgotten)
        if self.throttle is not None:
            await self._guarded(self.throttle.forgetOld())

    # -- relay tokens (SPEC §8.4) ----------------------------------------

    def relayToken(self, session: Session, app: str) -> tuple[str, str]:
        """
        A relay token for the signed-in user, as C{user:<id>}, and that id.
        """
        if not self.apps.givesUserTokens(app):
            raise AppNotFound()
        connectionId = f"user:{session.userId}"
        token = makeToken(app.lower(), self.apps.secretFor(app), connectionId, self._now())
        return token, connectionId

    # -- signed requests -------------------------------------------------

    async def authenticate(
        self, signed: SignedRequest, requestedPath: str | None, allowUnregistered: bool = False
    ) -> Session:
        """
        Check Auth Headers. C{requestedPath} is the path the request was
        sent to, or None where the headers are checked for another service.
        """
        now = self.clock.seconds()
        try:
            signed.checkTime(now)
            if requestedPath is not None and signed.path != requestedPath:
                raise NotAuthorized()
            session = await self._guarded(self.sessions.find(signed.userId))
            if session is None or not (session.registered or allowUnregistered):
                raise NotAuthorized()
            signed.checkSignature(session.secret)
            # Refused here without a query if this process saw them already.
            self.replays.accept(signed, now)
            await self._acceptOnce(signed, now)
        except NotAuthorized:
            log.info(
                "Refused Auth Headers of user {userId} for {path!r}",
                userId=signed.userId,
                path=signed.path[:200],
            )
            raise
        await self._guarded(self.sessions.extend(session))
        return session

    async def _acceptOnce(self, signed: SignedRequest, now: float) -> None:
        """
        Record C{signed} in the database, or refuse it as a replay: headers
        this daemon accepted before a restart, or another daemon on the same
        database accepted, are refused too. The rows whose headers the time
        check refuses anyway are dropped every L{WINDOW} seconds, in a
        transaction of their own (see L{store.acceptHeaders}).
        """
        try:
            if now >= self._forgetDue:
                await self.database.run(store.forgetHeaders, int(now) - WINDOW - 1)
                self._forgetDue = now + WINDOW
            await self.database.run(
                store.acceptHeaders, int(signed.timeSent), signed.userId, signed.mac
            )
        except Conflict:
            raise NotAuthorized() from None
        except Unreachable:
            # Not recorded, so not used: the client may send them again.
            self.replays.release(signed)
            raise Unavailable() from None

    async def isRegistered(self, userId: int) -> bool:
        user = await self._db(store.userWithId, userId)
        return user is not None and user.registered

    async def ids(self, names: list[str]) -> tuple[dict[str, int], dict[str, str]]:
        valid = [name for name in names if checkNameQuietly(name)]
        found = await self._db(store.idsNamed, valid) if valid else {}
        ids, errors = {}, {}
        for name in names:
            if name.lower() in found and checkNameQuietly(name):
                ids[name] = found[name.lower()]
            else:
                errors[name] = "User not found"
        return ids, errors


def _hashCode(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest()


def checkNameQuietly(name: str) -> bool:
    try:
        checkUserName(name)
    except BadRequest:
        return False
    return True


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )
