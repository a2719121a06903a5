"""The nurse's words for what the engine says in program terms (pure: no Kivy, no I/O).

Owns:
- the settings as a nurse thinks of them (``SETTING_GROUPS``, ``setting_info``): for
  each setting key of the engine's schema a group (stimulation, response, alarms, sound,
  display, tube check, service), a name, and the unit written as people write it; the
  key itself is never shown;
- electrode, side, site and alarm names (``electrode_name``, ``ALARM_TITLES``);
- ``plain(text)``: engine text with program terms replaced by words (setting keys,
  ``VAGUS-L``, alarm ids, electrode ids, ``side L``, enum values, regular expressions);
- ``refusal_words(reply)``: an engine refusal as one sentence for the message bar (a
  setting or argument named in words with its unit and range, never its key or pattern);
- ``event_line(event)``: one line of the event list or the alarm history, with every
  field in words (``acknowledged`` says what and by whom, never an alarm id).

The alarm titles repeat the catalogue in ``app/alarms/catalog.py`` (the UI may not import
the engine's stages); an alarm kind not listed here is named from the alarm's own title.
May import: the standard library, ``app.ui.present``, ``app.format`` (the words of sides
and sites) and ``app.model`` (the vocabulary whose keys are recognised in engine text).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app import format as fmt
from app.model import SIDES, SITES, SOURCES
from app.ui import present as P

# ---------------------------------------------------------------- units

UNITS = {"uV": "µV", "us": "µs", "kOhm": "kΩ", "kohm": "kΩ", "% of baseline": "% of baseline"}


def unit_words(unit: str | None) -> str:
    """A unit as people write it (µV, µs, kΩ)."""
    u = str(unit or "")
    return UNITS.get(u, u)


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class SettingInfo:
    """How a setting is shown: its group, its name and a sentence of help."""

    key: str
    group: str
    name: str
    help: str = ""


# (group id, title) in the order of the tabs
SETTING_GROUPS = (
    ("stimulation", "Stimulation"),
    ("response", "Response"),
    ("alarms", "Alarms"),
    ("sound", "Sound"),
    ("display", "Display"),
    ("tube", "Tube check"),
    ("service", "Service"),
)

_S = {
    # stimulation
    "stim.probe_current_mA": ("stimulation", "Probe current, nerve check",
                              "the probe's current when confirming the RLN"),
    "stim.vagus_current_mA": ("stimulation", "Probe current, vagus (V1, V2)", "the probe's current for V1 and V2"),
    "stim.mapping_current_mA": ("stimulation", "Probe current, mapping", "before the nerve is seen"),
    "stim.aps_current_mA": ("stimulation", "Continuous vagal current", "the current of the vagal electrode"),
    "stim.confirm_above_mA": ("stimulation", "Ask to confirm above", "a higher current needs a confirmation"),
    "stim.pulse_width_us": ("stimulation", "Pulse width", "the length of each stimulus pulse"),
    "stim.probe_rate_hz": ("stimulation", "Probe rate", "probe pulses per second"),
    "stim.aps_rate_hz": ("stimulation", "Continuous vagal rate", "vagal electrode pulses per second"),
    "stim.delivered_tolerance_pct": ("stimulation", "Delivered current tolerance",
                                     "how far the delivered current may fall below the set current"),
    # response
    "analysis.event_threshold_uV": ("response", "Event threshold", "a response is this large or larger"),
    "analysis.auto_threshold": ("response", "Raise threshold in noise", "raised during sustained noise, back after"),
    "analysis.auto_threshold_max_uV": ("response", "Highest raised threshold", "the limit of the automatic raise"),
    "rules.los_min_current_mA": ("response", "Loss of signal: lowest current",
                                 "stimuli below this current do not count towards a loss of signal"),
    "rules.los_consecutive": ("response", "Loss of signal: stimuli", "stimuli without response before the alarm"),
    "rules.los_end_consecutive": ("response", "Loss of signal ends: stimuli",
                                  "responding stimuli in a row that end a loss of signal"),
    "rules.los_reentry_s": ("response", "Loss of signal continues within",
                            "a new loss this soon after the last one ended continues it"),
    "rules.nmb_window_s": ("response", "Relaxant suspected: both sides within",
                           "both sides lost within this time suggests a muscle relaxant"),
    "rules.aps_baseline_count": ("response", "Vagal baseline: stimuli", "stimuli averaged for the vagal baseline"),
    "rules.combined_amplitude_pct": ("response", "Combined event: amplitude below",
                                     "amplitude limit of the combined event"),
    "rules.combined_latency_pct": ("response", "Combined event: latency above", "latency limit of the combined event"),
    "rules.combined_consecutive": ("response", "Combined event: stimuli", "stimuli meeting both limits"),
    "rules.amplitude_decrease_pct": ("response", "Check tube: amplitude below",
                                     "amplitude fallen with stable latency"),
    "rules.amplitude_decrease_consecutive": ("response", "Check tube: stimuli", "stimuli below that amplitude"),
    "rules.recovery_pct": ("response", "Recovery: amplitude back to", "the signal counts as recovered"),
    "rules.recovery_consecutive": ("response", "Recovery: stimuli", "stimuli at the recovered amplitude"),
    "rules.poor_baseline_uV": ("response", "Poor baseline below", "a V1 or vagal baseline below this is poor"),
    "rules.nonrecurrent_latency_ms": ("response", "Non-recurrent nerve: latency below",
                                      "a shorter right vagal latency suggests a non-recurrent nerve"),
    "rules.r2_reduction_map_pct": ("response", "R2 reduction: map the nerve above",
                                   "reduction from distal to proximal asking for mapping"),
    "rules.r2_reduction_palsy_pct": ("response", "R2 reduction: palsy likely above",
                                     "reduction predicting a vocal-fold palsy"),
    # alarms
    "alarms.audio_pause_s": ("alarms", "Audio pause", "how long 'Pause audio' silences the alarms"),
    "alarms.escalation_s": ("alarms", "Escalate after", "an alarm not acknowledged for this long gets louder"),
    "alarms.high_repeat_s": ("alarms", "High priority: repeat every", "time between two alarm bursts"),
    "alarms.medium_repeat_s": ("alarms", "Medium priority: repeat every", "time between two alarm bursts"),
    "alarms.low_repeat_s": ("alarms", "Low priority: repeat every", "time between two alarm bursts"),
    "alarms.audio_off_reminder_s": ("alarms", "Audio off: reminder every", "a reminder while alarm audio is off"),
    # sound
    "audio.volume_pct": ("sound", "Volume", "response tones and EMG sound"),
    "audio.alarm_volume_floor_pct": ("sound", "Alarm volume at least", "alarms are never quieter than this"),
    "audio.emg_audio": ("sound", "EMG on the loudspeaker", "the free-running EMG is heard"),
    "audio.alsa_device": ("service", "Sound output device", "the loudspeaker's system name (start-up only)"),
    # display
    "ui.settings_pin": ("display", "Settings PIN", "4 to 8 digits, asked before settings can be changed"),
    # tube check
    "tube.max_impedance_kohm": ("tube", "Electrode impedance below", "each electrode passes below this"),
    "tube.max_imbalance_kohm": ("tube", "Pair imbalance below", "difference within a pair of electrodes"),
    "tube.breathing_window_s": ("tube", "Breathing check: watch for", "EMG watched after a tube check"),
    "tube.breathing_low_hz": ("tube", "Breathing check: slowest breathing", "0.1 Hz is 6 breaths a minute"),
    "tube.breathing_high_hz": ("tube", "Breathing check: fastest breathing", "0.7 Hz is 42 breaths a minute"),
    "tube.breathing_min_modulation_pct": ("tube", "Breathing check: modulation at least",
                                          "rise and fall of the EMG with each breath"),
    "tube.breathing_min_wander_uV": ("tube", "Breathing check: wander at least",
                                     "swing of the baseline with each breath; 0: not needed"),
    # service
    "acq.sample_rate_hz": ("service", "EMG sampling rate", ""),
    "acq.stream_block_ms": ("service", "EMG block length", ""),
    "analysis.bandpass_low_hz": ("service", "Measurement filter, low corner", ""),
    "analysis.bandpass_high_hz": ("service", "Measurement filter, high corner", ""),
    "analysis.artifact_blank_ms": ("service", "Stimulus artifact blanking", ""),
    "analysis.window_ms": ("service", "Analysis window", "after the stimulus"),
    "analysis.saturation_uV": ("service", "Out-of-range signal level", ""),
    "analysis.cautery_rms_uV": ("service", "Cautery detection level", ""),
    "analysis.peak_lowpass_hz": ("service", "Peak measurement filter", ""),
    "analysis.min_snr": ("service", "Response over noise at least", "peak-to-peak over noise"),
    "analysis.max_phase_ms": ("service", "Widest first phase", "wider is not a nerve response"),
    "analysis.response_end_vagus_ms": ("service", "Vagal response window ends", ""),
    "analysis.response_end_rln_ms": ("service", "RLN response window ends", ""),
    "analysis.response_end_ebsln_ms": ("service", "EBSLN response window ends", ""),
    "analysis.response_end_untagged_ms": ("service", "Response window ends, site not given", ""),
    "analysis.rail_min_uV": ("service", "Amplifier limit level", ""),
    "analysis.flatline_ms": ("service", "Flat signal at the limit for", ""),
    "analysis.step_uV": ("service", "Baseline step level", ""),
    "emg.highpass_hz": ("service", "Free-running EMG filter, low corner", ""),
    "emg.lowpass_hz": ("service", "Free-running EMG filter, high corner", ""),
    "emg.spike_threshold_uV": ("service", "Irritation: potential at least", ""),
    "emg.spike_snr": ("service", "Irritation: over noise at least", ""),
    "emg.max_gap_ms": ("service", "Irritation: gap at most", ""),
    "emg.min_potentials": ("service", "Irritation: potentials at least", ""),
    "emg.train_cv": ("service", "Irritation: train regularity", ""),
    "emg.cautery_hold_ms": ("service", "Cautery over after quiet for", ""),
    "gpio.footswitch_debounce_ms": ("service", "Footswitch settle time", ""),
    "gpio.footswitch_long_press_s": ("service", "Footswitch long press", "held this long: acknowledge"),
    "gpio.red_led_pin": ("service", "Red alarm light, pin", "start-up only"),
    "gpio.yellow_led_pin": ("service", "Yellow alarm light, pin", "start-up only"),
    "gpio.green_led_pin": ("service", "Green status light, pin", "start-up only"),
    "gpio.buzzer_pin": ("service", "Backup buzzer, pin", "start-up only"),
    "gpio.footswitch_pin": ("service", "Footswitch, pin", "start-up only"),
    "record.min_free_hours": ("service", "Warn below free recording time", "checked as a case opens; 0: no check"),
    "record.retention_days": ("service", "Keep exported cases for", "then they may be removed; 0: keep all"),
    "export.media_roots": ("service", "USB stick folders", "where removable media appear (start-up only)"),
    "link.heartbeat_ms": ("service", "Board heartbeat", "start-up only"),
    "link.timeout_ms": ("service", "Board link lost after", "start-up only"),
    # the remote reading station (service: set up once per appliance)
    "remote.enabled": ("service", "Remote reading station", "send the live case to the station; start-up only"),
    "remote.broker_url": ("service", "Remote station: broker address", "start-up only"),
    "remote.appliance_id": ("service", "Remote station: this monitor's name", "start-up only"),
    "remote.topic_prefix": ("service", "Remote station: topic prefix", "start-up only"),
    "remote.tls_ca": ("service", "Remote station: CA certificate file", "start-up only"),
    "remote.tls_cert": ("service", "Remote station: certificate file", "start-up only"),
    "remote.tls_key": ("service", "Remote station: key file", "start-up only"),
    "remote.password_file": ("service", "Remote station: password file", "start-up only"),
    "remote.notice_after_s": ("service", "Remote station: notice after",
                              "the station unreachable this long: a notice on this screen"),
}
SETTINGS: dict[str, SettingInfo] = {k: SettingInfo(k, g, n, h) for k, (g, n, h) in _S.items()}


def setting_info(key: str, doc: str = "") -> SettingInfo:
    """The setting's group and name; a setting unknown here goes to Service, named by its
    description (or, lacking one, by its last part in words)."""
    info = SETTINGS.get(key)
    if info is not None:
        return info
    name = (doc or key.rpartition(".")[2].replace("_", " ")).strip()
    return SettingInfo(key, "service", name[:1].upper() + name[1:])


def setting_name(key: str) -> str:
    """A setting's name in words."""
    return setting_info(key).name


