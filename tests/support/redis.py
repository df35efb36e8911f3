"""
A throwaway C{redis-server} for the cluster tests, one per test.

It listens on a unix socket in the test's directory (and, for the tests that
need an address, on a free TCP port of 127.0.0.1; for the TLS tests, on
another one speaking only TLS, with a certificate from a CA made for the
test), keeps nothing on disk, and is stopped when the test ends. C{stop()} /
C{start()} (the same socket, ports and certificate, empty again, as a
restarted Redis without persistence) and C{freeze()} / C{thaw()}
(C{SIGSTOP} / C{SIGCONT}) make the faults.

Debian's C{redis-server} package must be installed; without it the tests
fail, saying so. They never skip.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INSTALL_HINT = (
    "the cluster tests need Redis: install Debian's redis-server package "
    "(apt-get install redis-server), which provides /usr/bin/redis-server"
)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CertificateAuthority:
    """
    A CA made for one test, and the certificates it signs, as PEM files in
    C{directory}: C{caFile} is what a client trusts.
    """

    def __init__(self, directory: str, name: str = "Socktopus test CA") -> None:
        self.directory = directory
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        # P-256: made in a millisecond, where RSA would take a while per test.
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            self._builder(self.name, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.caFile = self._write(
            "ca.pem", self.certificate.public_bytes(serialization.Encoding.PEM)
        )

    def issue(
        self, names: Sequence[str], stem: str = "server", altNames: bool = True
    ) -> tuple[str, str]:
        """
        A server certificate for C{names} (host names or IP addresses, as
        subject alternative names; the first is also its common name): the
        paths of its PEM file and its key's. Without C{altNames}, only the
        common name names it (as old certificates did).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        alternatives: list[x509.GeneralName] = []
        for name in names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        builder = self._builder(subject, key)
        if altNames:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(alternatives), critical=False
            )
        certificate = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        certFile = self._write(stem + ".pem", certificate.public_bytes(serialization.Encoding.PEM))
        keyFile = self._write(
            stem + ".key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return certFile, keyFile

    def _builder(self, subject: x509.Name, key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            # An hour back: a clock a little behind still takes it as valid.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class RedisServer:
    """
    One C{redis-server} for one test.

    With C{tls}, it also listens on a free port of 127.0.0.1 speaking only
    TLS (C{tlsPort}, C{tlsUrl}), with a certificate for C{tlsNames} signed by
    a CA made for this test (C{ca}; trust C{ca.caFile}); clients need no
    certificate of their own. Without C{tlsAltNames} the certificate names
    C{tlsNames[0]} in its common name only.
    """

    def __init__(
        self,
        testCase: Any,
        tcp: bool = False,
        password: str | None = None,
        tls: bool = False,
        tlsNames: Sequence[str] = ("localhost", "127.0.0.1"),
        tlsAltNames: bool = True,
    ) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            testCase.fail(INSTALL_HINT)
        # A unix socket path is at most 107 bytes, shorter than trial's
        # temporary directories: a short one of its own.
        self.directory = tempfile.mkdtemp(prefix="redis-")
        testCase.addCleanup(shutil.rmtree, self.directory, ignore_errors=True)
        self.socket = os.path.join(self.directory, "r.sock")
        self.port = freePort() if tcp else 0
        self.password = password
        self.tlsPort = 0
        self.ca: CertificateAuthority | None = None
        self.tlsArguments: list[str] = []
        if tls:
            # Two free ports asked one after the other may be the same one.
            while self.tlsPort in (0, self.port):
                self.tlsPort = freePort()
            self.ca = CertificateAuthority(self.directory)
            certFile, keyFile = self.ca.issue(tlsNames, altNames=tlsAltNames)
            self.tlsArguments = [
                "--tls-port",
                str(self.tlsPort),
                "--tls-cert-file",
                certFile,
                "--tls-key-file",
                keyFile,
                "--tls-ca-cert-file",
                self.ca.caFile,
                "--tls-auth-clients",
                "no",
            ]
        self.process: subprocess.Popen | None = None
        self.start()
        testCase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        return f"redis+unix://{self.socket}"

    @property
    def tcpUrl(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def tlsUrl(self) -> str:
        return f"rediss://localhost:{self.tlsPort}"

    def start(self) -> None:
        """
        Start (again, empty), and return once it accepts connections.
        """
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--unixsocket",
                self.socket,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--loglevel",
                "notice",
                "--daemonize",
                "no",
                *(["--requirepass", self.password] if self.password else []),
                *self.tlsArguments,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Redis says when it is ready: read its log until then (no sleep).
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            if "ready to accept connections" in line.lower():
                break
        else:
            raise RuntimeError("redis-server did not start:\n" + "".join(seen[-10:]))
        # Its later log lines are not read: let them go nowhere.
        self.process.stdout.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()
            self.process.wait()
        self.process = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    def freeze(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def command(self, *words: str) -> bytes:
        """
        One command, answered raw (a test peeking at the cluster's keys).
        """
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.socket)
            encoded = [w.encode() for w in words]
            s.sendall(
                b"*%d\r\n" % len(encoded)
                + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)
            )
            return s.recv(1 << 20)
