"""Stimulus attribution (``app.engine.stimulator``): by configuration token, else by board
time; never to a selection made after the stimulus. Pure: the Stimulator alone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.stimulator import SELECTION_MARGIN_S, TOKENS_KEPT, Stimulator
from app.model import Side, Site, Source, Step
from app.settings import Settings
from firmware_bridge.messages import Output, StimMode, Stimulate

SITES = [Site.VAGUS, Site.RLN, Site.EBSLN]


def _stim(tokens: bool = True) -> Stimulator:
    s = Stimulator(Settings())
    s.tokens_supported = tokens
    s.note_selection(0.0)
    return s


def test_each_stimulate_carries_a_new_token_remembered_with_the_selection_then():
    s = _stim()
    s.probe_site, s.probe_side = Site.RLN, Side.R
    first = s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 1.0)
    s.probe_site, s.probe_step = Site.VAGUS, Step.V2
    second = s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 2.0)
    stop = s.issue(Stimulate(Output.PROBE, StimMode.STOP), 3.0)
    assert first.config_token != second.config_token and stop.config_token is None
    # whatever time the epoch says, its token decides
    assert s.selection_at(Output.PROBE, first.config_token, 99.0) == (Site.RLN, Side.R, None, Source.PROBE)
    assert s.selection_at(Output.PROBE, second.config_token, 0.0) == (Site.VAGUS, Side.R, Step.V2, Source.PROBE)
    aps = s.issue(Stimulate(Output.APS, StimMode.CONTINUOUS), 4.0)
    assert s.selection_at(Output.APS, aps.config_token, 4.0) == (Site.VAGUS, Side.L, None, Source.APS)
    # a token of the other output, or one long forgotten, falls back to board time
    assert s.selection_at(Output.APS, first.config_token, 4.0)[3] is Source.APS


def test_a_board_without_tokens_gets_none_and_old_tokens_are_forgotten():
    s = _stim(tokens=False)
    assert s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 1.0).config_token is None
    s.tokens_supported = True
    toks = [s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 1.0 + i).config_token for i in range(TOKENS_KEPT + 1)]
    s.probe_site = Site.EBSLN
    s.note_selection(500.0)
    assert s.selection_at(Output.PROBE, toks[0], 600.0)[0] is Site.EBSLN  # forgotten: by time
    assert s.selection_at(Output.PROBE, toks[-1], 600.0)[0] is Site.VAGUS


def test_selection_changes_are_reported_per_output():
    s = _stim()
    assert s.note_selection(1.0) == []
    s.probe_site = Site.RLN
    assert s.note_selection(2.0) == [Output.PROBE]
    s.aps_side = Side.R
    s.probe_side = Side.R
    assert s.note_selection(3.0) == [Output.PROBE, Output.APS]


def test_board_time_keeps_the_old_selection_within_the_margin_unless_the_run_began_after_the_change():
    s = _stim(tokens=False)
    s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 1.0)  # running since 1.0 on the vagus
    s.probe_site = Site.RLN
    s.note_selection(5.0)
    assert s.selection_at(Output.PROBE, None, 4.999)[0] is Site.VAGUS
    assert s.selection_at(Output.PROBE, None, 5.0 + SELECTION_MARGIN_S / 2)[0] is Site.VAGUS  # in flight?
    assert s.selection_at(Output.PROBE, None, 5.0 + SELECTION_MARGIN_S)[0] is Site.RLN
    s.issue(Stimulate(Output.PROBE, StimMode.STOP), 6.0)
    s.probe_site = Site.EBSLN
    s.note_selection(7.0)
    s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 7.0)  # chosen, then started: its pulses are EBSLN's
    assert s.selection_at(Output.PROBE, None, 7.0)[0] is Site.EBSLN


# steps of 0.5-3 ms too: a stop, a change and a start quicker than the margin
def test_a_pulse_of_a_run_stopped_moments_before_a_new_one_is_not_given_the_new_selection():
    s = _stim(tokens=False)
    s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 9.0)
    # a pulse at 10.000 (its epoch mapped 4 ms late); STOP, another site and a new run within 3 ms
    s.issue(Stimulate(Output.PROBE, StimMode.STOP), 10.001)
    s.probe_site = Site.RLN
    s.note_selection(10.002)
    s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), 10.003)
    assert s.selection_at(Output.PROBE, None, 10.004)[0] is Site.VAGUS


_EVENTS = st.lists(st.tuples(st.sampled_from(["change", "start", "stop", "single", "pulse"]),
                             st.one_of(st.floats(0.0005, 0.003), st.floats(0.003, 0.2)), st.integers(0, 5),
                             st.floats(0.0, 1.0)),
                   min_size=1, max_size=60)


@settings(max_examples=300)
@given(_EVENTS)
def test_no_stimulus_is_ever_attributed_to_a_selection_made_after_it(events):
    """A timeline of selection changes, commands and pulses (the board delivers a pulse
    only while a run it was commanded runs, or once after a single); each epoch's onset
    mapped to the engine clock late by at most the margin (the transport delay the board
    time mapping keeps); attribution asked after everything happened."""
    s = _stim(tokens=False)
    t = 0.0
    changes = [(0.0, s.selection(Output.PROBE))]
    running, single_at = False, None
    run_start = None
    pulses = []  # (true onset, mapped onset, start of its run or None)
    for what, dt, k, lat in events:
        t += dt
        if what == "change":
            s.probe_site, s.probe_side = SITES[k % 3], (Side.L, Side.R)[k % 2]
            if s.note_selection(t):
                changes.append((t, s.selection(Output.PROBE)))
        elif what == "start" and not running:
            s.issue(Stimulate(Output.PROBE, StimMode.CONTINUOUS), t)
            running, run_start = True, t
            single_at = None  # the board carries out its commands in order: a single's pulse came before
        elif what == "stop":
            s.issue(Stimulate(Output.PROBE, StimMode.STOP), t)
            running, single_at = False, None
        elif what == "single" and not running:
            s.issue(Stimulate(Output.PROBE, StimMode.SINGLE), t)
            single_at = t
        elif what == "pulse" and (running or single_at is not None):
            onset = t  # delivered now: after its command
            pulses.append((onset, onset + lat * SELECTION_MARGIN_S, run_start if running else single_at))
            single_at = None
    for onset, mapped, _start in pulses:
        got = s.selection_at(Output.PROBE, None, mapped)
        made_before = [sel for when, sel in changes if when <= onset]
        assert got in made_before, (onset, mapped, got, changes)
        last_when, last_sel = max((c for c in changes if c[0] <= onset), key=lambda c: c[0])
        if onset - last_when >= SELECTION_MARGIN_S:
            assert got == last_sel  # outside the ambiguity window: exactly the selection in force