def fmt_value(value: Any, unit: str = "", kind: str = "") -> str:
    """A setting's value with its unit: 1.5 mA, on/off, 100 µs."""
    u = unit_words(unit)
    if isinstance(value, bool) or kind == "bool":
        return "on" if value else "off"
    if isinstance(value, float):
        text = f"{value:g}"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return f"{text} {u}".strip() if u and u != "%" else (f"{text} %" if u == "%" else text)


def range_words(spec: Mapping[str, Any]) -> str:
    """'0.1-10 mA, default 1 mA' for a schema row."""
    unit = unit_words(spec.get("unit"))
    lo, hi = spec.get("minimum"), spec.get("maximum")
    parts = []
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and not isinstance(lo, bool):
        parts.append(f"{lo:g}-{hi:g}" + (f" {unit}" if unit else ""))
    elif spec.get("choices"):
        parts.append("one of " + ", ".join(map(str, spec["choices"])))
    if "default" in spec:
        parts.append("default " + fmt_value(spec.get("default"), spec.get("unit") or "", spec.get("kind") or ""))
    return ", ".join(parts)


# ---------------------------------------------------------------- electrodes, sites, alarms

ELECTRODES = {"L_POS": "left electrode (+)", "L_NEG": "left electrode (-)", "R_POS": "right electrode (+)",
              "R_NEG": "right electrode (-)", "GROUND": "ground", "STIM_RETURN": "stimulus return"}


