"""Topics and payloads of remote monitoring, version 1 (pure: no sockets, no threads).

Owns: the topic layout ``<prefix>/v1/<appliance>/<kind>`` (``Topics``, ``parse_topic``),
the payload builders the publisher uses (state, alarms, events from journal entries,
measurements, waveforms, EMG), the pseudonymisation of what leaves the appliance, and the
validation of the only messages the appliance accepts from the broker (``parse_inbox``).
``docs/remote.md`` documents the same for people.
May import: the standard library, ``app.record.document`` (the case document's
pseudonymiser: ``PERSONAL_FIELDS``, the event titles).

Every payload is a JSON object with ``"v": 1``. Readers ignore fields they do not know;
anything else changes ``v`` and the topic version together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

from app.record.document import EVENT_TITLES, PERSONAL_FIELDS

VERSION = 1
DEFAULT_PREFIX = "lnm"
# Appliance ids have no dot, station user names have one: the two can never be the same
# broker identity, so the ACL's per-appliance patterns never grant a reader anything.
APPLIANCE_ID = r"[a-z0-9][a-z0-9-]{0,31}"
READER_ID = r"[a-z][a-z0-9_-]{0,30}\.[a-z0-9][a-z0-9_.-]{0,30}"
PREFIX = r"[A-Za-z0-9_-]{1,32}(/[A-Za-z0-9_-]{1,32}){0,3}"

# what the appliance publishes: kind -> (QoS, retained)
PUBLISHED: Mapping[str, tuple[int, bool]] = {
    "status": (1, True),  # online / offline (the last will)
    "state": (1, True),  # the engine's state snapshot, pseudonymised
    "alarm": (1, True),  # the active alarms with their acknowledgement state
    "event": (1, False),  # journal entries for people, seq + prev for gap detection
    "measurement": (1, False),  # every stimulus's measurement
    "waveform": (0, False),  # every stimulus's epoch, decimated
    "emg": (0, False),  # the free-running EMG envelope at display rate
    "health": (1, True),  # the publisher's own health (queue, drops, journal cursor)
    "messages": (1, True),  # the reader messages of the case and their acknowledgement
    "history": (1, False),  # answers to backfill and stimulus requests
}
INBOX = "inbox"  # <base>/inbox/<reader>: the only topic the appliance reads

MAX_INBOX_BYTES = 4096
MAX_TEXT = 500
MAX_NAME = 64
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")

SIDE_WORDS = {"L": "left", "R": "right"}
SITE_WORDS = {"VAGUS": "vagus", "RLN": "RLN", "EBSLN": "EBSLN", "UNTAGGED": "untagged site"}


class Topics:
    """The topics of one appliance: ``Topics("lnm", "or-1").of("state")`` -> ``lnm/v1/or-1/state``."""

    def __init__(self, prefix: str, appliance: str) -> None:
        if not re.fullmatch(PREFIX, prefix):
            raise ValueError(f"topic prefix {prefix!r}: must match {PREFIX}")
        if not re.fullmatch(APPLIANCE_ID, appliance):
            raise ValueError(f"appliance id {appliance!r}: must match {APPLIANCE_ID}")
        self.prefix = prefix
        self.appliance = appliance
        self.base = f"{prefix}/v{VERSION}/{appliance}"

    def of(self, kind: str) -> str:
        if kind not in PUBLISHED and kind != INBOX:
            raise ValueError(f"unknown topic kind {kind!r}")
        return f"{self.base}/{kind}"

    def inbox(self, reader: str) -> str:
        return f"{self.base}/{INBOX}/{reader}"

    @property
    def inbox_filter(self) -> str:
        return f"{self.base}/{INBOX}/+"

    @property
    def all_filter(self) -> str:
        return f"{self.base}/#"


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> tuple[str, str, str] | None:
    """``(appliance, kind, rest)`` of a topic under ``prefix`` (``rest``: the reader of an
    inbox topic, else ""), or ``None`` for anything that is not one of ours."""
    head = f"{prefix}/v{VERSION}/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if not parts or not re.fullmatch(APPLIANCE_ID, parts[0]):
        return None
    if len(parts) == 2 and parts[1] in PUBLISHED:
        return parts[0], parts[1], ""
    if len(parts) == 3 and parts[1] == INBOX and re.fullmatch(READER_ID, parts[2]):
        return parts[0], INBOX, parts[2]
    return None


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON, no NaN (they become null)."""
    return json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False).encode("utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- pseudonymisation


def pseudonymise(data: Any) -> Any:
    """A copy without the personal fields the case document leaves out when pseudonymised
    (surgeon's and operators' names), at any depth (an operator event carries the command's
    arguments); the patient id is the pseudonym the case was opened with."""
    if isinstance(data, Mapping):
        return {k: (None if k in PERSONAL_FIELDS else pseudonymise(v)) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [pseudonymise(v) for v in data]
    return data


def state_payload(state: Mapping[str, Any], appliance: str, at: float) -> dict[str, Any]:
    """The engine's state snapshot as published (pseudonymised, alarms in their own topic)."""
    st = pseudonymise({k: v for k, v in state.items() if k not in ("type", "alarms")})
    case = st.get("case") or {}
    return {"v": VERSION, "appliance": appliance, "at": at, "case_id": case.get("case_id"), "state": st}


def alarm_payload(alarms: Mapping[str, Any], appliance: str, case_id: str | None, at: float,
                  emitted_at: float | None) -> dict[str, Any]:
    """The active alarms (the engine's ``alarms`` message). ``emitted_at``: wall time the
    engine handed it over (the station measures its delay from there)."""
    body = {k: v for k, v in alarms.items() if k != "type"}
    return {"v": VERSION, "appliance": appliance, "at": at, "emitted_at": emitted_at, "case_id": case_id, **body}


def measurement_payload(m: Mapping[str, Any], case_id: str | None) -> dict[str, Any]:
    """One stimulus's measurement (the engine's ``measurement`` message)."""
    body = {k: v for k, v in m.items() if k != "type"}
    return {"v": VERSION, "case_id": case_id, **body}


def waveform_payload(w: Mapping[str, Any], case_id: str | None, max_rate_hz: float = 2500.0) -> dict[str, Any]:
    """An epoch for display: averaged down to at most ``max_rate_hz``, 0.1 uV."""
    rate = float(w.get("sample_rate_hz") or 0.0)
    factor = max(1, int(rate // max_rate_hz)) if rate > 0 else 1
    channels = {}
    for name, samples in (w.get("channels") or {}).items():
        xs = list(samples or [])
        n = (len(xs) // factor) * factor
        channels[name] = [round(sum(xs[i:i + factor]) / factor, 1) for i in range(0, n, factor)]
    body = {k: v for k, v in w.items() if k not in ("type", "channels", "sample_rate_hz")}
    return {"v": VERSION, "case_id": case_id, **body, "sample_rate_hz": rate / factor if rate else rate,
            "channels": channels}


def emg_payload(e: Mapping[str, Any], case_id: str | None, max_bin_hz: float = 200.0) -> dict[str, Any]:
    """The free-running EMG envelope, merged down to at most ``max_bin_hz`` bins a second."""
    bin_hz = float(e.get("bin_hz") or 0.0)
    factor = max(1, int(bin_hz // max_bin_hz)) if bin_hz > 0 else 1
    channels = {}
    for name, env in (e.get("channels") or {}).items():
        lo, hi = list(env.get("min") or []), list(env.get("max") or [])
        n = (min(len(lo), len(hi)) // factor) * factor
        channels[name] = {"min": [round(min(lo[i:i + factor]), 1) for i in range(0, n, factor)],
                          "max": [round(max(hi[i:i + factor]), 1) for i in range(0, n, factor)]}
    return {"v": VERSION, "case_id": case_id, "t_s": e.get("t_s"), "bin_hz": bin_hz / factor if bin_hz else bin_hz,
            "cautery": bool(e.get("cautery")), "channels": channels}


def status_payload(appliance: str, online: bool, at: float, software: str, reason: str = "") -> dict[str, Any]:
    """The retained status (``offline`` is also the last will)."""
    return {"v": VERSION, "appliance": appliance, "status": "online" if online else "offline", "at": at,
            "software": software, "reason": reason}


# --------------------------------------------------------------------------- events from journal entries

# journal kinds that are events for people (the others are data: stimuli, EMG, settings
# dumps, procedure states; an ``engine`` entry whose event is "state" is a resume snapshot)
EVENT_KINDS = ("case_opened", "case_closed", "setting_changed", "tube_check", "rule_event", "alarm", "step",
               "laryngoscopy", "operator", "troubleshooting", "mapping", "los_type", "staging", "note", "snapshot",
               "link", "engine", "storage", "irritation", "cautery", "reader_message")
_CATEGORY = {
    "case_opened": "case", "case_closed": "case", "setting_changed": "operator", "operator": "operator",
    "rule_event": "rule", "alarm": "alarm", "step": "procedure", "laryngoscopy": "procedure",
    "troubleshooting": "procedure", "mapping": "procedure", "los_type": "procedure", "staging": "procedure",
    "tube_check": "procedure", "note": "note", "snapshot": "note", "link": "technical", "engine": "technical",
    "storage": "technical", "irritation": "emg", "cautery": "emg", "reader_message": "message",
}
_TRANSITIONS = {"raised": "Alarm", "acknowledged": "Acknowledged", "cleared": "Cleared", "reset": "Reset",
                "condition_ended": "Condition ended", "escalated": "Escalated", "audio_paused": "Alarm audio paused",
                "audio_off": "Alarm audio off", "audio_on": "Alarm audio on", "audio_resumed": "Alarm audio resumed"}


def is_event(kind: str, payload: Mapping[str, Any]) -> bool:
    """Whether a journal entry is published as an event."""
    return kind in EVENT_KINDS and not (kind == "engine" and payload.get("event") == "state")


def where(side: Any, site: Any = None) -> str:
    """"left vagus", "right RLN", "left" ..."""
    words = [SIDE_WORDS.get(str(side), "")] if side else []
    if site:
        words.append(SITE_WORDS.get(str(site), str(site)))
    return " ".join(w for w in words if w)


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else fmt.format(x)


def _text_alarm(p: Mapping[str, Any]) -> str:
    transition = str(p.get("transition", ""))
    word = _TRANSITIONS.get(transition, transition.replace("_", " ").capitalize())
    name = str(p.get("alarm_id") or "")
    message = p.get("message") or ""
    return f"{word}: {name}" + (f" ({message})" if message else "") if name else word


def _text_reader_message(p: Mapping[str, Any]) -> str:
    if p.get("event") == "acknowledged":
        return f"Message from {p.get('from') or p.get('reader')} acknowledged by {p.get('who') or 'the OR'}"
    return f"Message from {p.get('from') or p.get('reader')}: {p.get('text', '')}"


def event_text(kind: str, p: Mapping[str, Any]) -> str:
    """One sentence for a journal entry of an event kind."""
    side = p.get("side")
    if kind == "rule_event":
        title = EVENT_TITLES.get(str(p.get("kind")), str(p.get("kind", "")).replace("_", " ").capitalize())
        w = where(side, p.get("site"))
        return f"{title}, {w}" if w else title
    if kind == "alarm":
        return _text_alarm(p)
    if kind == "reader_message":
        return _text_reader_message(p)
    simple = {
        "case_opened": lambda: "Case opened" + (f": {p['procedure']}" if p.get("procedure") else ""),
        "case_closed": lambda: "Case closed" + (f": {p['reason']}" if p.get("reason") else ""),
        "setting_changed": lambda: f"Setting {p.get('key')}: {p.get('old')} -> {p.get('new')}",
        "tube_check": lambda: "Tube check " + ("passed" if p.get("passed") else "FAILED")
        + (f": {p['message']}" if p.get("message") else ""),
        "step": lambda: f"Step {p.get('step')} {SIDE_WORDS.get(str(side), '')}: "
        + ("no response" if p.get("response") is False else
           f"{_num(p.get('amplitude_uV'), '{:.0f}')} uV, {_num(p.get('latency_ms'), '{:.2f}')} ms"),
        "laryngoscopy": lambda: f"Laryngoscopy {p.get('step')}" + (f" {SIDE_WORDS.get(str(side), '')}: "
                                                                   f"{p.get('finding')}" if side else ""),
        "operator": lambda: f"{p.get('who') or 'operator'}: {str(p.get('action', '')).replace('_', ' ')}",
        "troubleshooting": lambda: f"Troubleshooting {SIDE_WORDS.get(str(side), '')}: {p.get('check')} "
                                   f"{p.get('answer')}",
        "mapping": lambda: f"Mapping {SIDE_WORDS.get(str(side), '')} at {_num(p.get('position_mm'), '{:.0f}')} mm: "
                           + ("response" if p.get("response") else "no response"),
        "los_type": lambda: f"Loss of signal {SIDE_WORDS.get(str(side), '')}: type {p.get('los_type')}",
        "staging": lambda: "Staging: " + str(p.get("decision") or p.get("recommendation") or ""),
        "note": lambda: f"Note: {p.get('text', '')}",
        "snapshot": lambda: "Mark" + (f": {p['label']}" if p.get("label") else ""),
        "link": lambda: f"Board link: {str(p.get('event', '')).replace('_', ' ')}"
        + (f" ({p['detail']})" if isinstance(p.get("detail"), str) and p.get("detail") else ""),
        "engine": lambda: f"Engine {p.get('event')}",
        "storage": lambda: f"Storage {p.get('event')}" + (f": {p['message']}" if p.get("message") else ""),
        "irritation": lambda: f"Irritation {SIDE_WORDS.get(str(side), '')}: {_num(p.get('duration_s'), '{:.1f}')} s, "
                              f"peak {_num(p.get('peak_uV'), '{:.0f}')} uV",
        "cautery": lambda: f"Electrocautery {p.get('state')}",
    }
    fn = simple.get(kind)
    return fn() if fn is not None else kind.replace("_", " ").capitalize()


def event_payload(case_id: str, seq: int, prev: int, kind: str, t_s: float, wall: str,
                  payload: Mapping[str, Any]) -> dict[str, Any]:
    """A journal entry of an event kind as published. ``prev``: the seq of the case's
    previous published event (-1 for the first), so a reader sees any gap."""
    p = pseudonymise(payload)
    if kind == "case_opened":
        p.pop("operator", None)
    side = p.get("side") if p.get("side") in SIDE_WORDS else None
    site = p.get("site") if isinstance(p.get("site"), str) else None
    return {"v": VERSION, "case_id": case_id, "seq": int(seq), "prev": int(prev), "t_s": round(float(t_s), 3),
            "wall": wall, "kind": kind, "category": _CATEGORY.get(kind, "other"),
            "priority": p.get("priority") if isinstance(p.get("priority"), str) else None,
            "side": side, "site": site, "text": event_text(kind, payload), "detail": p}


# --------------------------------------------------------------------------- the inbox


class InboxError(ValueError):
    """An inbox message was refused; the message says why (it is logged and counted)."""


@dataclass(frozen=True)
class ReaderMessage:
    """A message or interpretation from a reader to the OR."""

    reader: str  # the broker identity (from the topic, which the broker's ACL vouches for)
    id: str
    sender: str  # the reader's name as displayed
    text: str
    kind: str  # "message" or "interpretation"
    sent_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "reader": self.reader, "from": self.sender, "text": self.text, "kind": self.kind,
                "sent_at": self.sent_at}


@dataclass(frozen=True)
class BackfillRequest:
    """A reader asks for the case so far: events after ``since_seq``, the measurements, the trends."""

    reader: str
    request_id: str
    since_seq: int
    measurements: bool


@dataclass(frozen=True)
class StimulusRequest:
    """A reader asks for one stimulus's epoch (and the baseline's of its site and side)."""

    reader: str
    request_id: str
    index: int


def _text(value: Any, name: str, limit: int, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InboxError(f"{name}: must be text")
    value = _CONTROL.sub("", value).strip()
    if required and not value:
        raise InboxError(f"{name}: must not be empty")
    if len(value) > limit:
        raise InboxError(f"{name}: longer than {limit} characters")
    return value


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InboxError(f"{name}: must be a whole number {lo}-{hi}")
    return value


def _request_id(obj: Mapping[str, Any], name: str = "request_id") -> str:
    rid = obj.get(name)
    if not isinstance(rid, str) or not _REQUEST_ID.fullmatch(rid):
        raise InboxError(f"{name}: must be 1-64 letters, digits, - or _")
    return rid


def parse_inbox(reader: str, data: bytes) -> ReaderMessage | BackfillRequest | StimulusRequest:
    """Validate one inbox message from ``reader`` (the topic's last level); ``InboxError`` says why not."""
    if not re.fullmatch(READER_ID, reader):
        raise InboxError(f"reader {reader!r}: not a station user name")
    if len(data) > MAX_INBOX_BYTES:
        raise InboxError(f"message of {len(data)} bytes; at most {MAX_INBOX_BYTES}")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InboxError(f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InboxError("not a JSON object")
    if obj.get("v") != VERSION:
        raise InboxError(f"version {obj.get('v')!r}; this appliance speaks {VERSION}")
    kind = obj.get("type")
    if kind == "message":
        mkind = obj.get("kind", "message")
        if mkind not in ("message", "interpretation"):
            raise InboxError("kind: must be message or interpretation")
        return ReaderMessage(reader, _request_id(obj, "id"), _text(obj.get("from"), "from", MAX_NAME) or reader,
                             _text(obj.get("text"), "text", MAX_TEXT) or "", mkind,
                             _text(obj.get("sent_at"), "sent_at", 40, required=False))
    if kind == "backfill":
        since = obj.get("since_seq", -1)
        return BackfillRequest(reader, _request_id(obj), _int(since, "since_seq", -1, 2**53),
                               bool(obj.get("measurements", True)))
    if kind == "stimulus":
        return StimulusRequest(reader, _request_id(obj), _int(obj.get("index"), "index", 0, 2**53))
    raise InboxError(f"type {kind!r}: the appliance accepts message, backfill and stimulus only")
