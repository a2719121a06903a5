"""The station's configuration file: where it listens, its broker, and its users with their ORs.

Owns: ``StationConfig`` and ``User`` (read from a TOML file, every value checked with a
message naming the file and the key), ``add_user`` (what ``lnm station adduser`` writes)
and ``write_config`` (a small TOML writer for exactly this file's shape).
May import: the standard library, ``app.remote.protocol``/``config``.

Example (``deploy/mosquitto/README.md`` shows the whole set-up)::

    [station]
    listen = "127.0.0.1:8080"          # HTTP; any other address needs tls_cert/tls_key (HTTPS)
    broker_url = "mqtts://broker.hospital.example:8883"
    tls_ca = "/etc/lnm-station/ca.crt"  # CA of the broker's certificate ("" = the system's)
    topic_prefix = "lnm"
    audit_log = "/var/lib/lnm-station/audit.log"
    session_hours = 12

    [users."anna.rossi"]
    name = "Dr Anna Rossi"
    ors = ["or-1", "or-2", "or-3"]
    password_hash = "$argon2id$v=19$..."
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.remote import protocol as rp
from app.remote.config import BrokerAddress, RemoteConfigError, is_loopback

DEFAULT_CONFIG = Path(os.environ.get("LNM_STATION_CONFIG", "/etc/lnm-station/station.toml"))


class StationConfigError(ValueError):
    """The station configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class User:
    """A reader: broker identity = station login = ``username``; ``ors``: the assigned appliances."""

    username: str
    name: str
    ors: tuple[str, ...]
    password_hash: str


@dataclass(frozen=True)
class StationConfig:
    """The checked contents of ``station.toml``."""

    path: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    broker: BrokerAddress = field(default_factory=lambda: BrokerAddress("localhost", 8883, True))
    tls_ca: str = ""
    topic_prefix: str = rp.DEFAULT_PREFIX
    audit_log: Path = Path("audit.log")
    session_hours: float = 12.0
    tls_cert: str = ""
    tls_key: str = ""
    users: dict[str, User] = field(default_factory=dict)

    @property
    def https(self) -> bool:
        return bool(self.tls_cert)


def _str(table: dict[str, Any], key: str, where: str, default: str = "") -> str:
    v = table.get(key, default)
    if not isinstance(v, str):
        raise StationConfigError(f"{where}: {key} must be text")
    return v


