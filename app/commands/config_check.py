"""``lnm config-check [DIR] [--profile NAME]``: validate a configuration directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app import settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_dir", nargs="?", type=Path, default=None, help="configuration directory (default: the shipped config/)")
    parser.add_argument("--profile", default=None, help="surgeon profile to check as well (default: all)")


def run(args: argparse.Namespace) -> int:
    try:
        profiles = [args.profile] if args.profile else [None, *settings.list_profiles(args.config_dir)]
        for profile in profiles:
            settings.load(args.config_dir, profile)
    except settings.SettingError as exc:
        print(f"lnm config-check: {exc}", file=sys.stderr)
        return 2
    print(f"configuration OK ({len(profiles)} checked)")
    return 0
