"""The INMSG conditions: one transition table and one input classifier per condition.

Owns: ``Facts`` (what the rules may know about one measurement), and the condition
classes ``LossOfSignal``, ``ApsBaseline``, ``ProbeBaseline``, ``ApsAmplitude`` (combined
event and amplitude decrease), ``Recovery``, ``NoCurrent``, ``PoorBaseline``,
``NonRecurrent``, ``NmbSide`` and ``Blockade`` (neuromuscular blockade suspected). Each
class holds its ``MACHINE`` (see ``machine.py``) and a pure
``classify`` that turns a measurement into one input symbol of that machine; the class
docstring shows the table exactly as the code runs it (a test checks they agree).
May import: the standard library, ``app.model``, ``app.settings``, ``app.rules.machine``.

Vocabulary used by every classifier (settings in brackets):

- *valid*: the analysis measured the epoch (``Measurement.valid``) and its amplitude is a
  finite number (a non-finite one is skipped like an invalid epoch, never a miss).
- *response*: valid, the analysis reports a response, and the amplitude is at least the
  event threshold [``analysis.event_threshold_uV``].
- *delivered*: the stimulator delivered the current as set: the delivered current was not
  measured (the set current stands), or it is >= (100 - tolerance) % of the set current
  [``stim.delivered_tolerance_pct``]; never when the analysis marked the epoch
  ``no_current``.
- *qualifying*: delivered, and the set current is >= ``rules.los_min_current_mA`` (the
  plateau current of clinical-rules.md). Only qualifying stimuli count towards loss of
  signal, and only qualifying stimuli are compared with a baseline (APS baseline, combined
  event, amplitude decrease, recovery, probe baseline, poor V1) because amplitudes below
  the plateau current or with a current shortfall are not comparable with a baseline.
- *short*: the set current is > 0 and the current was not delivered.
- *untagged*: site ``UNTAGGED``; such stimuli feed no condition at all (not even no
  current) and neither count nor break any run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from app.model import InvalidReason, Measurement, Site, Source, Step
from app.rules.machine import ANY, Machine, Row

# A relative allowance so that e.g. 1.14 mA delivered of 1.20 mA set (exactly 95 %)
# is not refused by binary rounding.
_EPS = 1e-9
# Times of the case are sums of floats: a limit in seconds allows a microsecond.
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class Facts:
    """What the rules know about one measurement, derived once with the settings."""

    valid: bool
    response: bool
    delivered: bool
    qualifying: bool
    short: bool
    untagged: bool
    amplitude_uV: float | None
    latency_ms: float | None


def facts(m: Measurement, settings: Mapping[str, Any]) -> Facts:
    """The facts of one measurement under ``settings`` (see the module docstring)."""
    s = m.stimulus
    tol = float(settings["stim.delivered_tolerance_pct"])
    if m.invalid_reason is InvalidReason.NO_CURRENT:
        delivered = False
    elif s.delivered_mA is None:
        delivered = True
    else:
        delivered = s.delivered_mA * 100.0 >= s.set_mA * (100.0 - tol) * (1.0 - _EPS)
    amp, lat = m.amplitude_uV, m.latency_ms
    # A measurement whose numbers are not finite cannot be judged: it is skipped like an
    # invalid epoch rather than counted as a miss.
    valid = bool(m.valid) and (amp is None or math.isfinite(amp))
    if lat is not None and not math.isfinite(lat):
        lat = None
    threshold = float(settings["analysis.event_threshold_uV"])
    response = valid and bool(m.response) and (amp is None or amp >= threshold)
    qualifying = delivered and s.set_mA >= float(settings["rules.los_min_current_mA"]) * (1.0 - _EPS)
    return Facts(
        valid=valid,
        response=response,
        delivered=delivered,
        qualifying=qualifying,
        short=(s.set_mA > 0 and not delivered),
        untagged=s.site is Site.UNTAGGED,
        amplitude_uV=amp if valid else None,
        latency_ms=lat,
    )


# Sites whose signal is watched for loss and recovery (EBSLN responses are only tracked:
# a glottic EBSLN response exists in ~70 % of patients, so its absence is no alarm).
WATCHED_SITES = (Site.VAGUS, Site.RLN)


class LossOfSignal:
    """Loss of signal (LOS), one machine per nerve site and side (VAGUS-L, RLN-R, ...).

    Inputs (for a stimulus at this site and side, any source):
    RESPONSE = a valid, qualifying stimulus with a response;
    WEAK = a valid response to a non-qualifying stimulus (below
    ``rules.los_min_current_mA`` or current not delivered as set): it proves conduction,
    so it arms the site and breaks a run of misses, but it cannot end an episode;
    MISS = a valid, qualifying stimulus without a response;
    SKIP = anything else (invalid epoch, non-qualifying no-response, untagged);
    END = control: the site recovered through another watcher (its vagus, or a recovery
    that came before the responses ended the episode).

    NO_SIGNAL: the site has never responded, so nothing can be lost. ARMED: it has.
    MISSING: ``run`` qualifying misses in a row; at ``rules.los_consecutive`` the LOS is
    raised (time and index of the stimulus that completed the run) and the site is LOST.
    Hysteresis: the episode ends only when ``rules.los_end_consecutive`` qualifying
    stimuli in a row respond (ENDING counts them; a miss sends it back to LOST without a
    new event), so a response hovering at the threshold does not re-raise the alarm. The
    rule engine turns a new loss within ``rules.los_reentry_s`` of an episode's end into
    ``loss_of_signal_continued`` (same episode, no new onset)::

        state | input | when | next | run | emits
        NO_SIGNAL | RESPONSE | - | ARMED | 0 | -
        NO_SIGNAL | WEAK | - | ARMED | 0 | -
        NO_SIGNAL | MISS | - | NO_SIGNAL | = | -
        ARMED | RESPONSE | - | ARMED | 0 | -
        ARMED | WEAK | - | ARMED | 0 | -
        ARMED | MISS | run<rules.los_consecutive | MISSING | 1 | -
        ARMED | MISS | run>=rules.los_consecutive | LOST | 1 | loss_of_signal
        MISSING | RESPONSE | - | ARMED | 0 | -
        MISSING | WEAK | - | ARMED | 0 | -
        MISSING | MISS | run<rules.los_consecutive | MISSING | +1 | -
        MISSING | MISS | run>=rules.los_consecutive | LOST | +1 | loss_of_signal
        LOST | RESPONSE | run<rules.los_end_consecutive | ENDING | 1 | -
        LOST | RESPONSE | run>=rules.los_end_consecutive | ARMED | 1 | episode_ended
        LOST | WEAK | - | LOST | = | -
        LOST | MISS | - | LOST | +1 | -
        ENDING | RESPONSE | run<rules.los_end_consecutive | ENDING | +1 | -
        ENDING | RESPONSE | run>=rules.los_end_consecutive | ARMED | +1 | episode_ended
        ENDING | WEAK | - | ENDING | = | -
        ENDING | MISS | - | LOST | 1 | -
        LOST | END | - | ARMED | 0 | episode_ended
        ENDING | END | - | ARMED | 0 | episode_ended
        * | END | - | * | = | -
        * | SKIP | - | * | = | -

    (A guard compares the run after the row's operation: ``LOST | RESPONSE`` starts the
    count of responses at 1, so a limit of 1 ends the episode at the first response. The
    run that ARMED inherits means nothing: its first miss starts a new count.)
    """

    MACHINE = Machine(
        "loss_of_signal",
        "NO_SIGNAL",
        ("NO_SIGNAL", "ARMED", "MISSING", "LOST", "ENDING"),
        ("RESPONSE", "WEAK", "MISS", "SKIP", "END"),
        (
            Row("NO_SIGNAL", "RESPONSE", "ARMED", "0"),
            Row("NO_SIGNAL", "WEAK", "ARMED", "0"),
            Row("NO_SIGNAL", "MISS", "NO_SIGNAL", "="),
            Row("ARMED", "RESPONSE", "ARMED", "0"),
            Row("ARMED", "WEAK", "ARMED", "0"),
            Row("ARMED", "MISS", "MISSING", "1", "run<rules.los_consecutive"),
            Row("ARMED", "MISS", "LOST", "1", "run>=rules.los_consecutive", "loss_of_signal"),
            Row("MISSING", "RESPONSE", "ARMED", "0"),
            Row("MISSING", "WEAK", "ARMED", "0"),
            Row("MISSING", "MISS", "MISSING", "+1", "run<rules.los_consecutive"),
            Row("MISSING", "MISS", "LOST", "+1", "run>=rules.los_consecutive", "loss_of_signal"),
            Row("LOST", "RESPONSE", "ENDING", "1", "run<rules.los_end_consecutive"),
            Row("LOST", "RESPONSE", "ARMED", "1", "run>=rules.los_end_consecutive", "episode_ended"),
            Row("LOST", "WEAK", "LOST", "="),
            Row("LOST", "MISS", "LOST", "+1"),
            Row("ENDING", "RESPONSE", "ENDING", "+1", "run<rules.los_end_consecutive"),
            Row("ENDING", "RESPONSE", "ARMED", "+1", "run>=rules.los_end_consecutive", "episode_ended"),
            Row("ENDING", "WEAK", "ENDING", "="),
            Row("ENDING", "MISS", "LOST", "1"),
            Row("LOST", "END", "ARMED", "0", "", "episode_ended"),
            Row("ENDING", "END", "ARMED", "0", "", "episode_ended"),
            Row(ANY, "END", ANY, "="),
            Row(ANY, "SKIP", ANY, "="),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts) -> str:
        if f.untagged or m.stimulus.site not in WATCHED_SITES or not f.valid:
            return "SKIP"
        if f.response:
            return "RESPONSE" if f.qualifying else "WEAK"
        if f.qualifying:
            return "MISS"
        return "SKIP"


class ApsBaseline:
    """Continuous (APS) baseline, one machine per side.

    RESPONSE = a valid, qualifying APS stimulus with a response (and a latency);
    SKIP = anything else; REBASELINE = the operator asked for a new baseline.
    While COLLECTING, each RESPONSE adds its amplitude and latency; the one that brings
    the count to ``rules.aps_baseline_count`` sets the baseline to the means (event
    ``baseline_set``, then ``poor_baseline`` below ``rules.poor_baseline_uV``, see
    ``PoorBaseline``). The baseline holds until the operator re-baselines::

        state | input | when | next | run | emits
        COLLECTING | RESPONSE | run<rules.aps_baseline_count | COLLECTING | +1 | collect
        COLLECTING | RESPONSE | run>=rules.aps_baseline_count | SET | +1 | baseline_set
        SET | RESPONSE | - | SET | = | -
        * | SKIP | - | * | = | -
        * | REBASELINE | - | COLLECTING | 0 | -
    """

    MACHINE = Machine(
        "aps_baseline",
        "COLLECTING",
        ("COLLECTING", "SET"),
        ("RESPONSE", "SKIP", "REBASELINE"),
        (
            Row("COLLECTING", "RESPONSE", "COLLECTING", "+1", "run<rules.aps_baseline_count", "collect"),
            Row("COLLECTING", "RESPONSE", "SET", "+1", "run>=rules.aps_baseline_count", "baseline_set"),
            Row("SET", "RESPONSE", "SET", "="),
            Row(ANY, "SKIP", ANY, "="),
            Row(ANY, "REBASELINE", "COLLECTING", "0"),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts) -> str:
        if (
            m.stimulus.source is Source.APS
            and not f.untagged
            and f.qualifying
            and f.response
            and f.amplitude_uV is not None
            and f.latency_ms is not None
        ):
            return "RESPONSE"
        return "SKIP"


class ProbeBaseline:
    """Probe baseline, one machine per watched site and side (VAGUS-L, RLN-R, ...).

    GOOD = a valid, qualifying (set current >= ``rules.los_min_current_mA``, delivered)
    probe stimulus with a response; CAPTURE = the operator captured a response as the
    baseline; CLEAR = the operator asked for a new probe baseline; SKIP = anything else.
    The first GOOD response becomes the baseline; a captured one replaces it and is never
    replaced by a later response::

        state | input | when | next | run | emits
        NONE | GOOD | - | FIRST_RESPONSE | 1 | baseline_set
        FIRST_RESPONSE | GOOD | - | FIRST_RESPONSE | = | -
        CAPTURED | GOOD | - | CAPTURED | = | -
        * | CAPTURE | - | CAPTURED | 1 | baseline_set
        * | CLEAR | - | NONE | 0 | -
        * | SKIP | - | * | = | -
    """

    MACHINE = Machine(
        "probe_baseline",
        "NONE",
        ("NONE", "FIRST_RESPONSE", "CAPTURED"),
        ("GOOD", "CAPTURE", "CLEAR", "SKIP"),
        (
            Row("NONE", "GOOD", "FIRST_RESPONSE", "1", "", "baseline_set"),
            Row("FIRST_RESPONSE", "GOOD", "FIRST_RESPONSE", "="),
            Row("CAPTURED", "GOOD", "CAPTURED", "="),
            Row(ANY, "CAPTURE", "CAPTURED", "1", "", "baseline_set"),
            Row(ANY, "CLEAR", "NONE", "0"),
            Row(ANY, "SKIP", ANY, "="),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts) -> str:
        if (
            m.stimulus.source is Source.PROBE
            and m.stimulus.site in WATCHED_SITES
            and f.qualifying
            and f.response
            and f.amplitude_uV is not None
        ):
            return "GOOD"
        return "SKIP"


class ApsAmplitude:
    """Combined event and amplitude decrease (continuous vagal), one machine per side.

    Only APS stimuli after the side's baseline (amplitude A0, latency T0) are evaluated;
    each valid, qualifying one is classified:
    LOW_LATE = amplitude < ``rules.combined_amplitude_pct`` % of A0 and latency >
    ``rules.combined_latency_pct`` % of T0 (the combined condition);
    LOW_STABLE = amplitude < ``rules.amplitude_decrease_pct`` % of A0 and latency <=
    ``rules.combined_latency_pct`` % of T0 (amplitude decrease, latency stable);
    OK = a response meeting neither; ABSENT = no response; SKIP = invalid,
    non-qualifying, not APS, or no baseline yet.
    Control inputs: BASELINE_SET, REBASELINE (operator), RECOVERED (``Recovery``).

    A stimulus without a response has no latency, so it cannot tell traction (combined)
    from displacement (decrease): ABSENT neither counts nor breaks either run. Absence is
    the loss-of-signal condition (``LossOfSignal``), which runs independently, so a LOS
    can be raised while a combined event or amplitude decrease is open at the same site.
    Combined and decrease exclude each other per side: an open decrease escalates to a
    combined event when the combined condition holds on ``rules.combined_consecutive``
    stimuli (DECREASED_C counts that run); an open combined event is never downgraded to a
    decrease. Each is raised once per episode; the episode ends with a recovery (RECOVERED)
    or an operator re-baseline::

        state | input | when | next | run | emits
        NO_BASELINE | BASELINE_SET | - | NORMAL | 0 | -
        NO_BASELINE | RECOVERED | - | NO_BASELINE | 0 | -
        NO_BASELINE | LOW_LATE | - | NO_BASELINE | = | -
        NO_BASELINE | LOW_STABLE | - | NO_BASELINE | = | -
        NO_BASELINE | OK | - | NO_BASELINE | = | -
        NORMAL | LOW_LATE | run<rules.combined_consecutive | NORMAL_C | 1 | -
        NORMAL | LOW_LATE | run>=rules.combined_consecutive | COMBINED | 1 | combined_event
        NORMAL | LOW_STABLE | run<rules.amplitude_decrease_consecutive | NORMAL_D | 1 | -
        NORMAL | LOW_STABLE | run>=rules.amplitude_decrease_consecutive | DECREASED | 1 | amplitude_decrease
        NORMAL | OK | - | NORMAL | 0 | -
        NORMAL_C | LOW_LATE | run<rules.combined_consecutive | NORMAL_C | +1 | -
        NORMAL_C | LOW_LATE | run>=rules.combined_consecutive | COMBINED | +1 | combined_event
        NORMAL_C | LOW_STABLE | run<rules.amplitude_decrease_consecutive | NORMAL_D | 1 | -
        NORMAL_C | LOW_STABLE | run>=rules.amplitude_decrease_consecutive | DECREASED | 1 | amplitude_decrease
        NORMAL_C | OK | - | NORMAL | 0 | -
        NORMAL_D | LOW_STABLE | run<rules.amplitude_decrease_consecutive | NORMAL_D | +1 | -
        NORMAL_D | LOW_STABLE | run>=rules.amplitude_decrease_consecutive | DECREASED | +1 | amplitude_decrease
        NORMAL_D | LOW_LATE | run<rules.combined_consecutive | NORMAL_C | 1 | -
        NORMAL_D | LOW_LATE | run>=rules.combined_consecutive | COMBINED | 1 | combined_event
        NORMAL_D | OK | - | NORMAL | 0 | -
        DECREASED | LOW_LATE | run<rules.combined_consecutive | DECREASED_C | 1 | -
        DECREASED | LOW_LATE | run>=rules.combined_consecutive | COMBINED | 1 | combined_event
        DECREASED | LOW_STABLE | - | DECREASED | 0 | -
        DECREASED | OK | - | DECREASED | 0 | -
        DECREASED_C | LOW_LATE | run<rules.combined_consecutive | DECREASED_C | +1 | -
        DECREASED_C | LOW_LATE | run>=rules.combined_consecutive | COMBINED | +1 | combined_event
        DECREASED_C | LOW_STABLE | - | DECREASED | 0 | -
        DECREASED_C | OK | - | DECREASED | 0 | -
        COMBINED | LOW_LATE | - | COMBINED | = | -
        COMBINED | LOW_STABLE | - | COMBINED | = | -
        COMBINED | OK | - | COMBINED | = | -
        * | ABSENT | - | * | = | -
        * | SKIP | - | * | = | -
        * | BASELINE_SET | - | NORMAL | 0 | -
        * | REBASELINE | - | NO_BASELINE | 0 | -
        * | RECOVERED | - | NORMAL | 0 | -
    """

    MACHINE = Machine(
        "aps_amplitude",
        "NO_BASELINE",
        ("NO_BASELINE", "NORMAL", "NORMAL_C", "NORMAL_D", "DECREASED", "DECREASED_C", "COMBINED"),
        ("LOW_LATE", "LOW_STABLE", "OK", "ABSENT", "SKIP", "BASELINE_SET", "REBASELINE", "RECOVERED"),
        (
            Row("NO_BASELINE", "BASELINE_SET", "NORMAL", "0"),
            Row("NO_BASELINE", "RECOVERED", "NO_BASELINE", "0"),
            Row("NO_BASELINE", "LOW_LATE", "NO_BASELINE", "="),
            Row("NO_BASELINE", "LOW_STABLE", "NO_BASELINE", "="),
            Row("NO_BASELINE", "OK", "NO_BASELINE", "="),
            Row("NORMAL", "LOW_LATE", "NORMAL_C", "1", "run<rules.combined_consecutive"),
            Row("NORMAL", "LOW_LATE", "COMBINED", "1", "run>=rules.combined_consecutive", "combined_event"),
            Row("NORMAL", "LOW_STABLE", "NORMAL_D", "1", "run<rules.amplitude_decrease_consecutive"),
            Row("NORMAL", "LOW_STABLE", "DECREASED", "1", "run>=rules.amplitude_decrease_consecutive",
                "amplitude_decrease"),
            Row("NORMAL", "OK", "NORMAL", "0"),
            Row("NORMAL_C", "LOW_LATE", "NORMAL_C", "+1", "run<rules.combined_consecutive"),
            Row("NORMAL_C", "LOW_LATE", "COMBINED", "+1", "run>=rules.combined_consecutive", "combined_event"),
            Row("NORMAL_C", "LOW_STABLE", "NORMAL_D", "1", "run<rules.amplitude_decrease_consecutive"),
            Row("NORMAL_C", "LOW_STABLE", "DECREASED", "1", "run>=rules.amplitude_decrease_consecutive",
                "amplitude_decrease"),
            Row("NORMAL_C", "OK", "NORMAL", "0"),
            Row("NORMAL_D", "LOW_STABLE", "NORMAL_D", "+1", "run<rules.amplitude_decrease_consecutive"),
            Row("NORMAL_D", "LOW_STABLE", "DECREASED", "+1", "run>=rules.amplitude_decrease_consecutive",
                "amplitude_decrease"),
            Row("NORMAL_D", "LOW_LATE", "NORMAL_C", "1", "run<rules.combined_consecutive"),
            Row("NORMAL_D", "LOW_LATE", "COMBINED", "1", "run>=rules.combined_consecutive", "combined_event"),
            Row("NORMAL_D", "OK", "NORMAL", "0"),
            Row("DECREASED", "LOW_LATE", "DECREASED_C", "1", "run<rules.combined_consecutive"),
            Row("DECREASED", "LOW_LATE", "COMBINED", "1", "run>=rules.combined_consecutive", "combined_event"),
            Row("DECREASED", "LOW_STABLE", "DECREASED", "0"),
            Row("DECREASED", "OK", "DECREASED", "0"),
            Row("DECREASED_C", "LOW_LATE", "DECREASED_C", "+1", "run<rules.combined_consecutive"),
            Row("DECREASED_C", "LOW_LATE", "COMBINED", "+1", "run>=rules.combined_consecutive", "combined_event"),
            Row("DECREASED_C", "LOW_STABLE", "DECREASED", "0"),
            Row("DECREASED_C", "OK", "DECREASED", "0"),
            Row("COMBINED", "LOW_LATE", "COMBINED", "="),
            Row("COMBINED", "LOW_STABLE", "COMBINED", "="),
            Row("COMBINED", "OK", "COMBINED", "="),
            Row(ANY, "ABSENT", ANY, "="),
            Row(ANY, "SKIP", ANY, "="),
            Row(ANY, "BASELINE_SET", "NORMAL", "0"),
            Row(ANY, "REBASELINE", "NO_BASELINE", "0"),
            Row(ANY, "RECOVERED", "NORMAL", "0"),
        ),
    )

    @staticmethod
    def classify(
        m: Measurement, f: Facts, baseline_uV: float | None, baseline_ms: float | None,
        settings: Mapping[str, Any],
    ) -> str:
        if (
            m.stimulus.source is not Source.APS
            or f.untagged
            or not f.valid
            or not f.qualifying
            or baseline_uV is None
            or baseline_ms is None
        ):
            return "SKIP"
        if not f.response:
            return "ABSENT"
        if f.amplitude_uV is None or f.latency_ms is None:
            return "SKIP"
        late = f.latency_ms > baseline_ms * float(settings["rules.combined_latency_pct"]) / 100.0
        if late and f.amplitude_uV < baseline_uV * float(settings["rules.combined_amplitude_pct"]) / 100.0:
            return "LOW_LATE"
        if not late and f.amplitude_uV < baseline_uV * float(settings["rules.amplitude_decrease_pct"]) / 100.0:
            return "LOW_STABLE"
        return "OK"


class Recovery:
    """Recovery after a loss, one machine per watched site, side and source.

    A ``loss_of_signal``, ``combined_event`` or ``amplitude_decrease`` at a site feeds
    LOSS to the machines of every source at that site and side, and the site's loss
    record keeps the time of the first of them (the "time since the loss").
    OK = a valid, qualifying stimulus of this source at this site with a response whose
    amplitude is >= ``rules.recovery_pct`` % of the reference; LOW = a valid, qualifying
    stimulus that is not OK (including no response); SKIP = anything else;
    DONE = the site recovered through another source, or the operator re-baselined and no
    condition is left open.
    Reference: APS stimuli compare with the side's APS baseline; probe stimuli with the
    site's probe baseline (captured, else the first good response at >= 1 mA). Where that
    does not exist, the first valid response of that source at the site, else the first
    valid response at the site of any source (the "initially good signal" of the LOS).
    ``rules.recovery_consecutive`` OK in a row of the same source recover the site (event
    ``signal_recovered`` with the time since the loss and the recovered conditions)::

        state | input | when | next | run | emits
        IDLE | LOSS | - | WATCHING | 0 | -
        IDLE | OK | - | IDLE | = | -
        IDLE | LOW | - | IDLE | = | -
        WATCHING | LOSS | - | WATCHING | 0 | -
        WATCHING | OK | run<rules.recovery_consecutive | WATCHING | +1 | -
        WATCHING | OK | run>=rules.recovery_consecutive | IDLE | +1 | signal_recovered
        WATCHING | LOW | - | WATCHING | 0 | -
        * | SKIP | - | * | = | -
        * | DONE | - | IDLE | 0 | -
    """

    MACHINE = Machine(
        "recovery",
        "IDLE",
        ("IDLE", "WATCHING"),
        ("LOSS", "OK", "LOW", "SKIP", "DONE"),
        (
            Row("IDLE", "LOSS", "WATCHING", "0"),
            Row("IDLE", "OK", "IDLE", "="),
            Row("IDLE", "LOW", "IDLE", "="),
            Row("WATCHING", "LOSS", "WATCHING", "0"),
            Row("WATCHING", "OK", "WATCHING", "+1", "run<rules.recovery_consecutive"),
            Row("WATCHING", "OK", "IDLE", "+1", "run>=rules.recovery_consecutive", "signal_recovered"),
            Row("WATCHING", "LOW", "WATCHING", "0"),
            Row(ANY, "SKIP", ANY, "="),
            Row(ANY, "DONE", "IDLE", "0"),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts, reference_uV: float | None, settings: Mapping[str, Any]) -> str:
        if f.untagged or m.stimulus.site not in WATCHED_SITES or not f.valid or not f.qualifying:
            return "SKIP"
        if not f.response:
            return "LOW"
        if reference_uV is None:
            return "OK"
        amp = f.amplitude_uV if f.amplitude_uV is not None else 0.0
        if amp >= reference_uV * float(settings["rules.recovery_pct"]) / 100.0:
            return "OK"
        return "LOW"


class NoCurrent:
    """No stimulus current, one machine per stimulator output (source: PROBE, APS).

    SHORT = a tagged stimulus whose set current is > 0 and whose current was not
    delivered (measured < (100 - ``stim.delivered_tolerance_pct``) % of set, or the
    analysis marked the epoch ``no_current``), valid or not: the stimulator's measurement
    does not depend on the EMG; DELIVERED = a tagged stimulus of that output delivered as
    set (or not measured); SKIP = untagged stimuli, set current 0.
    An episode is a run of consecutive SHORT stimuli of one output: one event, at its
    first stimulus. Never an input of loss of signal (a SHORT stimulus is not qualifying)::

        state | input | when | next | run | emits
        DELIVERING | SHORT | - | NOT_DELIVERED | 1 | no_current
        DELIVERING | DELIVERED | - | DELIVERING | 0 | -
        NOT_DELIVERED | SHORT | - | NOT_DELIVERED | +1 | -
        NOT_DELIVERED | DELIVERED | - | DELIVERING | 0 | -
        * | SKIP | - | * | = | -
    """

    MACHINE = Machine(
        "no_current",
        "DELIVERING",
        ("DELIVERING", "NOT_DELIVERED"),
        ("SHORT", "DELIVERED", "SKIP"),
        (
            Row("DELIVERING", "SHORT", "NOT_DELIVERED", "1", "", "no_current"),
            Row("DELIVERING", "DELIVERED", "DELIVERING", "0"),
            Row("NOT_DELIVERED", "SHORT", "NOT_DELIVERED", "+1"),
            Row("NOT_DELIVERED", "DELIVERED", "DELIVERING", "0"),
            Row(ANY, "SKIP", ANY, "="),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts) -> str:
        if f.untagged or m.stimulus.set_mA <= 0:
            return "SKIP"
        return "SHORT" if f.short else "DELIVERED"


class PoorBaseline:
    """Poor baseline ("check tube"), one machine per side.

    V1_POOR / V1_GOOD = the side's first valid, qualifying V1-tagged stimulus (any source,
    tagged site) has an amplitude below / at least ``rules.poor_baseline_uV`` (no
    response counts with its measured amplitude); only the first one is judged.
    APS_POOR / APS_GOOD = an APS baseline was just set below / at least that value
    (every APS baseline is judged, also after a re-baseline); SKIP = anything else::

        state | input | when | next | run | emits
        V1_PENDING | V1_POOR | - | V1_CHECKED | = | poor_baseline
        V1_PENDING | V1_GOOD | - | V1_CHECKED | = | -
        V1_CHECKED | V1_POOR | - | V1_CHECKED | = | -
        V1_CHECKED | V1_GOOD | - | V1_CHECKED | = | -
        * | APS_POOR | - | * | = | poor_baseline
        * | APS_GOOD | - | * | = | -
        * | SKIP | - | * | = | -
    """

    MACHINE = Machine(
        "poor_baseline",
        "V1_PENDING",
        ("V1_PENDING", "V1_CHECKED"),
        ("V1_POOR", "V1_GOOD", "APS_POOR", "APS_GOOD", "SKIP"),
        (
            Row("V1_PENDING", "V1_POOR", "V1_CHECKED", "=", "", "poor_baseline"),
            Row("V1_PENDING", "V1_GOOD", "V1_CHECKED", "="),
            Row("V1_CHECKED", "V1_POOR", "V1_CHECKED", "="),
            Row("V1_CHECKED", "V1_GOOD", "V1_CHECKED", "="),
            Row(ANY, "APS_POOR", ANY, "=", "", "poor_baseline"),
            Row(ANY, "APS_GOOD", ANY, "="),
            Row(ANY, "SKIP", ANY, "="),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts, settings: Mapping[str, Any]) -> str:
        if m.stimulus.step is not Step.V1 or f.untagged or not f.valid or not f.qualifying:
            return "SKIP"
        amp = f.amplitude_uV if f.amplitude_uV is not None else 0.0
        return "V1_POOR" if amp < float(settings["rules.poor_baseline_uV"]) else "V1_GOOD"

    @staticmethod
    def classify_aps(baseline_uV: float, settings: Mapping[str, Any]) -> str:
        return "APS_POOR" if baseline_uV < float(settings["rules.poor_baseline_uV"]) else "APS_GOOD"


class NonRecurrent:
    """Non-recurrent nerve suspected, one machine per side (only the right is watched).

    SHORT_LATENCY = a valid right vagal response (any source, any current) whose latency
    to the first major peak is < ``rules.nonrecurrent_latency_ms``; SKIP = anything else.
    Raised once, at the first such response::

        state | input | when | next | run | emits
        WATCHING | SHORT_LATENCY | - | RAISED | = | nonrecurrent_nerve_suspected
        RAISED | SHORT_LATENCY | - | RAISED | = | -
        * | SKIP | - | * | = | -
    """

    MACHINE = Machine(
        "nonrecurrent",
        "WATCHING",
        ("WATCHING", "RAISED"),
        ("SHORT_LATENCY", "SKIP"),
        (
            Row("WATCHING", "SHORT_LATENCY", "RAISED", "=", "", "nonrecurrent_nerve_suspected"),
            Row("RAISED", "SHORT_LATENCY", "RAISED", "="),
            Row(ANY, "SKIP", ANY, "="),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts, settings: Mapping[str, Any]) -> str:
        s = m.stimulus
        if (
            s.site is Site.VAGUS
            and s.side.value == "R"
            and f.response
            and f.latency_ms is not None
            and f.latency_ms < float(settings["rules.nonrecurrent_latency_ms"])
        ):
            return "SHORT_LATENCY"
        return "SKIP"


class NmbSide:
    """Neuromuscular blockade, part 1: is one side depressed? One machine per side.

    Each side is compared with its *reference* (``RuleEngine.nmb_reference``): the side's
    APS baseline, else its V1 value, else its R1 value (clinical-rules.md), and only
    stimuli of the reference's site and source are compared with it (a probe touch is not
    comparable with the continuous vagal electrode, nor the RLN with the vagus).
    LOW_STABLE = a valid, qualifying response of that site and source with amplitude <
    ``rules.amplitude_decrease_pct`` % of the reference and latency <=
    ``rules.combined_latency_pct`` % of it (the amplitude-decrease condition);
    OTHER = any other valid, qualifying response of that site and source (normal, or low
    and late: the traction pattern is not a blockade);
    SKIP = anything else: invalid, non-qualifying, another site or source, no reference,
    and no response (without a latency it cannot tell blockade from injury: that is the
    loss of signal's business);
    RESET = control: a blockade episode ended, so both sides start afresh.
    ``rules.amplitude_decrease_consecutive`` LOW_STABLE in a row make the side DOWN (its
    time, that of the stimulus completing the run, is kept); OTHER brings it back::

        state | input | when | next | run | emits
        NORMAL | LOW_STABLE | run<rules.amplitude_decrease_consecutive | NORMAL | +1 | -
        NORMAL | LOW_STABLE | run>=rules.amplitude_decrease_consecutive | DOWN | +1 | side_down
        NORMAL | OTHER | - | NORMAL | 0 | -
        DOWN | LOW_STABLE | - | DOWN | = | -
        DOWN | OTHER | - | NORMAL | 0 | side_up
        * | SKIP | - | * | = | -
        * | RESET | - | NORMAL | 0 | -
    """

    MACHINE = Machine(
        "nmb_side",
        "NORMAL",
        ("NORMAL", "DOWN"),
        ("LOW_STABLE", "OTHER", "SKIP", "RESET"),
        (
            Row("NORMAL", "LOW_STABLE", "NORMAL", "+1", "run<rules.amplitude_decrease_consecutive"),
            Row("NORMAL", "LOW_STABLE", "DOWN", "+1", "run>=rules.amplitude_decrease_consecutive", "side_down"),
            Row("NORMAL", "OTHER", "NORMAL", "0"),
            Row("DOWN", "LOW_STABLE", "DOWN", "="),
            Row("DOWN", "OTHER", "NORMAL", "0", "", "side_up"),
            Row(ANY, "SKIP", ANY, "="),
            Row(ANY, "RESET", "NORMAL", "0"),
        ),
    )

    @staticmethod
    def classify(m: Measurement, f: Facts, reference: Mapping[str, Any] | None, settings: Mapping[str, Any]) -> str:
        if (
            reference is None
            or f.untagged
            or not f.valid
            or not f.qualifying
            or not f.response
            or f.amplitude_uV is None
            or f.latency_ms is None
            or m.stimulus.site.value != reference["site"]
            or m.stimulus.source.value != reference["source"]
        ):
            return "SKIP"
        stable = f.latency_ms <= reference["latency_ms"] * float(settings["rules.combined_latency_pct"]) / 100.0
        low = f.amplitude_uV < reference["amplitude_uV"] * float(settings["rules.amplitude_decrease_pct"]) / 100.0
        return "LOW_STABLE" if (low and stable) else "OTHER"


class Blockade:
    """Neuromuscular blockade, part 2: both sides together. One machine for the case.

    BOTH_DOWN = both sides are DOWN (``NmbSide``) and the times at which they went down
    lie within ``rules.nmb_window_s`` of each other (a relaxant acts on both sides at
    once; falls minutes apart have separate causes); NOT_BOTH = anything else;
    ENDED = control: a side with the blockade in its loss record recovered (recovery as
    for the amplitude decrease: ``Recovery``). Raised once per episode (medium,
    "systemic cause: check train-of-four and relaxant with the anaesthetist"); while it
    is SUSPECTED the single-side amplitude-decrease advice is not raised::

        state | input | when | next | run | emits
        IDLE | BOTH_DOWN | - | SUSPECTED | = | neuromuscular_blockade_suspected
        IDLE | NOT_BOTH | - | IDLE | = | -
        SUSPECTED | BOTH_DOWN | - | SUSPECTED | = | -
        SUSPECTED | NOT_BOTH | - | SUSPECTED | = | -
        * | ENDED | - | IDLE | = | -
    """

    MACHINE = Machine(
        "blockade",
        "IDLE",
        ("IDLE", "SUSPECTED"),
        ("BOTH_DOWN", "NOT_BOTH", "ENDED"),
        (
            Row("IDLE", "BOTH_DOWN", "SUSPECTED", "=", "", "neuromuscular_blockade_suspected"),
            Row("IDLE", "NOT_BOTH", "IDLE", "="),
            Row("SUSPECTED", "BOTH_DOWN", "SUSPECTED", "="),
            Row("SUSPECTED", "NOT_BOTH", "SUSPECTED", "="),
            Row(ANY, "ENDED", "IDLE", "="),
        ),
    )

    @staticmethod
    def classify(down_t_s: Mapping[str, float | None], settings: Mapping[str, Any]) -> str:
        """``down_t_s``: per side, the time it went DOWN, None while it is not down."""
        times = [t for t in down_t_s.values() if t is not None]
        if len(times) < 2:
            return "NOT_BOTH"
        apart = max(times) - min(times)
        return "BOTH_DOWN" if apart <= float(settings["rules.nmb_window_s"]) + _TIME_EPS else "NOT_BOTH"


CONDITIONS = (LossOfSignal, ApsBaseline, ProbeBaseline, ApsAmplitude, Recovery, NoCurrent, PoorBaseline,
              NonRecurrent, NmbSide, Blockade)
