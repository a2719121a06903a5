"""Both outputs at once: the other output's pulses in an epoch, and its responses.

Owns: ``Overlap``: the pulses each output delivered lately (board time, and what each
evoked on each side's channel), where the other pulses fall in an epoch (blanked by the
analysis), whether an epoch can be judged yet, and the judgement.
May import: ``app.model``, ``app.settings``, ``app.engine.stimulator``, ``firmware_bridge.messages``.
Pure of I/O: the pipeline (``app.engine.stimulus``) hands it every epoch and the clock.

The vagal electrode (1 Hz) and the surgeon's probe (up to 30 Hz) can run together. A pulse
of the other output in an epoch brings two things into it:

- its stimulus artifact: the analysis blanks it like the epoch's own (``onsets``: where
  the other output's reported pulses fall, and while it runs as a train those its period
  puts around its last one; a fast train's own next pulses likewise);
- its *response*, which blanking cannot take out: the probe on the left RLN answers on the
  left vagus's channel 3-15 ms after its pulse; the vagal response lands in a probe epoch
  that closely follows a vagal pulse. Read as this stimulus's response, it makes a cut
  vagus look answering, or probed tissue look like nerve.

So an epoch that a pulse of the other output *reaches* (from the longest response window
of any site plus ``REACH_MARGIN_MS`` before this pulse, since the probe's tag may not be
where it touches, to the end of this one's response window: ``analysis.response_end_*``)
is not measured (``other_stimulus``) unless that pulse is known to evoke nothing on this
epoch's channel:

- a pulse whose own epoch no pulse of this output reached ("clean") evokes what its epoch
  showed on that channel. While the other output may stimulate, each epoch is measured on
  both channels over the longest response window by an analyzer of its own; while it
  rests, on its own channel, and the vagal electrode also on its other side's channel
  every tenth pulse;
- a pulse whose epoch was reached as well but showed nothing on that channel evokes
  nothing there;
- a probe pulse whose epoch showed a response on that channel, or could not be measured,
  is judged by its nearest clean pulses before and after (within 2.5 periods, both silent
  on that channel) only in a fast train (``FAST_TRAIN_S``) or when it answered on the
  other side's channel (the probe was on that side's nerve); a slow train may touch a
  nerve on this side between two of its pulses, so otherwise it evokes;
- a vagal pulse whose epoch was reached is judged by its last clean pulse measured on that
  channel within ``APS_VOUCH_S``, sent after the electrode's last start, settings or side
  change (a fixed electrode: what it evokes on a channel changes with what it is told, not
  from one pulse to the next);
- a single pulse asked of the other output counts as reaching, evoking, if it may fall in
  the reach (within ``COMMAND_MARGIN_S`` of the command, as mapped);
- a gap in the other output's train over the reach (epochs lost on the way) counts as an
  evoking pulse;
- anything not known counts as evoking.

An epoch is judged only when the other output's train pulses that can reach it are known
(``ready``): the other output has reported a pulse past the reach (its epochs arrive in
onset order); or by its last start or stop (``Stimulator.train_command``) none can be in
the reach unreported: never started; stopped ``COMMAND_MARGIN_S`` or more before the reach
(mapped board times run late, never early); running with the same settings for
``SETTLED_S``, a pulse of those settings reported, and its period puts no unreported pulse
in the reach. While the other output may stimulate, the epoch is measured only then, with
every pulse of the other output in it blanked (a train's first pulse is not known when the
epoch arrives). Otherwise it waits, at most ``HOLD_S`` after it arrived; then what a
stopped output delivered has been reported, and any other doubt counts as a reaching,
evoking pulse. An epoch reached by a probe pulse that is judged by its neighbours waits for the
next clean one, up to ``NEIGHBOUR_HOLD_S`` (a 2 Hz train). Waiting costs a vagal epoch
about one pulse of the probe's train while both run (more after a command, up to 0.3 s,
and up to 0.7 s with a slow train), nothing while one rests. The board's
clock going back (a restart) forgets the pulses from before it. This is what keeps a
train's first pulse, a single pulse, a restart at a new phase or a probe just moved onto a
nerve from slipping into a vagal epoch unjudged.

Not covered: a probe slower than about 2 Hz in step with the vagal electrode leaves
neither clean and both are not measured while it runs (said by the events, with no alarm
of its own); a slow probe train on tissue on the vagal electrode's side, in step with it,
leaves the intact vagus's epochs not measured (its response is in the probe's window);
``lnm analyze`` of a recording does not apply any of this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.engine.stimulator import Stimulator
from app.model import Side, Site, Stimulus
from app.settings import Settings
from firmware_bridge.messages import Output, StimEpoch, StimMode

SETTLED_S = 1.0  # an output this long without a command runs (or rests) as commanded
HOLD_S = 0.3  # the longest an epoch waits for the other output's pulses (engine clock)
KEPT_S = 3.0  # pulses of the probe remembered (board time)
APS_VOUCH_S = 30.0  # the vagal electrode's pulses remembered, and how old one may vouch for a later one
COMMAND_MARGIN_S = 0.1  # a command reaches the board within this (engine clock; mapped board times run late)
REACH_MARGIN_MS = 5.0  # beyond the other site's response window, its response's tail may still reach
NEIGHBOUR_HOLD_S = 0.7  # the longest an epoch waits for the other train's next clean pulse
FAST_TRAIN_S = 0.05  # a probe train this fast (20 Hz and up) is not lifted onto a nerve and off between pulses
NEIGHBOUR_PERIODS = 2.5  # a neighbour of the same train is at most this many periods away


def other_output(output: Output) -> Output:
    """The probe for the vagal electrode and the other way round."""
    return Output.PROBE if Output(output) is Output.APS else Output.APS


@dataclass
class Pulse:
    """One delivered pulse of an output: when (board µs), whether no pulse of the other
    output reached its epoch (None: not judged yet), and whether it evoked a response on
    each side's channel (None: not measurable)."""

    t_us: int
    evoked: dict[Side, bool | None]
    clean: bool | None = None


