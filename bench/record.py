"""Benchmark of the case record: journal throughput, storage per hour, report time.

1. Journal throughput: entries appended per second to a durable journal (WAL,
   ``synchronous=FULL``: one fsync per entry), a realistic mix of stimulus entries with
   their epoch (2 x 1200 samples) and small event entries. Payloads are built beforehand,
   so the figure is the journal's own cost (hashing, SQLite, fsync).
2. Storage for one hour of monitoring: 4 Hz probe plus 1 Hz continuous vagal stimulation,
   every epoch stored, and the free-running EMG stored in full (2 channels at 20 kHz, 1 s
   blocks, 0.1 µV resolution, lossless to that resolution; synthetic EMG noise of about
   4 µV RMS with the evoked responses in it). SIMULATED_S seconds are written, the WAL is
   checkpointed, the real bytes on disk (database + WAL) are measured and scaled to one
   hour: with the default blob encoding (``flac/1``) and, for comparison, with the older
   ``delta-zlib/1``. Goal: at most 150 MB per hour, losslessly (to 0.1 µV).
2b. Codec cost: bits per sample and CPU milliseconds per second of two-channel 20 kHz
   stream, to encode and to decode, for both encodings (the noise floor: the Gaussian
   entropy of the quantised background, and of its best linear prediction, is printed
   beside them).
3. Report time for a three-hour case: a synthetic case with realistic counts (APS at 1 Hz
   for half the case, probe bursts at 4 Hz, steps, events, alarms, troubleshooting; every
   epoch with its waveform; no free-running stream) is written, then the PDF report and
   the case JSON are timed (``write_documents``: document from the journal, chain
   verification, PDF with waveforms and trends, JSON).

Last line: ``RECORD events_per_s=N bytes_per_hour=N bytes_per_hour_delta_zlib=N
encode_ms_per_s=X report_s=X``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_case: the fixture case the tests use too

from app.model import Measurement, Side, Site, Source, Stimulus  # noqa: E402
from app.record import Journal  # noqa: E402
from app.record import entries as E  # noqa: E402
from app.record import waveform as W  # noqa: E402
from app.record.export import write_documents  # noqa: E402
from synthetic_case import FS, POST, PRE, emg_noise, response, write_case  # noqa: E402

THROUGHPUT_S = 3.0
SIMULATED_S = int(os.environ.get("LNM_BENCH_RECORD_S", "300"))  # seconds of monitoring written for the storage figure


def _stim_payload(rng: np.random.Generator, i: int, t: float, source: Source, res: float = 0.1,
                  codec: str = "auto"):
    side = Side.L
    stim = Stimulus(i, t, Site.VAGUS if source is Source.APS else Site.RLN, side, source, 1.0, 0.98)
    amp = 600.0 + rng.normal(0, 20)
    m = Measurement(stim, Side.L.channel, True, None, True, amp, 7.9, 7.0)
    epoch = emg_noise(rng, PRE + POST)
    epoch[0] += response(amp, 7.9 if source is Source.APS else 3.7)
    return E.stimulus(m, epoch, FS, PRE, res_uV=res, codec=codec)


def throughput(tmp: Path) -> float:
    rng = np.random.default_rng(1)
    prepared = []
    for i in range(400):
        if i % 5 == 4:
            prepared.append(("alarm", E.alarm("raised", "loss_of_signal:VAGUS-L", "high", "L"), None))
        else:
            p, b = _stim_payload(rng, i, i * 0.25, Source.PROBE)
            prepared.append(("stimulus", p, b))
    with Journal(tmp / "throughput.db") as j:
        cid = j.open_case({"patient_id": "BENCH", "planned_sides": ["L"]})
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < THROUGHPUT_S:
            kind, p, b = prepared[n % len(prepared)]
            j.append(cid, kind, p, b, t_s=n * 0.01)
            n += 1
        dt = time.perf_counter() - t0
    rate = n / dt
    print(f"journal throughput: {n} entries in {dt:.2f} s = {rate:.0f} entries/s "
          f"(durable: WAL + synchronous=FULL, one transaction per entry; 80 % stimulus entries with epoch)")
    return rate


def storage(tmp: Path, res_stream: float, codec: str = "auto") -> tuple[int, float]:
    rng = np.random.default_rng(2)
    path = tmp / f"storage-{res_stream}-{codec}.db"
    t_write = time.perf_counter()
    with Journal(path) as j:
        cid = j.open_case({"patient_id": "BENCH", "planned_sides": ["L", "R"]})
        idx = 0
        for sec in range(SIMULATED_S):
            block = emg_noise(rng, FS)
            stims = [(sec + 0.05, Source.APS)] + [(sec + 0.1 + k * 0.25, Source.PROBE) for k in range(4)]
            for t, src in stims:
                off = int(round((t - sec) * FS))
                wave = response(600.0, 7.9 if src is Source.APS else 3.7)
                lo, hi = off - PRE, min(off + POST, FS)
                block[0, max(lo, 0):hi] += wave[max(lo, 0) - lo:hi - lo]
                p, b = _stim_payload(rng, idx, t, src, codec=codec)
                j.append(cid, "stimulus", p, b, t_s=t)
                idx += 1
            payload, blob = E.emg_block(float(sec), sec * FS, FS, block, res_uV=res_stream, codec=codec)
            j.append(cid, "emg_block", payload, blob, t_s=sec + 1.0)
        j.close_case(cid)
        j.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in tmp.glob(path.name + "*"))
    per_hour = int(size * 3600 / SIMULATED_S)
    dt = time.perf_counter() - t_write
    print(f"storage ({codec if codec != 'auto' else W.FLAC_ENCODING}): {SIMULATED_S} s of monitoring (1 Hz APS + "
          f"4 Hz probe epochs, stream 2 x {FS} Hz at {res_stream} uV) = {size / 1e6:.1f} MB on disk -> "
          f"{per_hour / 1e6:.0f} MB per hour (written in {dt:.1f} s)")
    return per_hour, dt


def codec_cost() -> float:
    """Bits per sample and CPU per second of stream for both encodings; returns FLAC encode ms/s."""
    rng = np.random.default_rng(5)
    seconds = 20
    blocks = [emg_noise(rng, FS) for _ in range(seconds)]
    q = np.rint(np.concatenate(blocks, axis=1) / 0.1)
    sd = float(np.std(q))
    d = q[0, 8:] - _lpc_prediction(q[0], 8)
    floor = np.log2(sd * np.sqrt(2 * np.pi * np.e))
    floor_lpc = np.log2(float(np.std(d)) * np.sqrt(2 * np.pi * np.e))
    print(f"noise floor at 0.1 uV: {floor:.2f} bits/sample (Gaussian entropy of the background), "
          f"{floor_lpc:.2f} after the best 8th-order linear prediction")
    flac_ms = 0.0
    for codec in ("flac", "delta-zlib"):
        t = time.process_time()
        enc = [W.encode(b, 0.1, codec=codec) for b in blocks]
        t_enc = (time.process_time() - t) / seconds * 1000.0
        t = time.process_time()
        for meta, blob in enc:
            W.decode(meta, blob)
        t_dec = (time.process_time() - t) / seconds * 1000.0
        bits = sum(len(b) for _, b in enc) * 8 / (2 * FS * seconds)
        print(f"codec {enc[0][0]['encoding']}: {bits:.2f} bits/sample, encode {t_enc:.1f} ms and decode {t_dec:.1f} ms "
              f"CPU per second of 2 x {FS} Hz stream")
        if codec == "flac":
            flac_ms = t_enc
    return flac_ms


def _lpc_prediction(x: np.ndarray, order: int) -> np.ndarray:
    from scipy.linalg import solve_toeplitz

    x = x.astype(np.float64)
    ac = np.array([np.dot(x[:len(x) - i], x[i:]) for i in range(order + 1)])
    a = solve_toeplitz(ac[:order], ac[1:order + 1])
    pred = np.zeros(len(x) - order)
    for j in range(order):
        pred += a[j] * x[order - 1 - j:len(x) - 1 - j]
    return np.rint(pred)


def report_time(tmp: Path) -> float:
    path = tmp / "three-hours.db"
    t = time.perf_counter()
    with Journal(path, durable=False) as j:
        cid, n = write_case(j, duration_s=3 * 3600.0, seed=3, waveforms=True, emg=None)
    gen = time.perf_counter() - t
    with Journal(path, readonly=True) as j:
        counts = dict(j.conn.execute("SELECT kind, count(*) FROM entries GROUP BY kind").fetchall())
        t = time.perf_counter()
        res = write_documents(j, cid, {"pdf": tmp / "report.pdf", "json": tmp / "case.json"})
        dt = time.perf_counter() - t
    pages = (tmp / "report.pdf").read_bytes().count(b"/Type /Page\n") or (tmp / "report.pdf").read_bytes().count(
        b"/Type /Page")
    print(f"three-hour case: {n} entries ({counts.get('stimulus', 0)} stimuli with waveforms, "
          f"{counts.get('alarm', 0)} alarm transitions, {counts.get('rule_event', 0)} rule events), "
          f"generated in {gen:.1f} s; report PDF ({(tmp / 'report.pdf').stat().st_size / 1e3:.0f} kB, "
          f"~{pages} pages) + JSON ({(tmp / 'case.json').stat().st_size / 1e6:.1f} MB) in {dt:.2f} s "
          f"(exit {res.exit_code})")
    return dt


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="lnm-bench-record-", dir=os.environ.get("LNM_BENCH_DIR")) as d:
        tmp = Path(d)
        rate = throughput(tmp)
        enc_ms = codec_cost()
        per_hour, _ = storage(tmp, 0.1)
        per_hour_old, _ = storage(tmp, 0.1, codec="delta-zlib")
        rep = report_time(tmp)
    print(f"RECORD events_per_s={rate:.0f} bytes_per_hour={per_hour} bytes_per_hour_delta_zlib={per_hour_old} "
          f"encode_ms_per_s={enc_ms:.1f} report_s={rep:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