def electrode_name(key: str) -> str:
    """'left electrode (+)' for ``L_POS``."""
    return ELECTRODES.get(str(key), str(key).replace("_", " ").lower())


# the catalogue's titles (app/alarms/catalog.py), as the nurse reads them in a list
ALARM_TITLES = {
    "loss_of_signal": "LOSS OF SIGNAL", "combined_event": "COMBINED EVENT",
    "amplitude_decrease": "Check tube position", "poor_baseline": "Poor baseline: check tube",
    "no_current": "No stimulus current", "board_link_lost": "Board link lost", "board_fault": "Board fault",
    "lead_off": "Lead off", "storage_problem": "Storage problem", "audio_failure": "Audio failure",
    "engine_fault": "Monitor fault", "signal_recovered": "Signal recovered",
    "nonrecurrent_nerve_suspected": "Non-recurrent nerve suspected", "baseline_set": "Baseline set",
}
# what to do, short enough for the alarm banner (the full action is on the alarm list)
BANNER_ACTIONS = {
    "loss_of_signal": "Stop dissection and traction; troubleshoot.",
    "combined_event": "Release traction now; wait for recovery.",
    "amplitude_decrease": "Check tube depth and rotation; clear saliva.",
    "poor_baseline": "Check tube position and contact; relaxants?",
    "no_current": "Probe on tissue? Check the leads; dry the field.",
    "board_link_lost": "NOT MONITORED: check the USB cable and power.",
    "board_fault": "Check the fault; replace the board if it stays.",
    "lead_off": "Check the electrode leads, then the tube check.",
    "storage_problem": "Free the storage; export the case soon.",
    "audio_failure": "Backup buzzer only: check the loudspeaker.",
    "engine_fault": "NOT MONITORED until the monitor restarts.",
}


