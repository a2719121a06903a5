"""``lnm status``, ``lnm ack`` and ``lnm events``: small command-line clients of the engine.

Owns: the three subcommands and the plain-text rendering of the engine's state and events
(``format_status``, ``format_event``), which the headless ``lnm run`` view reuses.
May import: the standard library, ``app.api.client``, ``app.api.protocol`` and ``app.model``.

Exit status: 0 done; 1 the engine refused (message printed); 3 no engine answers on the
socket (the message says how to start one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from app.api.client import CommandFailed, EngineClient, EngineTimeout, EngineUnavailable
from app.model import SIDES

NO_ENGINE = 3


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    """Add the options of ``lnm status``/``ack``/``events`` (``name``) to ``parser``."""
    from app.api.protocol import default_socket_path

    parser.add_argument("--socket", type=Path, default=None, metavar="PATH",
                        help=f"engine API socket (default {default_socket_path()})")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    if name == "ack":
        parser.add_argument("--alarm", default=None, metavar="ID", help="alarm id (default: the top alarm)")
    elif name == "events":
        parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
        parser.add_argument("-n", "--limit", type=int, default=20, help="recent events to show first (default 20)")


def run(args: argparse.Namespace) -> int:
    """Run one client command; returns the exit status (see the module docstring)."""
    try:
        if args.command == "status":
            return _status(args)
        if args.command == "ack":
            return _ack(args)
        if args.command == "events":
            return _events(args)
    except EngineUnavailable as exc:
        print(f"lnm {args.command}: {exc}", file=sys.stderr)
        return NO_ENGINE
    except EngineTimeout as exc:
        print(f"lnm {args.command}: {exc}", file=sys.stderr)
        return NO_ENGINE
    except CommandFailed as exc:
        print(f"lnm {args.command}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"lnm: unknown client command {args.command!r}", file=sys.stderr)
    return 2


def _status(args: argparse.Namespace) -> int:
    with EngineClient(args.socket, name="lnm-status", role="console") as c:
        state = c.call("state.get")
    print(json.dumps(state, indent=2) if args.json else format_status(state))
    return 0


def _ack(args: argparse.Namespace) -> int:
    with EngineClient(args.socket, name="lnm-ack", role="console") as c:
        result = c.call("alarm.ack", **({"alarm": args.alarm} if args.alarm else {}))
    if args.json:
        print(json.dumps(result))
    elif result.get("alarm"):
        print(f"acknowledged: {result['alarm']}")
    else:
        print("nothing to acknowledge")
    return 0


def _events(args: argparse.Namespace) -> int:
    c = EngineClient(args.socket, name="lnm-events", role="console", reconnect=args.follow, retry_s=0.5)
    c.connect()
    try:
        result = c.call("events.list", limit=max(1, min(args.limit, 1000)))
        last = int(result.get("last_seq", 0))
        for ev in result.get("events", []):
            _print_event(ev, args.json)
        if not args.follow:
            return 0
        c.subscribe(["events"])
        c.start()
        for msg in c.messages():
            if msg.get("type") == "event":
                if msg.get("seq", 0) <= last:
                    continue
                last = msg["seq"]
                _print_event(msg, args.json)
            elif msg.get("type") == "connection":
                if msg.get("connected"):
                    last = 0  # a restarted engine numbers its events again
                    print("-- connected to the engine", file=sys.stderr, flush=True)
                else:
                    print(f"-- {msg.get('message')} (reconnecting)", file=sys.stderr, flush=True)
            elif msg.get("type") == "dropped":
                print(f"-- {msg.get('count')} events dropped (this terminal was too slow)", file=sys.stderr, flush=True)
    finally:
        c.close()
    return 0


def _print_event(ev: Mapping[str, Any], as_json: bool) -> None:
    print(json.dumps(ev) if as_json else format_event(ev), flush=True)


# ----------------------------------------------------------------------------- rendering


def _fmt(x: Any, spec: str, unit: str = "") -> str:
    if x is None:
        return "--"
    try:
        return f"{x:{spec}}{unit}"
    except (TypeError, ValueError):
        return str(x)


def format_event(ev: Mapping[str, Any]) -> str:
    """One event as one line of text."""
    t = ev.get("t_s")
    pri = ev.get("priority")
    mark = {"high": "!!!", "medium": "!! ", "low": "!  "}.get(str(pri), "   ")
    return (f"{_fmt(t, '9.2f', ' s')} {mark} {ev.get('category', ''):<9} {ev.get('kind', ''):<26} "
            f"{ev.get('message', '')}")


def format_alarms(alarms: Mapping[str, Any] | None) -> list[str]:
    """The alarm list as lines of text."""
    if not alarms:
        return ["alarms: --"]
    lines = []
    audio = alarms.get("audio")
    head = "alarms: " + (f"{len(alarms.get('active') or [])} active" if alarms.get("active") else "none")
    if audio == "paused":
        head += f"   AUDIO PAUSED {alarms.get('pause_remaining_s', 0):.0f} s"
    elif audio == "off":
        head += "   AUDIO OFF"
    lines.append(head)
    for a in alarms.get("active") or []:
        flags = [a.get("priority", "").upper()]
        if a.get("technical"):
            flags.append("technical")
        if a.get("acknowledged"):
            flags.append("acknowledged")
        if a.get("latched"):
            flags.append("condition ended")
        if a.get("escalated"):
            flags.append("escalated")
        lines.append(f"  [{', '.join(flags)}] {a.get('title') or a.get('name')} ({a.get('id')}) since "
                     f"{_fmt(a.get('raised_t_s'), '.1f', ' s')}")
    return lines


def _breathing_text(d: Any) -> str:
    """One side of the tube check's breathing variation, in a few words."""
    if not isinstance(d, Mapping):
        return "not measured" if d is None else ("present" if d is True else "ABSENT" if d is False else str(d))
    if d.get("status") == "measuring":
        rem = d.get("remaining_s")
        return "measuring" + (f" ({rem:.0f} s left)" if isinstance(rem, (int, float)) else "")
    present = d.get("present")
    if present is None:
        return "not measurable" + (f" ({d['reason']})" if d.get("reason") else "")
    values = [f"{label} {_fmt(d.get(key), '.0f', unit)}" for key, label, unit in
              (("wander_uV", "wander", " uV"), ("modulation_pct", "modulation", " %")) if d.get(key) is not None]
    return ("present" if present else "ABSENT: check the tube") + (f" ({', '.join(values)})" if values else "")


