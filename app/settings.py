"""The one source of truth for settings: names, units, ranges, defaults.

Owns: the settings schema (``SCHEMA``), validation of single values and whole files, the
immutable ``Settings`` object, and loading ``config/`` (defaults, surgeon profiles).
May import: the standard library and ``firmware_bridge.fields`` (the field specification
behind ``Setting.validate``).

Every value the touchscreen, a config file or a profile sets goes through ``validate``;
a bad value raises ``SettingError`` whose message names the setting, its unit and its
allowed range. Defaults follow ``shared/reference/clinical-rules.md``.

Config files are TOML with one table per group, e.g.::

    [rules]
    los_consecutive = 2
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from collections.abc import Iterator, Mapping
from datetime import UTC

from firmware_bridge.fields import Field, FieldError


def _shipped_config_dir() -> Path:
    """The shipped ``config/``: beside the source tree, or installed under ``share/lnm``."""
    import sys

    source_tree = Path(__file__).resolve().parent.parent / "config"
    if source_tree.is_dir():
        return source_tree
    return Path(sys.prefix) / "share" / "lnm" / "config"


CONFIG_DIR = _shipped_config_dir()


class SettingError(ValueError):
    """A setting or a configuration file was rejected. The message says why."""


@dataclass(frozen=True)
class Setting:
    """One setting: key, unit, default, allowed range or values, and whether it may change live."""

    key: str  # "group.name"
    unit: str  # "mA", "uV", "%", "" for unitless
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    kind: type = float  # float, int, bool, str
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None  # for str
    doc: str = ""
    live: bool = True  # False: read at start-up only (wiring, devices, link timing)

    def describe_range(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.choices is not None:
            return "one of " + ", ".join(f"{c}{unit}" for c in self.choices)
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return f"text matching {self.pattern}" if self.pattern else "text"
        return f"{_fmt(self.minimum)}-{_fmt(self.maximum)}{unit}"

    @property
    def field(self) -> Field:
        """The setting as a field specification (text is read as a number or true/false too)."""
        kind = {bool: "bool", str: "str", int: "int"}.get(self.kind, "number")
        return Field(self.key, kind, self.unit, self.minimum, self.maximum,
                     self.choices if kind in ("number", "int") else None, self.pattern, accept="text")

    def validate(self, value: Any, source: str = "") -> Any:
        where = f" in {source}" if source else ""
        unit = f" ({self.unit})" if self.unit else ""
        prefix = f"setting {self.key}{unit}{where}"
        try:
            return self.field.check(value)
        except FieldError as exc:
            if self.kind in (bool, str) or exc.reason == "choice":
                raise SettingError(f"{prefix}: {value!r} is not allowed; must be {self.describe_range()}") from None
            if exc.reason == "range":
                raise SettingError(
                    f"{prefix}: {_fmt(exc.value)} is out of range; allowed {self.describe_range()}"
                ) from None
            raise SettingError(f"{prefix}: {value!r} is not a number; allowed {self.describe_range()}") from None


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:g}"


def _s(key: str, unit: str, default: Any, lo: float | None = None, hi: float | None = None, **kw: Any) -> Setting:
    kind = kw.pop("kind", type(default))
    return Setting(key, unit, default, lo, hi, kind=kind, **kw)


# Ranges bound what the product accepts at all; clinical limits (e.g. the > 3 mA
# confirmation) are settings themselves.
_SCHEMA_LIST: list[Setting] = [
    # stimulation
    _s("stim.probe_current_mA", "mA", 1.0, 0.1, 10.0, doc="probe current for RLN confirmation"),
    _s("stim.vagus_current_mA", "mA", 1.0, 0.1, 10.0, doc="probe current for V1/V2"),
    _s("stim.mapping_current_mA", "mA", 2.0, 0.1, 10.0, doc="mapping before the nerve is seen"),
    _s("stim.aps_current_mA", "mA", 1.0, 0.1, 10.0, doc="continuous vagal electrode current"),
    _s("stim.confirm_above_mA", "mA", 3.0, 1.0, 10.0, doc="currents above need explicit confirmation"),
    _s("stim.pulse_width_us", "us", 100, 50, 250, doc="stimulus pulse width"),
    _s("stim.probe_rate_hz", "Hz", 4.0, 1.0, 30.0, doc="probe stimulation rate"),
    _s("stim.aps_rate_hz", "Hz", 1.0, 0.5, 10.0, doc="continuous vagal stimulation rate"),
    _s("stim.delivered_tolerance_pct", "%", 5.0, 1.0, 20.0, doc="delivered vs set current tolerance"),
    # acquisition
    _s("acq.sample_rate_hz", "Hz", 20000, 5000, 50000, doc="EMG sampling rate per channel"),
    _s("acq.stream_block_ms", "ms", 20, 5, 100, doc="free-running EMG block length"),
    # analysis
    _s("analysis.bandpass_low_hz", "Hz", 10.0, 1.0, 100.0, doc="measurement band-pass low corner"),
    _s("analysis.bandpass_high_hz", "Hz", 3000.0, 500.0, 5000.0, doc="band-pass high corner (below Nyquist)"),
    _s("analysis.artifact_blank_ms", "ms", 1.5, 0.0, 5.0, doc="stimulus-artifact rejection at window start"),
    _s("analysis.window_ms", "ms", 50.0, 10.0, 100.0, doc="analysis window after the stimulus"),
    _s("analysis.event_threshold_uV", "uV", 100.0, 20.0, 1000.0, doc="a response reaches this peak-to-peak"),
    _s("analysis.auto_threshold", "", False, doc="raise the threshold during sustained noise"),
    _s("analysis.auto_threshold_max_uV", "uV", 400.0, 100.0, 1000.0, doc="ceiling of the automatic raise"),
    _s("analysis.saturation_uV", "uV", 100000.0, 1000.0, 1000000.0, doc="out-of-range signal level"),
    _s("analysis.cautery_rms_uV", "uV", 2000.0, 200.0, 100000.0, doc="broadband RMS marking cautery"),
    _s("analysis.peak_lowpass_hz", "Hz", 1000.0, 200.0, 5000.0,
       doc="low-pass of the copy on which peaks are sized and timed"),
    _s("analysis.min_snr", "", 10.0, 2.0, 50.0, doc="peak-to-peak over noise RMS needed to tell a response from noise"),
    _s("analysis.max_phase_ms", "ms", 6.0, 1.0, 30.0, doc="a wider first phase is not a nerve response (ECG, wander)"),
    _s("analysis.response_end_vagus_ms", "ms", 25.0, 5.0, 100.0, doc="end of the vagal response window"),
    _s("analysis.response_end_rln_ms", "ms", 15.0, 5.0, 100.0, doc="end of the RLN response window"),
    _s("analysis.response_end_ebsln_ms", "ms", 15.0, 5.0, 100.0, doc="end of the EBSLN response window"),
    _s("analysis.response_end_untagged_ms", "ms", 25.0, 5.0, 100.0,
       doc="end of the response window for untagged probe stimuli"),
    _s("analysis.rail_min_uV", "uV", 2000.0, 100.0, 1000000.0,
       doc="a flat run at or beyond this level is an amplifier rail"),
    _s("analysis.flatline_ms", "ms", 0.5, 0.1, 10.0, doc="identical samples at a rail for this long mark saturation"),
    _s("analysis.step_uV", "uV", 300.0, 20.0, 100000.0,
       doc="baseline shift across an epoch marking a non-physiological step"),
    # free-running EMG (spontaneous activity, cautery)
    _s("emg.highpass_hz", "Hz", 100.0, 20.0, 500.0, doc="free-running EMG high-pass (removes ECG, hum, wander)"),
    _s("emg.lowpass_hz", "Hz", 2000.0, 300.0, 10000.0, doc="free-running EMG low-pass (capped below Nyquist)"),
    _s("emg.spike_threshold_uV", "uV", 40.0, 5.0, 2000.0, doc="a motor-unit potential reaches this peak"),
    _s("emg.spike_snr", "", 5.0, 2.0, 30.0, doc="and this many noise RMS above the floor"),
    _s("emg.max_gap_ms", "ms", 250.0, 20.0, 2000.0, doc="potentials closer than this belong to one episode"),
    _s("emg.min_potentials", "potentials", 4, 2, 50, doc="potentials that make an episode"),
    _s("emg.train_cv", "", 0.35, 0.05, 1.0, doc="interval variation (SD/mean) below which an episode is a train"),
    _s("emg.cautery_hold_ms", "ms", 300.0, 20.0, 5000.0, doc="quiet time before cautery is declared over"),
    # rules
    _s("rules.los_min_current_mA", "mA", 1.0, 0.5, 5.0, doc="set current for a stimulus to count towards LOS"),
    _s("rules.los_consecutive", "stimuli", 2, 1, 10, doc="qualifying stimuli without response for LOS"),
    _s("rules.aps_baseline_count", "stimuli", 20, 20, 200, doc="APS stimuli averaged for the baseline"),
    _s("rules.combined_amplitude_pct", "% of baseline", 50.0, 10.0, 90.0, doc="combined event amplitude limit"),
    _s("rules.combined_latency_pct", "% of baseline", 110.0, 101.0, 150.0, doc="combined event latency limit"),
    _s("rules.combined_consecutive", "stimuli", 3, 1, 10, doc="stimuli meeting the combined condition"),
    _s("rules.amplitude_decrease_pct", "% of baseline", 50.0, 10.0, 90.0, doc="amplitude-decrease limit"),
    _s("rules.amplitude_decrease_consecutive", "stimuli", 3, 1, 10,
       doc="stimuli meeting the amplitude-decrease condition"),
    _s("rules.recovery_pct", "% of baseline", 50.0, 10.0, 100.0, doc="recovered amplitude"),
    _s("rules.recovery_consecutive", "stimuli", 3, 1, 10, doc="stimuli for recovery"),
    _s("rules.poor_baseline_uV", "uV", 200.0, 50.0, 500.0, doc="V1/APS baseline below this is poor"),
    _s("rules.nonrecurrent_latency_ms", "ms", 3.5, 1.0, 6.0,
       doc="right vagal latency below suggests a non-recurrent nerve"),
    _s("rules.r2_reduction_map_pct", "%", 20.0, 5.0, 60.0, doc="R2d-R2p reduction asking for mapping"),
    _s("rules.r2_reduction_palsy_pct", "%", 63.0, 30.0, 95.0, doc="reduction predicting palsy"),
    _s("rules.los_end_consecutive", "stimuli", 2, 1, 10, doc="responding stimuli in a row that end a LOS episode"),
    _s("rules.los_reentry_s", "s", 60.0, 0.0, 600.0, doc="a new loss this soon after an episode ended continues it"),
    _s("rules.nmb_window_s", "s", 300.0, 30.0, 1800.0, doc="both sides falling within this time suggest a blockade"),
    # tube check
    _s("tube.max_impedance_kohm", "kOhm", 5.0, 0.5, 50.0, doc="electrode impedance pass limit"),
    _s("tube.max_imbalance_kohm", "kOhm", 1.0, 0.1, 10.0, doc="imbalance within a pair"),
    _s("tube.breathing_window_s", "s", 15.0, 8.0, 60.0,
       doc="free-running EMG observed after a tube check for the breathing variation"),
    _s("tube.breathing_low_hz", "Hz", 0.1, 0.05, 0.5, doc="slowest breathing looked for (0.1 Hz = 6 per minute)"),
    _s("tube.breathing_high_hz", "Hz", 0.7, 0.3, 2.0, doc="fastest breathing looked for (0.7 Hz = 42 per minute)"),
    _s("tube.breathing_min_modulation_pct", "%", 8.0, 1.0, 50.0,
       doc="respiratory modulation of the EMG background that shows vocal-fold contact"),
    _s("tube.breathing_min_wander_uV", "uV", 8.0, 0.0, 500.0,
       doc="and breathing wander of the baseline (peak-to-peak); 0: not required"),
    # alarms
    _s("alarms.audio_pause_s", "s", 120.0, 10.0, 300.0, doc="audio-paused duration"),
    _s("alarms.escalation_s", "s", 60.0, 10.0, 600.0, doc="unacknowledged alarm escalates after"),
    _s("alarms.high_repeat_s", "s", 5.0, 2.5, 15.0, doc="high-priority burst repeat interval"),
    _s("alarms.medium_repeat_s", "s", 10.0, 2.5, 30.0, doc="medium-priority burst repeat interval"),
    _s("alarms.low_repeat_s", "s", 20.0, 15.0, 120.0, doc="low-priority burst repeat interval"),
    _s("alarms.audio_off_reminder_s", "s", 120.0, 30.0, 600.0, doc="reminder while audio is off"),
    # audio
    _s("audio.volume_pct", "%", 70.0, 0.0, 100.0, doc="loudspeaker volume"),
    _s("audio.alarm_volume_floor_pct", "%", 40.0, 10.0, 100.0, doc="alarms never quieter than this"),
    _s("audio.emg_audio", "", True, doc="free-running EMG on the loudspeaker"),
    _s("audio.alsa_device", "", "default", kind=str, pattern=r"[A-Za-z0-9:,=_.-]{1,64}",
       doc="ALSA output device for aplay", live=False),
    # GPIO
    _s("gpio.footswitch_debounce_ms", "ms", 30.0, 5.0, 200.0, doc="footswitch level must be stable this long"),
    _s("gpio.footswitch_long_press_s", "s", 1.5, 0.5, 5.0, doc="footswitch held this long acknowledges the top alarm"),
    # wiring on the Pi's header, BCM numbers (defaults: app.outputs.gpio.DEFAULT_WIRING, deploy/HARDWARE.md)
    _s("gpio.red_led_pin", "", 17, 2, 27, doc="BCM GPIO of the red alarm LED", live=False),
    _s("gpio.yellow_led_pin", "", 27, 2, 27, doc="BCM GPIO of the yellow alarm LED", live=False),
    _s("gpio.green_led_pin", "", 22, 2, 27, doc="BCM GPIO of the green status LED", live=False),
    _s("gpio.buzzer_pin", "", 23, 2, 27, doc="BCM GPIO of the backup buzzer", live=False),
    _s("gpio.footswitch_pin", "", 24, 2, 27, doc="BCM GPIO of the footswitch (active low, pull-up)", live=False),
    # link / engine
    _s("link.heartbeat_ms", "ms", 100, 20, 200, doc="host heartbeat period", live=False),
    _s("link.timeout_ms", "ms", 500, 100, 2000, doc="link declared lost after this silence", live=False),
    # case record storage and export
    _s("record.min_free_hours", "h", 8.0, 0.0, 200.0,
       doc="warn when a new case opens with room for fewer hours of recording than this; 0: no check"),
    _s("record.retention_days", "days", 0, 0, 3650,
       doc="prune cases exported and verified and closed longer ago than this (lnm storage --prune); 0: keep all"),
    _s("export.media_roots", "", "/media:/mnt:/run/media", kind=str,
       pattern=r"/[^:\x00]*(:/[^:\x00]*){0,15}",
       doc="folders under which removable media are mounted (colon-separated): the only USB export targets",
       live=False),
    # user interface
    _s("ui.settings_pin", "", "1234", kind=str, pattern=r"[0-9]{4,8}", doc="PIN for the settings screen"),
]

SCHEMA: Mapping[str, Setting] = MappingProxyType({s.key: s for s in _SCHEMA_LIST})


def setting(key: str) -> Setting:
    """The schema entry of ``key`` (``SettingError`` for an unknown key)."""
    try:
        return SCHEMA[key]
    except KeyError:
        raise SettingError(f"unknown setting {key!r}") from None


class Settings(Mapping[str, Any]):
    """An immutable, validated set of values for every setting in the schema."""

    def __init__(self, values: Mapping[str, Any] | None = None, source: str = "") -> None:
        merged = {k: s.default for k, s in SCHEMA.items()}
        for key, value in (values or {}).items():
            merged[key] = setting(key).validate(value, source)
        _check_cross(merged, source)
        self._values = MappingProxyType(merged)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_changes(self, changes: Mapping[str, Any], source: str = "") -> Settings:
        values = dict(self._values)
        values.update(changes)
        return Settings(values, source)

    def group(self, prefix: str) -> dict[str, Any]:
        """``group("rules")`` -> ``{"los_consecutive": 2, ...}``."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self._values.items() if k.startswith(p)}

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


