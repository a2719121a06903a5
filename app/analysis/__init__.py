"""Signal analysis: the measurement of evoked responses, free-running EMG, EDF+ recordings.

Owns:
- ``epoch``: ``EpochAnalyzer``, the measurement of one stimulus epoch (band-pass, artifact
  rejection, baseline, response window per nerve site, amplitude, latencies, validity).
  It learns over a case (``reset()`` when a case opens).
- ``noise``: the background under a response (ECG, wander, mains hum) and the noise that
  competes with it; ``MainsProfile``, the hum present on each channel.
- ``template``: the response shape of each channel and nerve site, learned from the
  case's own responses, and the measurement of a noisy response by fitting it.
- ``freerun``: ``FreeRunDetector``, spontaneous activity (bursts, trains) and
  electrocautery in the free-running EMG.
- ``breathing``: ``BreathingMeter``, the respiratory variation of the baseline EMG per side
  (the tube check's sign of vocal-fold contact).
- ``edf``: ``Recording``, ``read_edf``, ``write_edf``, ``open_edf``: EDF+ as
  ``shared/specs/recording-exchange.md`` defines it.

May import: numpy, scipy, edfio, ``app.model``, ``app.settings``,
``firmware_bridge.messages``. Pure cores: no threads, clocks or sockets; only ``edf``
touches files. Nothing here imports the rules, alarms or anything above them.
"""

from app.analysis.breathing import BreathingMeter, BreathingResult, SideBreathing
from app.analysis.edf import Annotation, Recording, RecordingError, open_edf, read_edf, write_edf
from app.analysis.epoch import EpochAnalysis, EpochAnalyzer
from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector

__all__ = [
    "Annotation",
    "BreathingMeter",
    "BreathingResult",
    "EmgEvent",
    "EmgEventKind",
    "EpochAnalysis",
    "EpochAnalyzer",
    "FreeRunDetector",
    "Recording",
    "RecordingError",
    "SideBreathing",
    "open_edf",
    "read_edf",
    "write_edf",
]
