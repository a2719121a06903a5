"""Remote monitoring benchmark: 20 ORs through a real Mosquitto into the reading station.

What runs, in three processes on this machine:

1. A real Mosquitto (TLS with a throwaway CA, passwords, the ACL ``lnm station acl``
   writes); 20 appliances and 7 readers (about three ORs each, as guidance limits one
   reader to).
2. The ORs (one process): 20 full engines on the virtual board do not fit on two cores
   (each virtual board alone synthesises 2 x 20 kHz of EMG), so each OR is the REAL
   publisher (``app.remote.publisher.Publisher``: its queue, its journal reader, its paho
   client, TLS, PUBACK bookkeeping) fed by a light synthetic engine: a real case journal
   (``app.record.journal.Journal``) with continuous vagal stimuli at 1 Hz, their
   measurements and epochs, the free-running EMG envelope at 10 Hz and the state at 4 Hz,
   and an alarm raised and later cleared every 4-8 s, journaled first and then handed to
   the publisher exactly as the engine's sink does.
3. The station (``lnm station``, its own process, so that its CPU is measured alone), with
   one browser client per reader: a Server-Sent Events stream read here, as a browser
   would.

Measured: the delay from the moment the (synthetic) engine hands an alarm change to its
publisher to the moment a reader's SSE client receives it (``emitted_at`` in the ``alarm``
payload, same clock); the events lost (every event the ORs' journals hold that a reader's
stream never delivered, after a grace period); the station process's CPU (cores, user +
system) over the measured window.

Last line: ``REMOTE ors=N alarm_to_station_p99_ms=X events_lost=N station_cpu=X source=synthetic``.
Goal: 20 ORs, p99 under 250 ms, nothing lost.
"""

from __future__ import annotations

