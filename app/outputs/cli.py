"""``lnm sounds DIR``: write every alarm signal and feedback tone as a WAV file.

Owns: the ``sounds`` subcommand.
May import: the standard library, ``app.settings`` and ``app.outputs.sounds``.

Files (mono, 16-bit PCM, ``--rate`` Hz): ``alarm-high.wav``, ``alarm-medium.wav`` and
``alarm-low.wav`` each hold ONE FULL CYCLE: the burst followed by the interburst silence
(``alarms.<priority>_repeat_s`` from the configuration), so playing the file in a loop
sounds exactly like the monitor. ``tone-<name>.wav`` holds each feedback tone once. The
volume law is not applied: files are at full level so they can be measured.
"""

from __future__ import annotations

import argparse
import sys
import wave
from pathlib import Path

from app.outputs import sounds
from app.outputs.audio import to_pcm16
from app.settings import SettingError, load


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``lnm sounds``."""
    parser.add_argument("dir", type=Path, help="directory to write the WAV files into (created if missing)")
    parser.add_argument("--rate", type=int, default=sounds.SAMPLE_RATE, choices=(22050, 44100, 48000, 96000),
                        help="sample rate in Hz (default %(default)s)")
    parser.add_argument("--config", type=Path, default=None,
                        help="configuration directory (default: the product's config/)")
    parser.add_argument("--profile", default=None, help="surgeon profile name")


def _describe(stem: str, settings) -> tuple[str, str]:
    if stem.startswith("alarm-"):
        p = stem[len("alarm-"):]
        sig = sounds.signal_for(p)
        what = (f"{p} priority alarm, {sig.pulses} pulses ({sig.pattern_text}), one burst + "
                f"{sounds.interburst_s(p, settings):g} s interburst")
        return what, f"{sig.f0_hz:g}"
    spec = sounds.FEEDBACK_TONES[stem[len("tone-"):]]
    return f"{spec.meaning} ({spec.description})", f"{spec.fundamental_hz:g}"


def write_wav(path: Path, samples, rate: int) -> None:
    """Write mono float samples (-1..1) as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(to_pcm16(samples))


def run(args: argparse.Namespace) -> int:
    """``lnm sounds DIR``: write every alarm signal and feedback tone as WAV files."""
    try:
        settings = load(args.config, args.profile)
    except SettingError as exc:
        print(f"lnm sounds: {exc}", file=sys.stderr)
        return 2
    out: Path = args.dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"lnm sounds: cannot create directory {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    rows = []
    for stem, samples in sounds.all_sounds(settings, args.rate).items():
        path = out / f"{stem}.wav"
        try:
            write_wav(path, samples, args.rate)
        except OSError as exc:
            print(f"lnm sounds: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        what, f0 = _describe(stem, settings)
        rows.append((path.name, f"{len(samples) / args.rate:.3f}", f0, what))
    widths = [max(len(r[i]) for r in rows + [("file", "seconds", "f0 Hz", "")]) for i in range(3)]
    print(f"{'file':<{widths[0]}}  {'seconds':>{widths[1]}}  {'f0 Hz':>{widths[2]}}  what")
    for name, secs, f0, what in rows:
        print(f"{name:<{widths[0]}}  {secs:>{widths[1]}}  {f0:>{widths[2]}}  {what}")
    print(f"wrote {len(rows)} files to {out} ({args.rate} Hz, 16-bit mono PCM)")
    return 0
