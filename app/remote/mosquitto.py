"""A local Mosquitto broker for the demonstration, the tests and the benchmark.

Owns: ``Mosquitto`` (writes a configuration like ``deploy/mosquitto/mosquitto.conf``:
no anonymous clients, a password file, the ACL, optionally TLS and a second TLS listener
that authenticates appliances by client certificate; starts ``mosquitto`` on free
loopback ports, waits until it listens, stops, kills and restarts it) and
``throwaway_ca`` (a CA, a server certificate for localhost and client certificates,
made with the ``openssl`` command, for tests and demonstrations only).
May import: the standard library.

On the appliance's hospital network the broker is installed and run as a service (see
``deploy/mosquitto/README.md``); nothing here is used there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """The broker could not be started; the message says why (and what it printed)."""


def find_mosquitto() -> str | None:
    """The ``mosquitto`` program, or None when it is not installed."""
    for p in MOSQUITTO_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mosquitto")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A CA certificate and the broker's certificate and key signed by it."""

    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()[-400:]}")


def throwaway_ca(folder: Path, clients: tuple[str, ...] = (),
                 days: int = 2) -> tuple[TlsFiles, dict[str, tuple[Path, Path]]]:
    """A fresh CA in ``folder``, a server certificate for localhost/127.0.0.1 and one client
    certificate per name in ``clients`` (CN = the name). Returns the broker's files and
    ``{name: (cert, key)}``. For tests and demonstrations only: the keys are not protected."""
    if shutil.which("openssl") is None:
        raise BrokerError("the openssl command is not installed (Debian package openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days",
             str(days), "-subj", "/CN=LNM throwaway CA", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def signed(name: str, cn: str, ext: bool) -> tuple[Path, Path]:
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
                 f"/CN={cn}", cwd=folder)
        extra = ["-extfile", "san.cnf"] if ext else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", str(days), *extra, cwd=folder)
        return folder / f"{name}.crt", folder / f"{name}.key"

    cert, key = signed("server", "localhost", True)
    issued = {c: signed(f"client-{c}", c, False) for c in clients}
    return TlsFiles(folder / "ca.crt", cert, key), issued


class Mosquitto:
    """One broker process on free loopback ports (see the module docstring)."""

    def __init__(self, folder: Path, *, password_file: Path, acl_file: Path, tls: TlsFiles | None = None,
                 cert_listener: bool = False, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.password_file = password_file
        self.acl_file = acl_file
        self.tls = tls
        self.port = port or free_port()
        self.cert_port = free_port() if (cert_listener and tls is not None) else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.folder / "mosquitto.log"
        self.conf_path = self.folder / "mosquitto.conf"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://localhost:{self.port}"

    @property
    def cert_url(self) -> str | None:
        return None if self.cert_port is None else f"mqtts://localhost:{self.cert_port}"

    def _config(self) -> str:
        lines = [
            "# written by app.remote.mosquitto (a test or demonstration broker)",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # the files are in the test's private folder
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
                      "tls_version tlsv1.2"]
        if self.cert_port is not None and self.tls is not None:
            lines += [f"listener {self.cert_port} 127.0.0.1", f"cafile {self.tls.ca}", f"certfile {self.tls.cert}",
                      f"keyfile {self.tls.key}", "tls_version tlsv1.2", "require_certificate true",
                      "use_identity_as_username true"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed (Debian package mosquitto; 'make run' installs it)")
        self.conf_path.write_text(self._config())
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.cert_port) if p is not None]
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start ({self.proc.returncode}): {err.strip()[-500:]} "
                                  f"{self.log_text()[-500:]}")
            if all(_listening(p) for p in ports):
                return self
            time.sleep(0.05)
        self.kill()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout} s: {self.log_text()[-500:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as if its machine died (retained messages are lost too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def reload(self) -> None:
        """SIGHUP: the broker reads its password file and ACL again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