def _listen(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise StationConfigError(f"{where}: listen must be HOST:PORT, e.g. 127.0.0.1:8080 (got {text!r})")
    return host.strip("[]"), int(port)


def load(path: str | os.PathLike[str]) -> StationConfig:
    """Read and check ``path`` (errors name the file and the key)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise StationConfigError(f"station configuration {p}: not found (create it with 'lnm station adduser "
                                 f"--config {p} ...')") from None
    except tomllib.TOMLDecodeError as exc:
        raise StationConfigError(f"station configuration {p}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise StationConfigError(f"station configuration {p}: cannot be read ({exc.strerror})") from None
    st = data.get("station", {})
    where = f"station configuration {p}: [station]"
    if not isinstance(st, dict):
        raise StationConfigError(f"{where} must be a table")
    unknown = set(st) - {"listen", "broker_url", "tls_ca", "topic_prefix", "audit_log", "session_hours",
                         "tls_cert", "tls_key"}
    if unknown:
        raise StationConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    host, port = _listen(_str(st, "listen", where, "127.0.0.1:8080"), where)
    try:
        broker = BrokerAddress.parse(_str(st, "broker_url", where, "mqtts://localhost:8883"), f"{where} broker_url")
    except RemoteConfigError as exc:
        raise StationConfigError(str(exc)) from None
    prefix = _str(st, "topic_prefix", where, rp.DEFAULT_PREFIX)
    if not re.fullmatch(rp.PREFIX, prefix):
        raise StationConfigError(f"{where}: topic_prefix {prefix!r} must match {rp.PREFIX}")
    hours = st.get("session_hours", 12)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0.1 <= hours <= 24:
        raise StationConfigError(f"{where}: session_hours (h) must be a number 0.1-24 h")
    cert, key = _str(st, "tls_cert", where), _str(st, "tls_key", where)
    if bool(cert) != bool(key):
        raise StationConfigError(f"{where}: tls_cert and tls_key go together (the HTTPS certificate and its key)")
    audit = Path(_str(st, "audit_log", where, "audit.log"))
    cfg = StationConfig(p, host, port, broker, _str(st, "tls_ca", where), prefix,
                        audit if audit.is_absolute() else p.parent / audit, float(hours), cert, key,
                        _users(data.get("users", {}), p))
    if not cfg.https and not is_loopback(cfg.listen_host):
        raise StationConfigError(f"{where}: listen {host}:{port} is outside this machine: give tls_cert and tls_key "
                                 "(the station serves patients' data only over HTTPS off this machine)")
    return cfg


def _users(table: Any, p: Path) -> dict[str, User]:
    if not isinstance(table, dict):
        raise StationConfigError(f"station configuration {p}: [users] must be a table")
    users = {}
    for name, u in table.items():
        where = f"station configuration {p}: [users.\"{name}\"]"
        if not re.fullmatch(rp.READER_ID, name):
            raise StationConfigError(f"{where}: user names are like anna.rossi (lower case, one dot; "
                                     f"{rp.READER_ID})")
        if not isinstance(u, dict):
            raise StationConfigError(f"{where} must be a table")
        ors = u.get("ors", [])
        if not isinstance(ors, list) or not all(isinstance(o, str) and re.fullmatch(rp.APPLIANCE_ID, o) for o in ors):
            raise StationConfigError(f"{where}: ors must be a list of appliance ids like \"or-1\"")
        h = _str(u, "password_hash", where)
        if not h.startswith("$argon2"):
            raise StationConfigError(f"{where}: password_hash is not an argon2 hash (set it with 'lnm station "
                                     "adduser')")
        users[name] = User(name, _str(u, "name", where, name) or name, tuple(dict.fromkeys(ors)), h)
    return users


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_config(cfg: StationConfig) -> None:
    """Write ``cfg`` to its path (atomically, mode 0600: it holds the password hashes)."""
    host = f"[{cfg.listen_host}]" if ":" in cfg.listen_host else cfg.listen_host
    lines = [
        "# LNM reading station (lnm station). Users are added with 'lnm station adduser'.",
        "[station]",
        f"listen = {_q(f'{host}:{cfg.listen_port}')}",
        f"broker_url = {_q(cfg.broker.url())}",
        f"tls_ca = {_q(cfg.tls_ca)}",
        f"topic_prefix = {_q(cfg.topic_prefix)}",
        f"audit_log = {_q(str(cfg.audit_log))}",
        f"session_hours = {cfg.session_hours:g}",
        f"tls_cert = {_q(cfg.tls_cert)}",
        f"tls_key = {_q(cfg.tls_key)}",
    ]
    for name in sorted(cfg.users):
        u = cfg.users[name]
        lines += ["", f"[users.{_q(name)}]", f"name = {_q(u.name)}",
                  "ors = [" + ", ".join(_q(o) for o in u.ors) + "]", f"password_hash = {_q(u.password_hash)}"]
    tmp = cfg.path.with_name(cfg.path.name + ".tmp")
    cfg.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, cfg.path)


def add_user(path: Path, username: str, name: str, ors: list[str], password_hash: str, *,
             broker_url: str | None = None, tls_ca: str | None = None) -> StationConfig:
    """Add or replace a user in the configuration at ``path`` (created when missing)."""
    if not re.fullmatch(rp.READER_ID, username):
        raise StationConfigError(f"user name {username!r}: use lower case with one dot, like anna.rossi")
    bad = [o for o in ors if not re.fullmatch(rp.APPLIANCE_ID, o)]
    if bad:
        raise StationConfigError(f"OR {bad[0]!r}: appliance ids are lower case letters, digits and -, like or-1")
    cfg = load(path) if Path(path).exists() else StationConfig(Path(path), audit_log=Path(path).parent / "audit.log")
    if broker_url:
        try:
            cfg = replace(cfg, broker=BrokerAddress.parse(broker_url, "--broker"))
        except RemoteConfigError as exc:
            raise StationConfigError(str(exc)) from None
    if tls_ca is not None:
        cfg = replace(cfg, tls_ca=tls_ca)
    users = dict(cfg.users)
    users[username] = User(username, name or username, tuple(dict.fromkeys(ors)), password_hash)
    cfg = replace(cfg, users=users)
    write_config(cfg)
    return cfg