GPIO_PIN_SETTINGS = ("gpio.red_led_pin", "gpio.yellow_led_pin", "gpio.green_led_pin", "gpio.buzzer_pin",
                     "gpio.footswitch_pin")


def _check_cross(values: Mapping[str, Any], source: str) -> None:
    where = f" in {source}" if source else ""
    nyquist = values["acq.sample_rate_hz"] / 2
    if values["analysis.bandpass_high_hz"] >= nyquist:
        raise SettingError(
            f"setting analysis.bandpass_high_hz (Hz){where}: {_fmt(values['analysis.bandpass_high_hz'])} "
            f"must be below half the sample rate ({_fmt(nyquist)} Hz)"
        )
    if values["analysis.bandpass_low_hz"] >= values["analysis.bandpass_high_hz"]:
        raise SettingError(f"setting analysis.bandpass_low_hz (Hz){where}: must be below analysis.bandpass_high_hz")
    if values["tube.breathing_low_hz"] >= values["tube.breathing_high_hz"]:
        raise SettingError(f"setting tube.breathing_low_hz (Hz){where}: must be below tube.breathing_high_hz")
    if values["tube.breathing_window_s"] * values["tube.breathing_low_hz"] < 1.0:
        raise SettingError(
            f"setting tube.breathing_window_s (s){where}: {_fmt(values['tube.breathing_window_s'])} s does not hold "
            f"one breath at tube.breathing_low_hz ({_fmt(values['tube.breathing_low_hz'])} Hz)"
        )
    if values["link.timeout_ms"] < 2 * values["link.heartbeat_ms"]:
        raise SettingError(
            f"setting link.timeout_ms (ms){where}: {_fmt(values['link.timeout_ms'])} ms must be at least twice "
            f"link.heartbeat_ms ({_fmt(values['link.heartbeat_ms'])} ms), so that one late heartbeat does not "
            "declare the board link lost"
        )
    if values["audio.volume_pct"] < 0:
        raise SettingError(f"setting audio.volume_pct (%){where}: must be >= 0")
    used: dict[int, str] = {}
    for key in GPIO_PIN_SETTINGS:
        pin = values[key]
        if pin in used:
            raise SettingError(f"setting {key}{where}: BCM GPIO {pin} is already {used[pin]}; "
                               "every LED, the buzzer and the footswitch need a pin of their own")
        used[pin] = key