def banner_action(alarm: Mapping[str, Any]) -> str:
    """What to do about ``alarm``, in one short sentence."""
    short = BANNER_ACTIONS.get(str(alarm.get("kind")))
    if short:
        return short
    return plain(alarm.get("action") or alarm.get("message") or "")


def alarm_where(alarm: Mapping[str, Any]) -> str:
    """'left vagus' for an alarm (or its key in words)."""
    where = P.site_side_name(alarm.get("site"), alarm.get("side"))
    if where:
        return where
    key = str(alarm.get("key") or str(alarm.get("id") or "").partition(":")[2])
    return key_words(key) if key else ""


def alarm_heading(alarm: Mapping[str, Any]) -> str:
    """'LOSS OF SIGNAL, left vagus'."""
    title = str(alarm.get("title") or alarm_title(alarm.get("kind"), "ALARM")).upper()
    where = alarm_where(alarm)
    return title + (f", {where}" if where else "")


# a key names a site or a stimulator output (app.model), in app.format's words; on a
# screen an untagged stimulus is one whose site was not given, the APS the vagal electrode
_SITE_WORDS = {**fmt.SITE_WORDS, **fmt.SOURCE_WORDS, "UNTAGGED": "site not given", "APS": "vagal electrode"}
_SIDE_WORDS = fmt.SIDE_WORDS


