"""
A throwaway MariaDB server for the tests that need a real MySQL database.

C{server()} starts one C{mariadbd} per test process, lazily, on first call,
and C{atexit} stops it and deletes its files.  Under C{trial --jobs=N} every
worker process starts its own: the data directory, unix socket, pid file,
log and TCP port all belong to one C{tempfile.mkdtemp()} directory, so
workers never collide.

Everything here is synchronous (blocking) on purpose.  Tests call it from
the reactor thread at set-up time: the first C{server()} takes a second or
two, once per process, before any test uses the database.  C{stop()} and
C{start()} called in the middle of a test (to simulate an outage and a
restart of the same server, on the same port and data) block the reactor
for the few seconds they take, which is acceptable for that kind of test.

Debian's C{mariadb-server} package must be installed (it provides
C{/usr/sbin/mariadbd} and C{/usr/bin/mariadb-install-db}); without it the
tests that need a server fail, with a message saying so.  They never skip.

Usage::

    from tests.support.mariadb import server

    db = server()
    name = db.createDatabase()
    self.addCleanup(db.dropDatabase, name)
    url = db.url(name)          # mysql://socktopus:...@127.0.0.1:PORT/NAME
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any
from urllib.parse import quote

import pymysql

__all__ = ["MariaDB", "MariaDBError", "closeConnectionsTo", "server"]

INSTALL_HINT = (
    "the MySQL tests need a MariaDB server: install Debian's mariadb-server "
    "package (apt-get install mariadb-server), which provides {missing}"
)

# How long the server may take to accept connections, and to shut down.
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

USER = "socktopus"

# Options for a small, fast, disposable server.  Durability does not matter:
# a crash loses the test run anyway.
SERVER_OPTIONS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--innodb-log-buffer-size=2M",
    "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--skip-log-bin",
    "--performance-schema=OFF",
    "--key-buffer-size=1M",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
)


class MariaDBError(RuntimeError):
    """
    The server could not be installed, started, stopped or used.
    """


def _findProgram(name: str) -> str:
    """
    The path of C{name}, also looking in the sbin directories a non-root
    C{PATH} may lack; a L{MariaDBError} naming the package if not found.
    """
    path = os.pathsep.join(
        [
            os.environ.get("PATH", os.defpath),
            "/usr/sbin",
            "/usr/local/sbin",
            "/sbin",
        ]
    )
    found = shutil.which(name, path=path)
    if found is None:
        raise MariaDBError(INSTALL_HINT.format(missing=name) + f" ({name} was not found)")
    return found


def _freePort() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _portOpen(port: int) -> bool:
    """
    Whether something accepts TCP connections on 127.0.0.1:C{port}.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _dieWithParent() -> None:
    """
    In the child, before exec: ask Linux to SIGTERM it when the process
    that started it dies, so a killed trial worker leaves no orphan server.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


class MariaDB:
    """
    One private C{mariadbd}: its own directory, unix socket and TCP port on
    127.0.0.1, and a user C{socktopus} with a random password and all
    privileges (it may create and drop databases).

    @ivar port: the TCP port, the same across L{stop} and L{start}.
    @ivar socketPath: the unix socket's path.
    @ivar user: the user tests connect as.
    @ivar password: its password.
    @ivar directory: the temporary directory holding everything.
    @ivar logPath: the server's output (and that of mariadb-install-db).
    """

    def __init__(self) -> None:
        self.mariadbd = _findProgram("mariadbd")
        self.installDb = _findProgram("mariadb-install-db")
        self.systemUser = pwd.getpwuid(os.getuid()).pw_name
        self.directory = tempfile.mkdtemp(prefix="socktopus-mariadb-")
        self.dataDirectory = os.path.join(self.directory, "data")
        self.socketPath = os.path.join(self.directory, "mysqld.sock")
        self.pidPath = os.path.join(self.directory, "mysqld.pid")
        self.logPath = os.path.join(self.directory, "mariadbd.log")
        self.temporaryDirectory = os.path.join(self.directory, "tmp")
        os.mkdir(self.temporaryDirectory)
        if len(os.fsencode(self.socketPath)) >= 100:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise MariaDBError(
                f"the unix socket path {self.socketPath!r} is too long for the kernel: "
                "set TMPDIR to a shorter directory"
            )
        self.port = 0
        self.user = USER
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._destroyed = False

    # Life cycle

    def setUp(self) -> None:
        """
        Create the data directory, start the server on a free port and
        create the C{socktopus} user.  Called once, by L{server}.
        """
        self._run(
            [
                self.installDb,
                "--no-defaults",
                f"--datadir={self.dataDirectory}",
                # Not the shared /tmp: concurrent bootstraps there have been
                # seen to fail on each other's temporary tables.
                f"--tmpdir={self.temporaryDirectory}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                f"--user={self.systemUser}",
                *SERVER_OPTIONS,
            ]
        )
        # Another process may take the port between our probe and the
        # server's bind: try a few ports before giving up.
        for attempt in range(3):
            self.port = _freePort()
            try:
                self._startServer(rootUser=True)
            except MariaDBError as e:
                if attempt < 2 and "already in use" in str(e):
                    continue
                raise
            break
        connection = self._connectAsRoot()
        try:
            with connection.cursor() as cursor:
                for host in ("localhost", "%"):
                    account = (self.user, host)
                    cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (*account, self.password))
                    cursor.execute(
                        "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", account
                    )
                # root gets the same password: nothing logs in without one.
                cursor.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self.password,))
        finally:
            connection.close()

    def start(self) -> None:
        """
        Start the server again after L{stop}, on the same port and data, and
        return when it accepts connections.  Does nothing if it is running.
        """
        self._checkUsable()
        if self.running:
            return
        self._startServer(rootUser=False)

    def stop(self) -> None:
        """
        Shut the server down (SIGTERM, a clean shutdown) and return when it
        has exited and its port is closed.  Does nothing if it is stopped.
        """
        process = self.process
        if process is None:
            return
        self.process = None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise MariaDBError(
                    f"mariadbd did not stop within {STOP_TIMEOUT:.0f} s and was killed"
                    + self._logTail()
                ) from None
        # The kernel closes a process's listening sockets when it exits.
        if self.port and _portOpen(self.port):
            raise MariaDBError(
                f"port {self.port} is still open after mariadbd exited" + self._logTail()
            )

    def destroy(self) -> None:
        """
        Stop the server and delete its directory; the object is then
        unusable.  Registered with C{atexit} by L{server}.
        """
        if self._destroyed:
            return
        self._destroyed = True
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def running(self) -> bool:
        """
        Whether the server process is alive.
        """
        return self.process is not None and self.process.poll() is None

    # Addresses

    def url(self, database: str) -> str:
        """
        C{mysql://USER:PASSWORD@127.0.0.1:PORT/DATABASE}: over TCP.
        """
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(database, safe='')}"
        )

    def socketUrl(self, database: str) -> str:
        """
        C{mysql://USER:PASSWORD@localhost/DATABASE?unix_socket=PATH}: over
        the unix socket.
        """
        return (
            f"mysql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@localhost/{quote(database, safe='')}"
            f"?unix_socket={quote(self.socketPath, safe='/')}"
        )

    def connect(
        self, database: str | None = None, *, tcp: bool = False, **arguments: Any
    ) -> pymysql.connections.Connection:
        """
        A new blocking PyMySQL connection as L{user} (autocommit on), over
        the unix socket or, with C{tcp=True}, to 127.0.0.1:L{port}.  The
        caller closes it.
        """
        where: dict[str, Any] = (
            {"host": "127.0.0.1", "port": self.port} if tcp else {"unix_socket": self.socketPath}
        )
        options: dict[str, Any] = {
            "user": self.user,
            "password": self.password,
            "database": database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": 5,
        }
        options.update(arguments)
        return pymysql.connect(**where, **options)

    # Databases

    def createDatabase(self, prefix: str = "t") -> str:
        """
        Create a new, empty database (utf8mb4) with a name no other call,
        in this or another process, returns; return its name.
        """
        if not re.fullmatch(r"[A-Za-z0-9_]{1,30}", prefix):
            raise ValueError(f"database prefix {prefix!r}: use up to 30 letters, digits or _")
        name = f"{prefix}_{os.getpid()}_{next(self._names)}_{secrets.token_hex(3)}"
        self._execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return name

    def dropDatabase(self, name: str) -> None:
        """
        Drop a database if it exists.
        """
        self._execute(f"DROP DATABASE IF EXISTS `{name.replace('`', '``')}`")

    # Internals

    def _execute(self, statement: str) -> None:
        self._checkUsable()
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

    def _checkUsable(self) -> None:
        if self._destroyed:
            raise MariaDBError("this MariaDB server has been destroyed")

    def _run(self, command: list[str]) -> None:
        """
        Run a command to completion, its output appended to the log.
        """
        with open(self.logPath, "ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                check=False,
            )
        if result.returncode != 0:
            raise MariaDBError(
                f"{os.path.basename(command[0])} failed with exit code {result.returncode}"
                + self._logTail()
            )

    def _startServer(self, *, rootUser: bool) -> None:
        """
        Start mariadbd and wait until it accepts connections: as root with
        no password on the first start, as L{user} afterwards.
        """
        command = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.dataDirectory}",
            f"--socket={self.socketPath}",
            f"--pid-file={self.pidPath}",
            f"--tmpdir={self.temporaryDirectory}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--user={self.systemUser}",
            *SERVER_OPTIONS,
        ]
        inMainThread = threading.current_thread() is threading.main_thread()
        notifyPath = os.path.join(self.directory, "notify.sock")
        if os.path.exists(notifyPath):
            os.remove(notifyPath)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notifyPath)
        with notify, open(self.logPath, "ab") as log:
            log.write(f"\n$ {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,
                env=dict(os.environ, NOTIFY_SOCKET=notifyPath),
                # The parent-death signal follows the thread that forked:
                # only ask for it from the main thread, which lives as long
                # as the process.
                preexec_fn=_dieWithParent if inMainThread else None,
            )
            try:
                self._waitUntilReady(rootUser, notify)
            except BaseException:
                self._killProcess()
                raise

    def _waitUntilReady(self, rootUser: bool, notify: socket.socket) -> None:
        """
        Wait for mariadbd's own word that it is ready: like under systemd's
        Type=notify, it sends READY=1 to the datagram socket in NOTIFY_SOCKET.
        The select() wakes at once for it; its timeout only bounds how late a
        crashed server is noticed.
        """
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.process is not None
        while True:
            code = self.process.poll()
            if code is not None:
                raise MariaDBError(
                    f"mariadbd exited with code {code} while starting" + self._logTail()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MariaDBError(
                    f"mariadbd did not say it was ready within {READY_TIMEOUT:.0f} s"
                    + self._logTail()
                )
            readable, _, _ = select.select([notify], [], [], min(remaining, 1.0))
            if readable and b"READY=1" in notify.recv(4096):
                break
        # Ready by its own account; one connection proves the credentials.
        connection = self._connectAsRoot() if rootUser else self.connect()
        connection.close()

    def _connectAsRoot(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=self.socketPath,
            user="root",
            password="",
            autocommit=True,
            connect_timeout=5,
        )

    def _killProcess(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def _logTail(self, size: int = 4000) -> str:
        """
        The end of the server's log, to append to an error message.
        """
        try:
            with open(self.logPath, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - size))
                tail = log.read().decode("utf-8", "replace")
        except OSError as e:
            return f"\n(no log at {self.logPath}: {e})"
        return f"\n--- last lines of {self.logPath} ---\n{tail}"


_lock = threading.Lock()
_server: MariaDB | None = None
_failure: str | None = None
startupSeconds: float | None = None


def server() -> MariaDB:
    """
    This process's MariaDB server, started on the first call (blocking for
    the second or so it takes) and stopped, its files deleted, at exit.

    If starting it failed, later calls fail at once with the same message
    rather than each waiting again.
    """
    global _server, _failure, startupSeconds
    with _lock:
        if _server is not None:
            return _server
        if _failure is not None:
            raise MariaDBError(f"the MariaDB server failed to start earlier: {_failure}")
        began = time.monotonic()
        try:
            instance = MariaDB()
        except MariaDBError as e:
            _failure = str(e)
            raise
        atexit.register(instance.destroy)
        try:
            instance.setUp()
        except BaseException as e:
            _failure = str(e)
            instance.destroy()
            raise
        startupSeconds = time.monotonic() - began
        _server = instance
        return instance


def closeConnectionsTo(database: str) -> int:
    """
    Make the MariaDB server close every connection using C{database}, as it
    does to idle connections after C{wait_timeout} (8 hours by default) or
    when a proxy or failover drops them; return how many it closed.
    """
    admin = server().connect()
    try:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT ID FROM information_schema.PROCESSLIST"
                " WHERE DB = %s AND ID <> CONNECTION_ID()",
                (database,),
            )
            ids = [row[0] for row in cursor.fetchall()]
            for connectionId in ids:
                cursor.execute(f"KILL CONNECTION {int(connectionId)}")
    finally:
        admin.close()
    return len(ids)
