"""``lnm engine``: run the monitoring engine (the process that protects the patient).

Owns: the command's options and turning them into an ``EngineConfig``.
May import: the standard library, ``app.settings``, ``app.api.protocol`` and
``app.engine``.

Monitoring never depends on the record or the configuration files. A configuration that is
refused (the message names the setting, its unit and its range, or the file and its
problem) does not stop the engine: it runs on the last configuration that was valid
(``DATA/last-valid-config.json``, kept by every start on a valid configuration), else on the
shipped defaults, and raises the technical alarm ``config_problem`` naming the problem. A
record in any state (damaged, read-only, full, missing) is ``app.engine.service``'s
business: the engine monitors and says what it records.

Exit status: 0 after a clean stop (SIGTERM/SIGINT); 2 only for a bad command line
(``--stream-decimation`` out of range) or a claim that is refused because another program
holds it (the socket path holds something that is not a socket, the socket is served by a
running engine, the data folder is held by another engine (its PID named)) or a missing
audio/GPIO backend on the appliance: under systemd a 2 is a problem of the installation
(``RestartPreventExitStatus=2``), never of the patient's data; 70 after an unexpected error
(stimulation stopped, engine-fault alarm journaled; the supervisor restarts the engine,
which resumes the open case).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app import settings as settings_mod

DEFAULT_BOARD = "sim://?seed=1"


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``lnm engine``."""
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
    parser.add_argument("--storage-reserve-mb", type=float, default=None, metavar="MB",
                        help="space kept in reserve for the essentials of the record once the disk is full "
                             "(default: sized for 8 hours of them; 0: none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


def settings_for_start(config_dir: Path | None, profile: str | None,
                       data_dir: Path) -> tuple[settings_mod.Settings, str | None]:
    """The settings to start on and, when the configuration was refused, what runs instead and why
    (the words of the technical alarm). Never raises for a bad configuration."""
    from app import settings as settings_mod

    try:
        return settings_mod.load(config_dir, profile), None
    except settings_mod.SettingError as exc:
        refused = str(exc)
    try:
        kept = settings_mod.load_last_valid(data_dir)
    except settings_mod.SettingError as exc:
        kept, why_not = None, f" (the last valid one cannot be used: {exc})"
    else:
        why_not = "" if kept is not None else " (no valid one was kept)"
    if kept is not None:
        st, meta = kept
        return st, (f"Configuration refused: {refused}. The monitor runs on the last valid configuration, kept "
                    f"{meta.get('saved')} from {meta.get('source') or 'the configuration'}"
                    + (f" (profile {meta['profile']})" if meta.get("profile") else "") + ".")
    return settings_mod.Settings(), (f"Configuration refused: {refused}. The monitor runs on the shipped "
                                     f"defaults{why_not}.")


def run(args: argparse.Namespace) -> int:
    """Run the engine until stopped; the exit status (see the module docstring)."""
    from app.api.protocol import default_socket_path
    from app.api.server import NotASocket, SocketInUse
    from app.engine.core import EngineOptions
    from app.engine.outputs import OutputsError
    from app.engine.service import EngineConfig, EngineService, default_data_dir

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s lnm-engine %(levelname)s %(message)s")
    if not 1 <= args.stream_decimation <= 100:
        print("lnm engine: --stream-decimation must be 1-100", file=sys.stderr)
        return 2
    data_dir = args.data or default_data_dir()
    st, problem = settings_for_start(args.config, args.profile, data_dir)
    if problem:
        print(f"lnm engine: {problem}", file=sys.stderr)
    config = EngineConfig(
        settings=st, board_url=args.board, socket_path=args.socket or default_socket_path(),
        data_dir=data_dir, audio=args.audio, gpio=args.gpio, profile=args.profile if not problem else None,
        config_dir=args.config, options=EngineOptions(stream_decimation=args.stream_decimation),
        resume=not args.no_resume, config_problem=problem,
        reserve_bytes=None if args.storage_reserve_mb is None else int(max(0.0, args.storage_reserve_mb) * 1e6),
    )
    service = EngineService(config)
    try:
        return service.run()
    except (SocketInUse, NotASocket) as exc:
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