def key_words(key: str) -> str:
    """``VAGUS-L`` -> 'left vagus'; a key of another shape in plain words."""
    site, _, side = str(key).rpartition("-")
    if side in _SIDE_WORDS and site:
        return f"{_SIDE_WORDS[side]} {_SITE_WORDS.get(site, site.lower())}"
    return plain(str(key))


def alarm_title(kind: str | None, fallback: str = "") -> str:
    """An alarm's title from its kind."""
    return ALARM_TITLES.get(str(kind), fallback or str(kind or "alarm").replace("_", " "))


def alarm_id_words(alarm_id: str) -> str:
    """``loss_of_signal:VAGUS-L`` -> 'LOSS OF SIGNAL, left vagus'."""
    kind, _, key = str(alarm_id).partition(":")
    return alarm_title(kind) + (f", {key_words(key)}" if key else "")


def who_words(who: Any) -> str:
    """Who did something: the touchscreen, the footswitch, the monitor, a console."""
    w = str(who or "")
    base = w.split("#")[0]
    if base == "ui":
        return "at the touchscreen"
    if base in ("lnm-ack", "lnm-status", "lnm-events", "console", "cli"):
        return "at the service console"
    if base in ("footswitch", "gpio"):
        return "with the footswitch"
    if base in ("timer", "rules", "monitor", "engine", "probe"):
        return "by the monitor"
    if base in ("surgeon", "nurse", "operator"):
        return f"by the {base}"
    return f"by {w}" if w else ""


# ---------------------------------------------------------------- plain words for engine text

_ENUM_WORDS = {
    "not_examined": "not examined", "postpone_second_side": "postpone the second side",
    "proceed_second_side": "proceed with the second side", "true_los": "true loss of signal",
    "not_true_los": "not a true loss of signal", "not_measurable": "not measurable",
    "stimulation_problem": "stimulation problem", "neuromuscular_blockade": "neuromuscular blockade",
    "system_fault_likely": "system fault likely", "recording_problem_likely": "recording problem likely",
    "needs_confirmation": "needs a confirmation", "bad_state": "not possible now",
}
_KEY_NAMES = "|".join(SITES + SOURCES)
_SIDE_LETTERS = "".join(SIDES)
_KEY_RE = re.compile(rf"\b({_KEY_NAMES})-([{_SIDE_LETTERS}])\b")
_ALARM_ID_RE = re.compile(rf"\b([a-z]+(?:_[a-z]+)+):((?:{_KEY_NAMES})-[{_SIDE_LETTERS}]|[A-Za-z0-9_-]+)")
_ELECTRODE_RE = re.compile(r"\b(L_POS|L_NEG|R_POS|R_NEG|STIM_RETURN|GROUND)\b")
_SIDE_RE = re.compile(r"\bsides? ([LR](?:, [LR])*)\b")
_SETTING_RE = re.compile(r"\b(?:stim|acq|analysis|emg|rules|tube|alarms|audio|gpio|link|ui)\.[a-z][A-Za-z0-9_]*\b")
_PATTERN_RE = re.compile(r"\s*(?:matching|pattern)\s+\S*[\[\\^$(){}|*+?]\S*")
_UNIT_RE = re.compile(r"(?<=\d)\s?uV\b|\buV\b")