@dataclass
class Pending:
    """An epoch measured on arrival and waiting for its judgement."""

    epoch: StimEpoch
    stim: Stimulus
    arrived_s: float  # engine clock
    reach: tuple[float, float]  # board µs, open interval
    pulse: Pulse


class Overlap:
    """The two outputs' recent pulses (see the module docstring)."""

    def __init__(self, stim: Stimulator, settings: Callable[[], Settings], board_clock: Callable[[int], float]) -> None:
        self.stim = stim
        self._settings = settings
        self._board_clock = board_clock  # board µs -> engine clock (``TimeBase.board_clock``)
        self.pulses: dict[Output, deque[Pulse]] = {o: deque() for o in Output}

    # -- what is known of an output

    def _clock(self, board_us: float) -> float:
        return self._board_clock(int(board_us))

    def _end_ms(self, site: Site) -> float:
        name = site.value.lower() if site in (Site.VAGUS, Site.RLN, Site.EBSLN) else "untagged"
        return float(self._settings()[f"analysis.response_end_{name}_ms"])

    def longest_site(self) -> Site:
        """The site whose response window is the longest (the reach's measure)."""
        return max(Site, key=self._end_ms)

    def _period_us(self, output: Output) -> float | None:
        out = self.stim.on_wire(output)
        return 1e6 / out.rate_hz if out.on and out.rate_hz > 0 else None

    def quiet(self, output: Output, now: float) -> bool:
        """Off and no command for ``SETTLED_S``: no pulse of it is on its way."""
        return (not self.stim.on_wire(output).on and not self.stim.running(output)
                and self.stim.train_command(output)[0] <= now - SETTLED_S
                and not any(t > now - SETTLED_S for t in self.stim.singles(output)))

    def active(self, output: Output, now: float) -> bool:
        """Whether ``output`` may deliver a pulse that reaches an epoch arriving now."""
        return not self.quiet(output, now)

    # -- an epoch arrives

    def arrive(self, e: StimEpoch, stim: Stimulus, evoked: dict[Side, bool | None], now: float) -> Pending:
        """Remember the epoch's pulse (what it evoked) and what may reach it."""
        this = Output(e.output)
        onset = int(e.board_time_us)
        kept = self.pulses[this]
        keep_s = APS_VOUCH_S if this is Output.APS else KEPT_S
        while kept and (kept[0].t_us < onset - keep_s * 1e6 or kept[-1].t_us > onset):
            if kept[-1].t_us > onset:  # the board's clock went back (a restart): the rest is of another time
                kept.clear()
                break
            kept.popleft()
        pulse = Pulse(onset, evoked)
        kept.append(pulse)
        other = self.pulses[other_output(this)]
        if other and other[-1].t_us > onset + 1e6:  # the board's clock went back: its pulses are of another time
            other.clear()
        # the other output's response may last as long as the longest of any site (its tag
        # may not be where it touches), plus a margin for a late tail
        longest = self._end_ms(self.longest_site())
        reach = (onset - 1e3 * (longest + REACH_MARGIN_MS), onset + 1e3 * self._end_ms(stim.site))
        return Pending(e, stim, now, reach, pulse)

    def onsets(self, e: StimEpoch, stim: Stimulus) -> list[int]:
        """Sample indices in the epoch of every other pulse inside it: the same output's
        neighbours while it runs as a train, the other output's reported pulses and, while
        it runs, those its period puts around its last one. Blanked by the analysis."""
        n = int(e.samples.shape[-1])
        fs = float(e.sample_rate_hz)
        if fs <= 0 or n <= 0:
            return []
        pre = int(e.pre_samples)
        onset = int(e.board_time_us)
        found: set[int] = set()
        own = self._period_us(Output(e.output))
        if own is not None:
            period = own * fs / 1e6
            found.update(int(round(pre + k * period)) for k in range(1, int((n - pre) / period) + 1))
            found.update(int(round(pre - k * period)) for k in range(1, int(pre / period) + 1))
        start = onset - pre * 1e6 / fs
        end = onset + (n - pre) * 1e6 / fs
        other = other_output(Output(e.output))
        times = [float(p.t_us) for p in self.pulses[other] if start <= p.t_us < end]
        period_us = self._period_us(other)
        kept = self.pulses[other]
        if period_us is not None and kept and start - max(1e6, 2 * period_us) <= kept[-1].t_us <= end:
            last = kept[-1].t_us
            k_lo = int(-((last - start) // period_us))
            k_hi = int((end - last) // period_us)
            times += [last + k * period_us for k in range(k_lo, k_hi + 1)]
        found.update(int(round(pre + (t - onset) * fs / 1e6)) for t in times if start <= t < end)
        found.discard(pre)  # (a pulse at the same moment is inside this stimulus's own blank)
        return sorted(o for o in found if 0 <= o < n)

    # -- judging

    def _unreported(self, p: Pending, now: float, final: bool = False) -> list[float] | None:
        """Pulses of the other output's train that may lie in the reach without being
        reported yet: [] none, the times its period puts there, None: not known (``final``:
        the epoch waited ``HOLD_S``; what a stopped output delivered has come by then).
        Single pulses are ``_single_reaches``."""
        other = other_output(Output(p.epoch.output))
        kept = self.pulses[other]
        last = kept[-1].t_us if kept else None
        lo, hi = p.reach
        if last is not None and last >= hi:
            return []
        sent, mode = self.stim.train_command(other)
        if mode is None:
            return []  # never started
        if mode is StimMode.STOP:  # none after the stop reached the board
            return [] if final or self._clock(lo) > sent + COMMAND_MARGIN_S else None
        period = self._period_us(other)
        if (period is None or last is None or not self.stim.running(other) or sent > now - SETTLED_S
                or self._clock(last) < sent + COMMAND_MARGIN_S):  # its period and phase not settled yet
            return None
        out = []
        k = 1
        while last + k * period < hi:
            if last + k * period > lo:
                out.append(last + k * period)
            k += 1
        return out

    def _single_reaches(self, p: Pending) -> bool:
        """Whether a single pulse asked of the other output may fall in the reach (it comes
        within ``COMMAND_MARGIN_S`` of the command, as mapped)."""
        lo, hi = self._clock(p.reach[0]), self._clock(p.reach[1])
        asked = self.stim.singles(other_output(Output(p.epoch.output)))
        return any(lo < t + COMMAND_MARGIN_S and t < hi for t in asked)

    def ready(self, p: Pending, now: float) -> bool:
        """Whether ``p`` can be judged now (see the module docstring)."""
        waited = now - p.arrived_s
        unreported = self._unreported(p, now, final=waited >= HOLD_S)
        if unreported is None or unreported:
            return waited >= HOLD_S
        # a reached probe pulse is judged by its neighbours: wait for the next clean one
        # after it if the train brings one soon
        other = other_output(Output(p.epoch.output))
        period = self._period_us(other)
        if other is not Output.PROBE or period is None or period > (NEIGHBOUR_HOLD_S - 0.1) * 1e6:
            return True
        lo, hi = p.reach
        kept = self.pulses[other]
        reached = [q.t_us for q in kept if lo < q.t_us < hi and q.clean is not True]
        return (not reached or waited >= NEIGHBOUR_HOLD_S
                or any(q.t_us > reached[-1] and q.clean is True for q in kept))

    def settle(self, p: Pending, now: float) -> None:
        """Settle whether ``p``'s pulse is clean (no pulse of the other output reaches its
        epoch) as soon as that is known."""
        if p.pulse.clean is None:
            unreported = self._unreported(p, now, final=now >= p.arrived_s + HOLD_S)
            if unreported is not None:
                lo, hi = p.reach
                p.pulse.clean = not unreported and not self._single_reaches(p) and not any(
                    lo < q.t_us < hi for q in self.pulses[other_output(Output(p.epoch.output))])

    def judge(self, p: Pending, now: float) -> bool:
        """Whether a pulse of the other output that may have evoked a response on this
        epoch's channel reaches it (anything not known counts as one)."""
        other = other_output(Output(p.epoch.output))
        lo, hi = p.reach
        kept = list(self.pulses[other])
        unreported = self._unreported(p, now, final=now >= p.arrived_s + HOLD_S)
        if p.pulse.clean is None:
            p.pulse.clean = False  # judged without knowing: never a neighbour that vouches
        if unreported is None or unreported or self._single_reaches(p) or self._gap(kept, lo, hi, other):
            return True
        return any(self._evokes(kept, i, p.stim.side, other) for i, q in enumerate(kept) if lo < q.t_us < hi)

    def _evokes(self, kept: list[Pulse], i: int, side: Side, output: Output) -> bool:
        """Whether pulse ``i`` of ``output`` may have evoked a response on ``side``'s channel."""
        q = kept[i]
        own = q.evoked.get(side)
        if q.clean is True or own is False:
            # its own epoch: clean, or silent on that channel even with this output's pulse in it
            return own is not False
        period = self._period_us(output)
        if period is None:
            return True

        def silent(n: Pulse | None, span_s: float) -> bool:
            return n is not None and n.evoked.get(side) is False and abs(n.t_us - q.t_us) <= span_s * 1e6

        known = [n for n in kept if n.clean is True and n.evoked.get(side) is not None]
        before = next((n for n in reversed(known) if n.t_us < q.t_us), None)
        if output is Output.APS:
            # a fixed electrode: what it evokes on a channel changes slowly, not from one pulse
            # to the next; its last clean pulse measured on that channel vouches for it, if
            # nothing was changed since (current, rate, side: a start or settings command)
            since = max(self.stim.train_command(output)[0], self.stim.selection_changed_at(output))
            return not (silent(before, max(NEIGHBOUR_PERIODS * period / 1e6, APS_VOUCH_S)) and before is not None
                        and self._clock(before.t_us) > since + COMMAND_MARGIN_S)
        if period > FAST_TRAIN_S * 1e6 and q.evoked.get(side.other) is not True:
            # a slow train may touch a nerve on this side between two of its pulses; not if
            # this pulse answered on the other side's channel (the probe was on that side)
            return True
        after = next((n for n in known if n.t_us > q.t_us), None)
        span = NEIGHBOUR_PERIODS * period / 1e6
        return not (silent(before, span) and silent(after, span))

    def _gap(self, kept: list[Pulse], lo: float, hi: float, output: Output) -> bool:
        """Whether the other output's train has a gap over the reach: pulses its period puts
        there that were never reported (epochs lost on the way)."""
        period = self._period_us(output)
        if period is None:
            return False
        around = [q.t_us for q in kept if lo < q.t_us < hi]
        before = [q.t_us for q in kept if q.t_us <= lo]
        after = [q.t_us for q in kept if q.t_us >= hi]
        seq = before[-1:] + around + after[:1]
        return any(b - a > 1.5 * period for a, b in zip(seq, seq[1:], strict=False))