def flatten(table: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables as flat ``group.name`` keys."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, source, key + "."))
        else:
            out[key] = v
    return out


MAX_CONFIG_BYTES = 1 << 20


def decode_text(raw: bytes, path: Path) -> str:
    """The text of a configuration file: UTF-8 (a UTF-8 byte-order mark is allowed); any other
    encoding is refused naming the file, the offset of the first bad byte and what to do."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SettingError(f"configuration file {path}: is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw:
        raise SettingError(f"configuration file {path}: contains NUL bytes (a binary file?); it must be UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SettingError(f"configuration file {path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                           "save it as UTF-8") from None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file into flat ``group.name`` keys; errors name the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise SettingError(f"configuration file {path}: not found") from None
    except IsADirectoryError:
        raise SettingError(f"configuration file {path}: is a folder, not a file") from None
    except OSError as exc:
        raise SettingError(f"configuration file {path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise SettingError(f"configuration file {path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; "
                           "not a settings file")
    try:
        table = tomllib.loads(decode_text(raw, path))
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"configuration file {path}: not valid TOML ({exc})") from None
    return flatten(table, str(path))


def check_config_dir(config_dir: Path | None) -> Path:
    """The configuration folder to read: the shipped one, or ``config_dir`` when it is a readable folder."""
    if not config_dir:
        return CONFIG_DIR
    root = Path(config_dir)
    if not root.exists():
        raise SettingError(f"configuration folder {root}: not found")
    if not root.is_dir():
        raise SettingError(f"configuration folder {root}: is a file, not a folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SettingError(f"configuration folder {root}: cannot be read (no permission)")
    return root


def load(config_dir: Path | None = None, profile: str | None = None) -> Settings:
    """Defaults from ``default.toml`` then the surgeon profile ``profiles/NAME.toml``.

    The one validator of configuration files (``lnm config-check``, ``lnm engine`` and every
    command that reads settings): the folder must exist, files must be UTF-8 TOML, every key
    a known setting, every value in range, and the rules across settings must hold."""
    root = check_config_dir(config_dir)
    default_path = root / "default.toml"
    values: dict[str, Any] = {}
    if default_path.exists() or default_path.is_symlink():
        values.update(_only_settings(read_toml(default_path), default_path))
    settings = Settings(values, str(default_path))
    if profile:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", profile):
            raise SettingError(f"surgeon profile {profile!r}: names use letters, digits, - and _ only")
        path = root / "profiles" / f"{profile}.toml"
        settings = settings.with_changes(_only_settings(read_toml(path), path), str(path))
    return settings


def _only_settings(values: dict[str, Any], path: Path) -> dict[str, Any]:
    unknown = [k for k in values if k not in SCHEMA and not k.startswith("profile.")]
    if unknown:
        raise SettingError(f"configuration file {path}: unknown setting {unknown[0]!r}")
    return {k: v for k, v in values.items() if k in SCHEMA}


def list_profiles(config_dir: Path | None = None) -> list[str]:
    """The surgeon profiles of a configuration folder (``profiles/NAME.toml``; none for a missing folder)."""
    root = Path(config_dir) if config_dir else CONFIG_DIR
    return sorted(p.stem for p in (root / "profiles").glob("*.toml"))


# ----------------------------------------------------------------------------- the last valid configuration

LAST_VALID_NAME = "last-valid-config.json"
LAST_VALID_FORMAT = "lnm-settings/1"


def save_last_valid(settings: Settings, data_dir: Path, source: str = "", profile: str | None = None,
                    saved_at: str | None = None) -> Path:
    """Keep ``settings`` (already validated) as the last configuration that was valid, in
    ``DATA/last-valid-config.json`` (written atomically, mode 0600: it holds the settings PIN).
    Returns the path."""
    import json
    import tempfile
    from datetime import datetime

    if not isinstance(settings, Settings):
        raise TypeError("save_last_valid takes a validated Settings object")
    values = settings.as_dict()
    body = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    doc = {"format": LAST_VALID_FORMAT,
           "saved": saved_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "source": source, "profile": profile, "values": values,
           "values_sha256": hashlib.sha256(body.encode("ascii")).hexdigest()}
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LAST_VALID_NAME
    fd, tmp = tempfile.mkstemp(prefix=".last-valid-config.", suffix=".tmp", dir=data_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_last_valid(data_dir: Path) -> tuple[Settings, dict[str, Any]] | None:
    """The last configuration that was valid, checked again by today's schema, with its
    ``{"saved", "source", "profile"}``; ``None`` when none was kept. A damaged, edited or
    no longer valid file raises ``SettingError`` naming the file and the problem."""
    import json

    path = Path(data_dir) / LAST_VALID_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SettingError(f"last valid configuration {path}: cannot be read ({exc.strerror})") from None
    try:
        doc = json.loads(decode_text(raw, path))
    except ValueError:
        raise SettingError(f"last valid configuration {path}: not readable JSON (damaged)") from None
    if not isinstance(doc, dict) or doc.get("format") != LAST_VALID_FORMAT or not isinstance(doc.get("values"), dict):
        raise SettingError(f"last valid configuration {path}: not an {LAST_VALID_FORMAT} file")
    body = json.dumps(doc["values"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    if hashlib.sha256(body.encode("ascii")).hexdigest() != doc.get("values_sha256"):
        raise SettingError(f"last valid configuration {path}: its values do not match their checksum "
                           "(changed by hand or damaged)")
    unknown = [k for k in doc["values"] if k not in SCHEMA]
    values = {k: v for k, v in doc["values"].items() if k in SCHEMA}  # settings removed since: dropped
    try:
        settings = Settings(values, str(path))
    except SettingError as exc:
        raise SettingError(f"last valid configuration {path}: no longer valid: {exc}") from None
    meta = {"saved": doc.get("saved"), "source": doc.get("source"), "profile": doc.get("profile"),
            "dropped": unknown}
    return settings, meta
