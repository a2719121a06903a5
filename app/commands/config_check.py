"""``lnm config-check [DIR] [--profile NAME]``: validate a configuration directory.

Owns: the command's shell around ``app.settings.load`` (the one validator the engine's
start-up and the touchscreen use too: ranges, rules across settings, file encodings).
May import: the standard library, ``app.settings``.

Exit status 0 when the folder, ``default.toml`` and every profile (or the one named)
are valid; 2 with one line naming the file and the problem otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app import settings


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``lnm config-check``."""
    parser.add_argument("config_dir", nargs="?", type=Path, default=None,
                        help="configuration directory (default: the shipped config/)")
    parser.add_argument("--profile", default=None, help="surgeon profile to check as well (default: all)")


def run(args: argparse.Namespace) -> int:
    """Validate; one line on success, one line naming the file and the problem on failure."""
    try:
        root = settings.check_config_dir(args.config_dir)
        profiles = [args.profile] if args.profile else [None, *settings.list_profiles(args.config_dir)]
        for profile in profiles:
            settings.load(args.config_dir, profile)
    except settings.SettingError as exc:
        print(f"lnm config-check: {exc}", file=sys.stderr)
        return 2
    note = "" if (root / "default.toml").exists() else f"; {root} has no default.toml: the built-in defaults apply"
    print(f"configuration OK ({len(profiles)} checked{note})")
    return 0