def plain(text: Any) -> str:
    """Engine text with program terms in words (see the module docstring)."""
    s = str(text or "")
    if not s:
        return ""
    s = _PATTERN_RE.sub("", s)
    s = _ALARM_ID_RE.sub(lambda m: alarm_id_words(f"{m.group(1)}:{m.group(2)}") if m.group(1) in ALARM_TITLES
                         else m.group(0), s)
    s = _KEY_RE.sub(lambda m: f"{_SIDE_WORDS[m.group(2)]} {_SITE_WORDS[m.group(1)]}", s)
    s = _ELECTRODE_RE.sub(lambda m: electrode_name(m.group(1)), s)
    s = _SIDE_RE.sub(lambda m: " and ".join(_SIDE_WORDS[x] for x in m.group(1).split(", ")) + " side"
                     + ("s" if "," in m.group(1) else ""), s)
    s = _SETTING_RE.sub(_dotted_words, s)
    for k, v in _ENUM_WORDS.items():
        s = s.replace(k, v)
    s = _UNIT_RE.sub(lambda m: m.group(0).replace("uV", "µV"), s)
    s = re.sub(r"\bkOhm\b|\bkohm\b", "kΩ", s)
    s = re.sub(r"\(\s*\)", "", s)
    s = re.sub(r"\b([A-Za-z][\w ]*?) \((\1)\)", r"\1", s, flags=re.IGNORECASE)  # "Left vagus (left vagus)"
    return re.sub(r"\s{2,}", " ", s).strip()


def _dotted_words(m: re.Match[str]) -> str:
    key = m.group(0)
    if key in SETTINGS:
        return f"'{SETTINGS[key].name}'"
    if key in _OPERATOR:
        return f"'{_OPERATOR[key]}'"
    return key


# ---------------------------------------------------------------- refusals

ARG_NAMES = {
    "patient_id": "Patient ID", "surgeon": "Surgeon", "profile": "Profile", "procedure": "Procedure",
    "planned_sides": "Sides", "tube_type": "Tube type", "tube_size_mm": "Tube size", "tube_depth_cm": "Tube depth",
    "current_mA": "Current", "rate_hz": "Rate", "pulse_width_us": "Pulse width", "note": "Note", "text": "Note",
    "reason": "Reason", "position_mm": "Position", "amplitude_uV": "Amplitude", "comment": "Comment",
    "label": "Label", "target": "Export folder",
}


# what a patterned argument accepts, in words (the pattern itself is never shown)
ARG_ALLOWED = {
    "patient_id": "letters, digits and - _ . only, starting with a letter or digit, up to 32 characters",
    "profile": "letters, digits, - and _ only, up to 40 characters",
    "client": "letters, digits and - _ . : only, up to 40 characters",
}


def arg_name(name: str) -> str:
    """An API argument's name in words."""
    return ARG_NAMES.get(str(name), str(name).replace("_", " ").capitalize())


def _problem_words(problem: str) -> str:
    """The engine's 'is 12, out of range' as '12 is out of range'."""
    p = problem.strip()
    m = re.match(r"^is (.+), (not a number|not an integer|out of range|not text)$", p)
    if m:
        return f"{m.group(1)} is {m.group(2)}"
    m = re.match(r"^is (\d+) characters long$", p)
    if m:
        return f"{m.group(1)} characters is too long"
    m = re.match(r"^is (.+)$", p)
    if m and m.group(1) != "required":
        return f"{m.group(1)} is not accepted"
    return p