def format_status(st: Mapping[str, Any]) -> str:
    """The engine's state as a few lines of text (``lnm status`` and the ``lnm run`` view)."""
    lines = _engine_lines(st)
    lines.append(_stim_line(st.get("stim") or {}))
    for side in SIDES:
        lines.extend(_side_lines(st, side))
    staging = st.get("staging") or {}
    if staging.get("recommended"):
        lines.append(f"STAGING: {staging.get('reason')}")
    lines.extend(_tube_lines(st.get("tube")))
    emg = st.get("emg") or {}
    if emg.get("cautery"):
        lines.append("CAUTERY: EMG audio muted, epochs marked invalid")
    lines.extend(format_alarms(st.get("alarms")))
    lines.extend(format_threads(st.get("threads")))
    return "\n".join(lines)


def _engine_lines(st: Mapping[str, Any]) -> list[str]:
    """Engine, board, storage/audio and case."""
    lines = []
    eng = st.get("engine") or {}
    board = st.get("board") or {}
    case = st.get("case")
    lines.append(f"{eng.get('version', 'lnm')}  up {_fmt(eng.get('uptime_s'), '.0f', ' s')}"
                 + (f"  profile {eng['profile']}" if eng.get("profile") else "")
                 + ("  ENGINE FAULT: " + str(eng["fatal"])[:80] if eng.get("fatal") else ""))
    bline = "board: " + ("connected" if board.get("connected") else "NOT CONNECTED")
    if board.get("board_id"):
        bline += f" {board['board_id']} ({board.get('firmware')})"
    if board.get("faults"):
        bline += "  faults: " + ", ".join(board["faults"])
    if board.get("stimulating"):
        bline += "  stimulating: " + ", ".join(board["stimulating"])
    lines.append(bline)
    storage, audio = st.get("storage") or {}, st.get("audio") or {}
    if not storage.get("ok", True) or not audio.get("ok", True):
        lines.append(f"storage: {'ok' if storage.get('ok', True) else storage.get('message')}   "
                     f"audio: {'ok' if audio.get('ok', True) else audio.get('message')}")
    if case:
        lines.append(f"case {case.get('case_id')}  patient {case.get('patient_id')}  sides "
                     f"{''.join(case.get('planned_sides') or []) or '-'}  t = {_fmt(case.get('t_s'), '.1f', ' s')}"
                     + ("  (resumed)" if case.get("resumed") else ""))
    else:
        lines.append("no case open" + (f" (last: {st['last_case_id']})" if st.get("last_case_id") else ""))
    return lines