import http.cookiejar
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ORS = 20
PER_READER = 3
RUN_S = float(os.environ.get("LNM_BENCH_REMOTE_S", "60"))
GRACE_S = 10.0
PASSWORD = "bench-password-1"


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def run_ors(folder: str, broker_url: str, ca: str, stop: MpEvent, ready: MpEvent, out: MpQueue[Any]) -> None:
    """The ORs' process: a synthetic engine and the real publisher per OR."""
    import logging

    logging.getLogger("lnm.remote").setLevel(logging.ERROR)  # the end's disconnections are expected
    from app.record.journal import Journal
    from app.remote.config import BrokerAddress, RemoteConfig
    from app.remote.publisher import Publisher

    rnd = random.Random(7)
    rooms: list[dict[str, Any]] = []
    for i in range(1, ORS + 1):
        appliance = f"or-{i}"
        d = Path(folder) / appliance
        d.mkdir(parents=True, exist_ok=True)
        journal = Journal(d / "journal.db")
        case_id = journal.open_case({"patient_id": f"BENCH-{i}", "planned_sides": ["L"],
                                     "software_version": "bench", "procedure": "synthetic case"})
        cfg = RemoteConfig(True, BrokerAddress.parse(broker_url), appliance, "lnm", ca, "", "", PASSWORD, 15.0)
        pub = Publisher(cfg, d / "journal.db", software="lnm bench")
        pub.start()
        rooms.append({"appliance": appliance, "journal": journal, "case_id": case_id, "pub": pub,
                      "next_alarm": time.monotonic() + rnd.uniform(2, 6), "alarm_on": False, "index": 0,
                      "t0": time.monotonic()})
    ready.set()
    waveform = {"EMG L": [round(100 * ((k % 40) - 20) / 20.0, 1) for k in range(300)],
                "EMG R": [0.0] * 300}
    next_state = next_stim = next_emg = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        for r in rooms:
            t_s = now - r["t0"]
            case = {"case_id": r["case_id"], "patient_id": "BENCH", "procedure": "synthetic case", "t_s": t_s}
            if now >= next_stim:
                r["index"] += 1
                m = {"index": r["index"], "t_s": t_s, "site": "VAGUS", "side": "L", "source": "APS", "set_mA": 1.0,
                     "delivered_mA": 1.0, "pw_us": 100, "step": None, "channel": "EMG L", "valid": True,
                     "invalid_reason": None, "response": True, "amplitude_uV": 650.0, "latency_ms": 7.9,
                     "onset_latency_ms": 5.1}
                r["journal"].append(r["case_id"], "stimulus", m, t_s=t_s)
                r["pub"].offer("measurements", {"type": "measurement", **m, "amplitude_pct": 100.0,
                                                "latency_pct": 100.0})
                r["pub"].offer("waveforms", {"type": "waveform", "index": r["index"], "t_s": t_s, "side": "L",
                                             "site": "VAGUS", "source": "APS", "sample_rate_hz": 5000.0,
                                             "t0_ms": -10.0, "channels": waveform})
            if now >= next_emg:
                r["pub"].offer("emg", {"type": "emg", "t_s": t_s, "bin_hz": 1000, "cautery": False,
                                       "channels": {"EMG L": {"min": [-5.0] * 100, "max": [5.0] * 100}}})
            if now >= next_state:
                r["pub"].offer("state", {"type": "state", "t_s": t_s, "case": case, "board": {"connected": True},
                                         "storage": {"ok": True}, "last": {}, "aps": {}, "steps": {}})
            if now >= r["next_alarm"]:
                r["alarm_on"] = not r["alarm_on"]
                transition = "raised" if r["alarm_on"] else "cleared"
                r["journal"].append(r["case_id"], "alarm", {"transition": transition,
                                                            "alarm_id": "combined_event:VAGUS-L",
                                                            "kind": "combined_event", "priority": "high"}, t_s=t_s)
                active = [{"id": "combined_event:VAGUS-L", "kind": "combined_event", "priority": "high",
                           "title": "COMBINED EVENT", "acknowledged": False, "side": "L", "site": "VAGUS"}]
                r["pub"].offer("alarms", {"type": "alarms", "active": active if r["alarm_on"] else [],
                                          "sounding": "high" if r["alarm_on"] else None})
                r["pub"].offer("events", {"type": "event"})
                r["next_alarm"] = now + rnd.uniform(4, 8)
        if now >= next_stim:
            next_stim = now + 1.0
        if now >= next_emg:
            next_emg = now + 0.1
        if now >= next_state:
            next_state = now + 0.25
        time.sleep(0.01)
    time.sleep(GRACE_S)  # the last events reach the broker
    from app.remote.publisher import JournalReader

    result: dict[str, Any] = {}
    for r in rooms:
        reader = JournalReader(Path(folder) / r["appliance"] / "journal.db")
        result[r["appliance"]] = [row[0] for row in reader.events_after(r["case_id"], -1, 100000)]
        reader.close()
        dropped = dict(r["pub"].queue.dropped.counts)
        r["pub"].stop()
        r["journal"].close()
        result[r["appliance"] + ":dropped"] = dropped
    out.put(result)


