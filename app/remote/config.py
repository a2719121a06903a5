"""The ``[remote]`` settings as one checked object, and the broker connection they describe.

Owns: ``RemoteConfig`` (from ``app.settings.Settings``), ``BrokerAddress`` (parsing
``mqtt://`` and ``mqtts://`` URLs), reading the password file, and configuring a paho
client's TLS and credentials (``configure_client``), shared with the reading station.
May import: the standard library, ``paho-mqtt``, ``app.settings``, ``app.remote.protocol``.

TLS outside loopback: the settings schema already refuses a plain ``mqtt://`` URL to any
host but this machine; ``BrokerAddress.parse`` refuses it again for URLs that come from
elsewhere (the station's configuration, the command line).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping
from urllib.parse import urlsplit

from app.remote.protocol import DEFAULT_PREFIX, Topics


class RemoteConfigError(ValueError):
    """A remote setting or file cannot be used; the message names it and says why."""


LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (where plain MQTT and HTTP are allowed)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens and whether the connection uses TLS."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str, what: str = "broker URL") -> BrokerAddress:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise RemoteConfigError(f"{what} {url!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise RemoteConfigError(f"{what} {url!r}: must be mqtts://HOST[:PORT] (or mqtt://localhost[:PORT])")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise RemoteConfigError(f"{what} {url!r}: no path, query or user name in the URL (credentials are "
                                    "given in files)")
        tls = parts.scheme == "mqtts"
        host = parts.hostname
        if not tls and not is_loopback(host):
            raise RemoteConfigError(f"{what} {url!r}: a broker outside this machine needs TLS: use mqtts://")
        return cls(host, port or (8883 if tls else 1883), tls)

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def read_secret(path: str | Path, what: str) -> str:
    """The first line of a secret file (a password), refusing an empty or unreadable file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RemoteConfigError(f"{what} {p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RemoteConfigError(f"{what} {p}: cannot be read ({exc})") from None
    line = text.splitlines()[0].strip() if text.strip() else ""
    if not line:
        raise RemoteConfigError(f"{what} {p}: the file is empty")
    return line


@dataclass(frozen=True)
class RemoteConfig:
    """What the publisher needs, checked (see ``from_settings``)."""

    enabled: bool
    broker: BrokerAddress
    appliance_id: str
    topic_prefix: str = DEFAULT_PREFIX
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    password: str | None = None
    notice_after_s: float = 15.0

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix, self.appliance_id)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RemoteConfig:
        """Check the ``remote.*`` settings together and read the password file."""
        g = {k[len("remote."):]: v for k, v in settings.items() if k.startswith("remote.")}
        broker = BrokerAddress.parse(str(g["broker_url"]), "setting remote.broker_url")
        cert, key = str(g["tls_cert"]), str(g["tls_key"])
        if bool(cert) != bool(key):
            raise RemoteConfigError("settings remote.tls_cert and remote.tls_key: give both (the client certificate "
                                    "and its key) or neither")
        if (cert or g["tls_ca"]) and not broker.tls:
            raise RemoteConfigError("settings remote.tls_*: certificates are given but remote.broker_url is not "
                                    "mqtts://")
        password = read_secret(g["password_file"], "setting remote.password_file") if g["password_file"] else None
        for name in ("tls_ca", "tls_cert", "tls_key"):
            if g[name] and not Path(g[name]).is_file():
                raise RemoteConfigError(f"setting remote.{name}: {g[name]}: no such file")
        if not cert and password is None:
            raise RemoteConfigError("settings remote.password_file or remote.tls_cert/tls_key: the appliance needs "
                                    "credentials for the broker (a password file or a client certificate)")
        return cls(bool(g["enabled"]), broker, str(g["appliance_id"]), str(g["topic_prefix"]), str(g["tls_ca"]),
                   cert, key, password, float(g["notice_after_s"]))


def configure_client(client: Any, broker: BrokerAddress, *, username: str | None, password: str | None,
                     ca: str = "", cert: str = "", key: str = "") -> None:
    """TLS (server certificate checked against ``ca`` or the system CAs, host name verified)
    and credentials on a paho client."""
    if broker.tls:
        ctx = ssl.create_default_context(cafile=ca or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(cert, key or None)
        client.tls_set_context(ctx)
    if username is not None:
        client.username_pw_set(username, password)