def _stim_line(stim: Mapping[str, Any]) -> str:
    pr, ap = stim.get("probe") or {}, stim.get("aps") or {}
    return (f"probe {'ON ' if pr.get('on') else 'off'} {_fmt(pr.get('current_mA'), '.2f', ' mA')} "
            f"(delivered {_fmt(pr.get('delivered_mA'), '.2f', ' mA')}) {_fmt(pr.get('rate_hz'), 'g', ' Hz')} "
            f"on {pr.get('site', '-')} {pr.get('side', '-')}" + (f" step {pr['step']}" if pr.get("step") else "")
            + f"   APS {'ON ' if ap.get('on') else 'off'} {ap.get('side', '-')} "
            f"{_fmt(ap.get('current_mA'), '.2f', ' mA')} {_fmt(ap.get('rate_hz'), 'g', ' Hz')}")


def _measurement_text(m: Mapping[str, Any] | None) -> str:
    if not m:
        return "no response yet"
    if not m.get("valid"):
        return f"{m.get('site')}/{m.get('source')} #{m.get('index')} invalid ({m.get('invalid_reason')})"
    text = (f"{m.get('site')}/{m.get('source')} #{m.get('index')} "
            f"{_fmt(m.get('amplitude_uV'), '.0f', ' uV')} {_fmt(m.get('latency_ms'), '.2f', ' ms')} "
            + ("response" if m.get("response") else "NO RESPONSE"))
    if m.get("amplitude_pct") is not None:
        text += f" ({m['amplitude_pct']:.0f} % amp, {_fmt(m.get('latency_pct'), '.0f')} % lat of baseline)"
    return text


def _steps_text(steps: Mapping[str, Any]) -> str:
    parts = []
    for name in ("L1", "V1", "S1", "R1", "R2", "R2P", "R2D", "S2", "V2", "L2"):
        v = steps.get(name)
        if not v:
            continue
        if name in ("L1", "L2"):
            parts.append(f"{name} {v.get('finding')}")
        else:
            parts.append(f"{name} {_fmt(v.get('amplitude_uV'), '.0f')}" + ("" if v.get("response") else "(-)"))
    return "   steps: " + " ".join(parts)


def _side_lines(st: Mapping[str, Any], side: str) -> list[str]:
    """The last response, the APS baseline, the steps and a loss of signal of one side."""
    aps = (st.get("aps") or {}).get(side) or {}
    text = f"{'left ' if side == 'L' else 'right'}: " + _measurement_text((st.get("last") or {}).get(side))
    if aps.get("baseline_uV") is not None:
        text += f"   APS baseline {aps['baseline_uV']:.0f} uV {_fmt(aps.get('baseline_latency_ms'), '.2f', ' ms')}"
    elif aps.get("baseline_count"):
        text += f"   APS baseline {aps['baseline_count']}/{aps.get('baseline_needed')}"
    steps = (st.get("steps") or {}).get(side) or {}
    if steps:
        text += _steps_text(steps)
    lines = [text]
    los = (st.get("los") or {}).get(side) or {}
    if los.get("active"):
        ts = ((st.get("troubleshooting") or {}).get(side) or {})
        lines.append(f"  LOSS OF SIGNAL since {_fmt(los.get('since_s'), '.1f', ' s')}: {ts.get('message', '')}")
    return lines


def _tube_lines(tube: Mapping[str, Any] | None) -> list[str]:
    if not tube:
        return []
    lines = ["tube check: " + ("passed" if tube.get("pass") else "FAILED") + f" ({tube.get('message')})"
             + (" [override]" if tube.get("override") else "")]
    bv = tube.get("breathing_variation")
    if isinstance(bv, Mapping) and bv:
        lines.append("breathing variation: " + "   ".join(
            f"{'left' if side == 'L' else 'right' if side == 'R' else side} {_breathing_text(d)}"
            for side, d in bv.items()))
    return lines


def format_threads(threads: Mapping[str, Any] | None) -> list[str]:
    """The engine's threads and their states in one line; a line more per thread in trouble."""
    if not isinstance(threads, Mapping) or not isinstance(threads.get("list"), list):
        return []
    items = [t for t in threads["list"] if isinstance(t, Mapping)]

    def one(t: Mapping[str, Any]) -> str:
        n = int(t.get("restarts") or 0)
        return f"{t.get('name')} {t.get('state')}" + (f" (restarted {n}x)" if n else "")

    listed = ", ".join(one(t) for t in items)
    if threads.get("healthy"):
        return [f"threads: {listed}"]
    lines = ["THREADS IN TROUBLE" + ("" if threads.get("watchdog") else " (systemd watchdog not fed)") + f": {listed}"]
    for t in items:
        if t.get("state") not in ("running", "idle"):
            lines.append(f"  {t.get('name')} {str(t.get('state')).upper()}: {t.get('reason') or t.get('what')}")
    return lines
