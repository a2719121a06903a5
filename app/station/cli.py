"""``lnm station``: run the reading station, add its users, write the broker's ACL, or run the demonstration.

Owns: the command line of ``app.station``:

- ``lnm station [--config FILE]``: serve the station (the address is printed);
- ``lnm station adduser NAME --name "Dr ..." --ors or-1,or-2 [--broker-passwd FILE]``: add or
  replace a reader (the password is asked twice, or read from ``--password-file``); with
  ``--broker-passwd`` the same password is set in the broker's password file, since the
  station logs in to the broker as the reader;
- ``lnm station acl [--config FILE]``: print the broker's ACL for the configured readers;
- ``lnm station --demo``: a local broker, three virtual ORs and the station (``app.station.demo``).

May import: the standard library, ``app.station``, ``app.remote`` (broker helpers).
Exit status: 0 done; 2 bad input (one clear line on stderr).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from app.station import config as sc


def configure(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lnm station``."""
    parser.add_argument("action", nargs="?", choices=("serve", "adduser", "acl"), default="serve",
                        help="serve (default), adduser NAME, acl")
    parser.add_argument("username", nargs="?", help="adduser: the reader's user name, like anna.rossi")
    parser.add_argument("--config", type=Path, default=sc.DEFAULT_CONFIG, metavar="FILE",
                        help=f"station configuration (default {sc.DEFAULT_CONFIG}, or $LNM_STATION_CONFIG)")
    parser.add_argument("--demo", action="store_true",
                        help="start a local broker, three virtual ORs and the station; Ctrl-C stops everything")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT", help="serve: override [station] listen")
    parser.add_argument("--name", default="", help="adduser: the reader's name as the OR sees it")
    parser.add_argument("--ors", default="", metavar="LIST", help="adduser: assigned ORs, comma-separated (or-1,or-2)")
    parser.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                        help="adduser: read the password from FILE instead of asking")
    parser.add_argument("--broker-passwd", type=Path, default=None, metavar="FILE",
                        help="adduser: also set the reader's password in this Mosquitto password file")
    parser.add_argument("--broker", default=None, metavar="URL", help="adduser: set [station] broker_url")
    parser.add_argument("--tls-ca", default=None, metavar="FILE", help="adduser: set [station] tls_ca")
    parser.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


def _fail(message: str) -> int:
    print(f"lnm station: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Serve, add a user, print the ACL or run the demonstration."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.demo:
        from app.station.demo import run_demo

        return run_demo(verbose=args.verbose)
    try:
        if args.action == "adduser":
            return _adduser(args)
        cfg = sc.load(args.config)
        if args.action == "acl":
            from app.remote.mqttauth import acl_text

            sys.stdout.write(acl_text({u.username: u.ors for u in cfg.users.values()}, cfg.topic_prefix))
            return 0
        if args.listen:
            from dataclasses import replace

            host, port = sc._listen(args.listen, "--listen")
            cfg = replace(cfg, listen_host=host, listen_port=port)
            if not cfg.https and not sc.is_loopback(host):
                return _fail(f"--listen {args.listen}: outside this machine the station needs HTTPS "
                             "(tls_cert and tls_key in [station])")
    except sc.StationConfigError as exc:
        return _fail(str(exc))
    from app.station.server import serve

    return serve(cfg)


def _adduser(args: argparse.Namespace) -> int:
    from app.station.auth import MIN_PASSWORD, hash_password

    if not args.username:
        return _fail("adduser: give the user name, e.g. lnm station adduser anna.rossi --ors or-1,or-2")
    ors = [o.strip() for o in args.ors.split(",") if o.strip()]
    if not ors:
        return _fail("adduser: give the assigned ORs with --ors, e.g. --ors or-1,or-2")
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError) as exc:
            return _fail(f"--password-file {args.password_file}: cannot be read ({exc})")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            return _fail("adduser: the two passwords differ")
    if len(password) < MIN_PASSWORD:
        return _fail(f"adduser: the password is too short (at least {MIN_PASSWORD} characters)")
    try:
        cfg = sc.add_user(args.config, args.username, args.name, ors, hash_password(password),
                          broker_url=args.broker, tls_ca=args.tls_ca)
    except sc.StationConfigError as exc:
        return _fail(str(exc))
    if args.broker_passwd is not None:
        from app.remote.mqttauth import set_password

        set_password(args.broker_passwd, args.username, password)
        print(f"{args.username}: broker password set in {args.broker_passwd} (reload the broker: SIGHUP)")
    print(f"{args.username}: saved in {cfg.path} with ORs {', '.join(ors)}; update the broker's ACL "
          f"('lnm station acl --config {cfg.path}')")
    return 0