class SseReader(threading.Thread):
    """One browser: logs in, reads the live stream, notes when each alarm change and event arrives."""

    def __init__(self, url: str, user: str) -> None:
        super().__init__(daemon=True)
        self.url, self.user = url, user
        self.latencies: list[float] = []
        self.events: dict[str, set[int]] = {}
        self.seen_alarms: set[tuple[str, float]] = set()
        self.ready = threading.Event()
        self.error = ""

    def run(self) -> None:
        try:
            jar = http.cookiejar.CookieJar()
            web = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            web.open(self.url + "login", data=urllib.parse.urlencode(
                {"username": self.user, "password": PASSWORD}).encode(), timeout=30)
            stream = web.open(self.url + "api/stream", timeout=120)
            self.ready.set()
            for raw in stream:
                if not raw.startswith(b"data: "):
                    continue
                now = time.time()
                data = json.loads(raw[6:])
                if not isinstance(data, list):
                    continue
                for d in data:
                    if d["kind"] == "alarm":
                        key = (d["or"], d["data"].get("emitted_at"))
                        if key[1] and key not in self.seen_alarms:
                            self.seen_alarms.add(key)
                            self.latencies.append((now - key[1]) * 1000.0)
                    elif d["kind"] == "event":
                        self.events.setdefault(d["or"], set()).add(d["data"]["seq"])
                    elif d["kind"] == "backfilled":
                        pass
        except Exception as exc:  # noqa: BLE001 - reported in the output
            self.error = str(exc)
            self.ready.set()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    from app.remote.mosquitto import Mosquitto, find_mosquitto, free_port, throwaway_ca
    from app.remote.mqttauth import acl_text, set_password
    from app.station import config as sc
    from app.station.auth import hash_password

    if find_mosquitto() is None:
        print("REMOTE skipped: mosquitto is not installed (Debian package mosquitto)")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="lnm-bench-remote-"))
    appliances = [f"or-{i}" for i in range(1, ORS + 1)]
    readers = {f"reader.{k + 1}": appliances[k * PER_READER:(k + 1) * PER_READER]
               for k in range((ORS + PER_READER - 1) // PER_READER)}
    tls, _clients = throwaway_ca(tmp / "pki")
    for name in appliances + list(readers):
        set_password(tmp / "passwd", name, PASSWORD)
    (tmp / "acl").write_text(acl_text(readers))
    broker = Mosquitto(tmp / "broker", password_file=tmp / "passwd", acl_file=tmp / "acl", tls=tls).start()
    port = free_port()
    h = hash_password(PASSWORD)
    cfg = sc.StationConfig(tmp / "station.toml", "127.0.0.1", port, sc.BrokerAddress.parse(broker.url), str(tls.ca),
                           audit_log=tmp / "audit.log",
                           users={u: sc.User(u, u, tuple(ors), h) for u, ors in readers.items()})
    sc.write_config(cfg)
    station_log = open(tmp / "station.log", "w")  # noqa: SIM115 - the child writes it until the end
    station = subprocess.Popen([sys.executable, "-m", "app.cli", "station", "--config", str(cfg.path)],
                               cwd=Path(__file__).resolve().parents[1], stdout=station_log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while "open http" not in (tmp / "station.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    ors = ctx.Process(target=run_ors, args=(str(tmp / "ors"), broker.url, str(tls.ca), stop, ready, out))
    try:
        clients = [SseReader(url, u) for u in readers]
        for c in clients:
            c.start()
        for c in clients:
            c.ready.wait(60)
        ors.start()
        ready.wait(120)
        time.sleep(3.0)  # connections settle
        for c in clients:
            c.latencies.clear()
        cpu0, t0 = cpu_seconds(station.pid), time.monotonic()
        time.sleep(RUN_S)
        cpu1, t1 = cpu_seconds(station.pid), time.monotonic()
        stop.set()
        result = out.get(timeout=120)
        ors.join(60)
        time.sleep(2.0)
        lat = [x for c in clients for x in c.latencies]
        got: dict[str, set[int]] = {}
        for c in clients:
            for o, seqs in c.events.items():
                got.setdefault(o, set()).update(seqs)
        missing = sorted((o, q) for o in appliances for q in set(result[o]) - got.get(o, set()))
        lost = len(missing)
        total = sum(len(result[o]) for o in appliances)
        dropped: dict[str, int] = {}
        for o in appliances:
            for k, v in result[o + ":dropped"].items():
                dropped[k] = dropped.get(k, 0) + v
        cpu = (cpu1 - cpu0) / (t1 - t0)
        errors = [c.error for c in clients if c.error]
        print(f"{ORS} ORs (synthetic engines through the real publisher: 20 full engines on the virtual board do "
              f"not fit on 2 cores), {len(readers)} readers, {RUN_S:.0f} s")
        print(f"alarm changes delivered to browsers: {len(lat)}; p50 {percentile(lat, 50):.1f} ms, "
              f"p99 {percentile(lat, 99):.1f} ms, max {max(lat) if lat else float('nan'):.1f} ms")
        print(f"events in the ORs' journals: {total}; not delivered to a browser: {lost}; "
              f"publisher drops: {dropped or 'none'}" + (f"; not delivered: {missing[:10]}" if missing else ""))
        print(f"station process CPU: {cpu:.2f} cores" + (f"; client errors: {errors}" if errors else ""))
        print(f"REMOTE ors={ORS} alarm_to_station_p99_ms={percentile(lat, 99):.1f} events_lost={lost} "
              f"station_cpu={cpu:.2f} source=synthetic")
        return 0
    finally:
        stop.set()
        if ors.is_alive():
            ors.join(30)
            if ors.is_alive():
                ors.terminate()
        station.terminate()
        try:
            station.wait(20)
        except subprocess.TimeoutExpired:
            station.kill()
        broker.stop()
        station_log.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
