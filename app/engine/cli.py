"""``lnm engine``: run the monitoring engine (the process that protects the patient).

Owns: the command's options and turning them into an ``EngineConfig``.
May import: the standard library, ``app.settings``, ``app.api.protocol`` and
``app.engine``.

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 2 for a configuration that is refused
(the message names the setting, its unit and its range) or a resource that cannot be
opened (socket in use, socket path not a socket, data folder held by another engine (its PID
named), journal unreadable, audio/GPIO backend missing), 70 after an
unexpected error (stimulation stopped, engine-fault alarm journaled; the supervisor
restarts the engine, which resumes the open case).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_BOARD = "sim://?seed=1"


def configure(parser: argparse.ArgumentParser) -> None:
    from app.api.protocol import default_socket_path

    parser.add_argument("--config", type=Path, default=None, metavar="DIR",
                        help="configuration directory (default: the shipped config/)")
    parser.add_argument("--profile", default=None, metavar="NAME", help="surgeon profile from DIR/profiles/")
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="data directory holding the case journal (default: $LNM_DATA_DIR or ~/.local/share/lnm)")
    parser.add_argument("--board", default=DEFAULT_BOARD, metavar="URL",
                        help="board: a serial device (/dev/lnm-board), socket://HOST:PORT, or sim://... for the "
                             f"virtual board (default {DEFAULT_BOARD})")
    parser.add_argument("--socket", type=Path, default=None, metavar="PATH",
                        help=f"local API socket (default {default_socket_path()})")
    parser.add_argument("--audio", choices=("capture", "alsa"), default="capture",
                        help="capture: record sounds in memory (no sound card); alsa: the loudspeaker")
    parser.add_argument("--gpio", choices=("sim", "rpi"), default="sim", help="LEDs, buzzer and footswitch backend")
    parser.add_argument("--stream-decimation", type=int, default=1, metavar="N",
                        help="free-running EMG stream at sample rate / N (epochs stay at the full rate)")
    parser.add_argument("--no-resume", action="store_true", help="do not resume a case left open")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


def run(args: argparse.Namespace) -> int:
    from app import settings as settings_mod
    from app.api.protocol import default_socket_path
    from app.api.server import SocketInUse
    from app.engine.core import EngineOptions
    from app.engine.outputs import OutputsError
    from app.engine.service import EngineConfig, EngineService, default_data_dir

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s lnm-engine %(levelname)s %(message)s")
    try:
        st = settings_mod.load(args.config, args.profile)
    except settings_mod.SettingError as exc:
        print(f"lnm engine: configuration refused: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.stream_decimation <= 100:
        print("lnm engine: --stream-decimation must be 1-100", file=sys.stderr)
        return 2
    config = EngineConfig(
        settings=st, board_url=args.board, socket_path=args.socket or default_socket_path(),
        data_dir=args.data or default_data_dir(), audio=args.audio, gpio=args.gpio, profile=args.profile,
        config_dir=args.config, options=EngineOptions(stream_decimation=args.stream_decimation),
        resume=not args.no_resume,
    )
    service = EngineService(config)
    try:
        return service.run()
    except SocketInUse as exc:
        print(f"lnm engine: {exc}", file=sys.stderr)
        return 2
    except OutputsError as exc:
        print(f"lnm engine: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lnm engine: cannot start: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report it, exit for the supervisor
        from app.record.journal import StorageError

        if isinstance(exc, StorageError):
            print(f"lnm engine: {exc}", file=sys.stderr)
            return 2
        raise