def refusal_words(code: str, message: str, error: Mapping[str, Any] | None = None) -> str:
    """An engine refusal in one sentence (no command names, keys or patterns)."""
    err = error or {}
    msg = str(message or "")
    if code == "invalid_argument" and err.get("argument"):
        # "cmd: argument X (unit) PROBLEM; must be WHAT" -> "Name: PROBLEM; allowed: WHAT"
        m = re.match(r"^[\w.]+: argument (\w+)(?: \(([^)]*)\))? (.*?)(?:; must be (.*))?$", msg)
        if m:
            arg = m.group(1)
            what = ARG_ALLOWED.get(arg) or plain(m.group(4) or "")
            text = f"{arg_name(arg)}: {plain(_problem_words(m.group(3) or 'is not accepted'))}"
            if what:
                text += f"; allowed: {what}"
            return text
        return plain(re.sub(r"^[\w.]+:\s*", "", msg))
    if code == "setting_rejected" and err.get("setting"):
        key = str(err["setting"])
        rest = re.sub(r"^setting\s+" + re.escape(key) + r"(?:\s*\([^)]*\))?\s*:?\s*", "", msg)
        return f"{setting_name(key)}: {plain(rest)}"
    return plain(re.sub(r"^[a-z]+(?:\.[a-z_]+)+:\s*", "", msg))


# ---------------------------------------------------------------- events

_TRANSITIONS = {
    "raised": "alarm", "re_raised": "alarm again", "cleared": "condition ended; cleared",
    "removed": "removed from the list (acknowledged after its condition ended)", "reset": "reset",
    "notice": "", "refused": "not possible",
}
_AUDIO = {
    "audio_paused": "Alarm audio paused", "audio_off": "Alarm audio switched OFF (high priority still sounds)",
    "audio_on": "Alarm audio on again", "audio_pause_expired": "Alarm audio pause ended",
    "audio_reminder": "Reminder: alarm audio is off", "restored": "Alarm list restored after a restart",
}


def _where(ev: Mapping[str, Any]) -> str:
    site, side = ev.get("site"), ev.get("side")
    if site or side:
        return P.site_side_name(site, side)
    det = ev.get("detail") or {}
    key = str(det.get("alarm") or "").partition(":")[2]
    return key_words(key) if key else ""


def alarm_event_words(ev: Mapping[str, Any]) -> str:
    """An ``alarm`` event (a transition of the alarm manager) in words."""
    kind = str(ev.get("kind") or "")
    det = ev.get("detail") or {}
    who = who_words(det.get("who"))
    if kind in _AUDIO:
        text = _AUDIO[kind]
        if kind == "audio_paused" and isinstance(det.get("duration_s"), (int, float)):
            text += f" for {P.fmt_duration(det['duration_s'])}"
        return text + (f" {who}" if who and kind in ("audio_paused", "audio_off", "audio_on") else "")
    title = alarm_title(det.get("kind"), "Alarm")
    where = _where(ev)
    head = title + (f", {where}" if where else "")
    if kind == "acknowledged":
        return f"{head}: acknowledged" + (f" {who}" if who else "")
    if kind == "escalated":
        to = P.priority_label(det.get("to_priority")) or str(det.get("to_priority") or "")
        secs = det.get("unacknowledged_s")
        return f"{head}: escalated to {to}" + (f", not acknowledged for {secs:.0f} s"
                                              if isinstance(secs, (int, float)) else "")
    if kind == "condition_ended":
        return f"{head}: condition ended (stays listed until acknowledged or reset)"
    if kind == "reset":
        return f"{head}: reset" + (f" {who}" if who else "")
    if kind == "refused":
        action = str(det.get("action") or "action").replace("_", " ")
        return f"{head}: {action} not possible: {plain(det.get('reason'))}"
    if kind in ("raised", "re_raised"):
        msg = plain(det.get("message"))
        return f"{head}: {_TRANSITIONS[kind]}" + (f". {msg}" if msg else "")
    return f"{head}: {_TRANSITIONS.get(kind, kind.replace('_', ' '))}".rstrip(": ")


_OPERATOR = {
    "stim.set": "stimulation changed", "stim.output": "stimulator switched", "stim.single": "single pulse",
    "probe.site": "probe site chosen", "aps.side": "vagal electrode side chosen", "step.tag": "step recorded",
    "step.clear": "step cleared", "laryngoscopy": "laryngoscopy finding", "case.update": "case details changed",
    "settings.set": "settings changed", "alarm.ack": "alarm acknowledged", "alarm.pause_audio": "alarm audio paused",
    "alarm.reset": "alarms reset", "alarm.audio_off": "alarm audio switched", "tube.check": "tube check started",
    "tube.override": "failed tube check accepted", "ts.answer": "troubleshooting answer", "ts.verdict": "verdict",
    "mapping.result": "mapping point", "mapping.clear": "mapping cleared", "baseline.capture": "baseline taken",
    "baseline.rebaseline": "new vagal baseline started", "staging.decision": "staging decision",
    "sim.control": "virtual board control", "case.start": "case opened", "case.close": "case closed",
    "export.usb": "exported to USB", "report.get": "report written", "selftest.run": "self-test",
}


