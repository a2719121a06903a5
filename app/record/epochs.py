"""A stimulus's epoch wherever the journal keeps it: in the entry's own blob, as samples of
the stored free-running stream (``waveform_in_stream``), or in a ``stimulus_waveform``
entry (the stream did not keep those samples).

Owns: ``epoch_loader`` and ``StreamReader`` (stream samples by sample index, from the
case's ``emg_block`` entries).
May import: the standard library, numpy, ``app.record.waveform``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from app.record import waveform as W

Epoch = tuple[np.ndarray, float, int, list[str]]  # samples_uV (channels, n), sample rate, pre samples, labels


def epoch_loader(journal: Any, case_id: str) -> Callable[[int], Epoch | None]:
    """``seq -> (samples_uV, sample_rate_hz, pre_samples, labels)`` of a stimulus entry: its own
    blob, or its ``waveform_in_stream`` samples from the stored stream, or its
    ``stimulus_waveform`` entry (``None`` when none of them holds it)."""
    stream = StreamReader(journal, case_id)
    fallback: dict[int, int] | None = None

    def load(seq: int) -> Epoch | None:
        nonlocal fallback
        e = journal.entry(case_id, seq)
        if e is None:
            return None
        ref = e.payload.get("waveform_in_stream")
        if ref is not None and e.blob is None:
            if fallback is None:
                fallback = {int(f.payload["index"]): f.seq
                            for f in journal.entries(case_id, kinds=["stimulus_waveform"], blobs=False)}
            kept = fallback.get(int(e.payload.get("index", -1)))
            if kept is not None:
                e = journal.entry(case_id, kept)
            else:
                samples = stream.samples(ref)
                if samples is None:
                    return None
                return samples, float(ref["sample_rate_hz"]), int(ref["pre_samples"]), list(ref.get("labels") or [])
        if e is None or e.blob is None or "waveform" not in e.payload:
            return None
        meta = e.payload["waveform"]
        try:
            samples = W.decode(meta, e.blob)
        except W.WaveformError:
            return None
        labels = list(meta.get("labels") or [])
        return samples, float(meta.get("sample_rate_hz", 20000)), int(meta.get("pre_samples", 0)), labels

    return load


class StreamReader:
    """Samples of a case's stored free-running EMG (``emg_block`` entries) by sample index."""

    def __init__(self, journal: Any, case_id: str) -> None:
        self.journal = journal
        self.case_id = case_id
        self._blocks: list[tuple[int, int, float, int, list[str]]] | None = None  # first, n, rate, seq, labels
        self._cache: dict[int, np.ndarray] = {}

    def _index(self) -> list[tuple[int, int, float, int, list[str]]]:
        if self._blocks is None:
            self._blocks = sorted((int(e.payload["first_sample"]), int(e.payload["waveform"]["n"]),
                                   float(e.payload["sample_rate_hz"]), e.seq, list(e.payload.get("labels") or []))
                                  for e in self.journal.entries(self.case_id, kinds=["emg_block"], blobs=False))
        return self._blocks

    def _decoded(self, seq: int) -> np.ndarray | None:
        if seq not in self._cache:
            e = self.journal.entry(self.case_id, seq)
            try:
                x = W.decode(e.payload["waveform"], e.blob) if e is not None and e.blob is not None else None
            except W.WaveformError:
                x = None
            if len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[seq] = x  # type: ignore[assignment]
        return self._cache[seq]

    def samples(self, ref: Mapping[str, Any]) -> np.ndarray | None:
        """The samples ``ref`` names (``waveform_in_stream``), or None unless all are stored."""
        a, n, rate = int(ref["first_sample"]), int(ref["n"]), float(ref["sample_rate_hz"])
        labels = list(ref.get("labels") or [])
        out: np.ndarray | None = None
        covered = 0
        for first, count, r, seq, blabels in self._index():
            if first + count <= a or first >= a + n or r != rate or (labels and blabels != labels):
                continue
            x = self._decoded(seq)
            if x is None:
                return None
            if out is None:
                out = np.zeros((x.shape[0], n), dtype=np.float64)
            lo, hi = max(a, first), min(a + n, first + count)
            out[:, lo - a:hi - a] = x[:, lo - first:hi - first]
            covered += hi - lo
        return out if out is not None and covered == n else None


__all__ = ["Epoch", "StreamReader", "epoch_loader"]