def _operator_words(ev: Mapping[str, Any]) -> str:
    det = dict(ev.get("detail") or {})
    who = who_words(det.pop("client", None))
    action = str(ev.get("kind") or "")
    what = _OPERATOR.get(action, action.replace(".", " ").replace("_", " "))
    parts = []
    if action == "stim.set":
        out = "probe" if det.get("output") == "probe" else "vagal electrode"
        if det.get("current_mA") is not None:
            parts.append(f"{out} current {P.fmt_ma(det['current_mA'], 1)} mA")
        if det.get("rate_hz") is not None:
            parts.append(f"{out} rate {det['rate_hz']:g} Hz")
    elif action == "stim.output":
        out = "probe" if det.get("output") == "probe" else "vagal electrode"
        what = f"{out} {'on' if det.get('on') else 'off'}"
    elif action == "probe.site":
        what = f"probe at the {P.site_side_name(det.get('site'), det.get('side'))}"
    elif action == "settings.set" and isinstance(det.get("changes"), Mapping):
        parts += [f"{setting_name(k)} {v}" for k, v in det["changes"].items()]
    elif action == "laryngoscopy":
        parts.append(f"{det.get('phase', '')} {P.side_name(det.get('side')).lower()}: "
                     f"{P.FINDING_WORDS.get(str(det.get('finding')), plain(det.get('finding')))}")
    elif action in ("step.tag", "step.clear"):
        parts.append(f"{det.get('step', '')} {P.side_name(det.get('side')).lower()}")
    text = what + (": " + ", ".join(p for p in parts if p) if parts else "")
    return text[:1].upper() + text[1:] + (f" {who}" if who else "")


def event_words(ev: Mapping[str, Any]) -> str:
    """An engine ``event`` in words (no ids, keys or enum values)."""
    cat = ev.get("category")
    if cat == "alarm":
        return alarm_event_words(ev)
    if cat == "operator":
        if ev.get("kind") == "note":
            text = str(ev.get("message") or "")
            return "Note: " + text if not text.startswith("UI FAULT") else "Touchscreen program error recorded"
        if ev.get("kind") == "snapshot":
            return "Snapshot saved" + (f": {plain(ev['message'].partition(': ')[2])}" if ": " in str(
                ev.get("message")) else "")
        return _operator_words(ev)
    if cat == "rule":
        det = ev.get("detail") or {}
        title = alarm_title(ev.get("kind"), "")
        msg = plain(det.get("message") or "")
        where = _where(ev)
        if title and ev.get("kind") in ALARM_TITLES:
            return title + (f", {where}" if where else "") + (f": {msg}" if msg else "")
    if cat == "procedure" and ev.get("kind") == "step_recorded":
        det = ev.get("detail") or {}
        amp = det.get("amplitude_uV")
        lat = det.get("latency_ms")
        value = (f"{P.fmt_amp(amp)} µV" if amp is not None else "no value") + (
            f", {P.fmt_lat(lat)} ms" if lat is not None else "")
        return f"{det.get('step', 'Step')} {P.side_name(ev.get('side')).lower()} recorded: {value}"
    return plain(ev.get("message") or str(ev.get("kind") or "").replace("_", " "))


def event_line(ev: Mapping[str, Any]) -> str:
    """'0:12:34  !!! HIGH  LOSS OF SIGNAL, left vagus: alarm' (time, priority, words)."""
    pr = P.priority_label(ev.get("priority"))
    return f"{P.fmt_clock(ev.get('t_s'))}  " + (f"{pr}  " if pr else "") + event_words(ev)
