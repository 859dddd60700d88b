"""The stop's budget (issue 22): which guests are saved, given the room in
libvirt's save directory and the time to STOP_DEADLINE, and what the others
do instead. Pure: facts in (GuestFacts, HostFacts), decisions out (Budget);
no libvirt, no files, no clock. stop/plan.py gathers the facts
(stop/facts.py), the chains execute the decisions, `plan stop` prints them.

The rules, in order (README "Planning the stop"):
1. A guest whose chain has suspend but that cannot be saved (a migration
   blocker in its definition, or a save QEMU refused in an earlier stop,
   remembered until its devices change) loses the suspend step.
2. The others are ranked by the host alone: first the guests SAVE_PRIORITY
   names, in its order, then the rest smaller first (as many guests as
   possible), by name on a tie. A guest's metadata never changes its rank.
3. Room: walking the ranking, a guest is admitted to save while the sum of
   the admitted guests' upper bounds (save_bound) fits the free space less
   SAVE_RESERVE: all admitted saves can run at once and finish.
4. Time (STOP_DEADLINE set): the saves of an order group take a fixed
   window cost plus the sum of their predicted image sizes over the host's
   aggregate save rate (save_model: a least-squares line over the recent
   stops with the same PARALLEL_SAVE, PAUSE_BEFORE_SAVE and BYPASS_CACHE
   when their sizes differ enough, else the median of their rates and no
   window cost); each group starts when the previous one ends (its saves
   and its shutdowns); the whole stop adds STOP_OVERHEAD_SECONDS (starting,
   connecting, listing, writing the list: not in any record's save window).
   Walking the ranking again, a guest is admitted to save while every
   group's saves still end before the deadline less a margin (the guests
   not admitted count as shut down); the others are shut down instead.
5. A guest that lost its suspend step and whose chain has nothing after it
   is shut down instead (then, with a deadline, powered off at the
   deadline): never left running for the host to kill, and never powered
   off without a shutdown first.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

MIB = 1024 * 1024
# What a managed save writes besides the guest's RAM blocks: libvirt's header
# and domain XML (kilobytes), QEMU's device state (a few MiB at most for
# ordinary devices), the rounding of the file system. Measured on the test
# bed: see BENCHMARKS.md "Save image sizes".
DEVICE_STATE_BYTES = 16 * MIB
# A compressing save_image_format (gzip, bzip2, xz, lzop, zstd) writes at most
# its input plus this share of it (their documented worst-case expansion is
# well under 1%): the bound stays the raw bound, plus this.
COMPRESSED_SLACK = 0.01
COMPRESSED_FORMATS = frozenset({"gzip", "bzip2", "xz", "lzop", "zstd"})
# Before any recorded stop: the aggregate save rate assumed (bytes/s). The test
# bed (TCG, 2 cores, ext4 on virtio) reached 130-250 MiB/s; a third of the
# slowest keeps the first plan on the safe side. See BENCHMARKS.md.
DEFAULT_SAVE_RATE = 40 * MIB
# A guest's shutdown with no earlier shutdown recorded (seconds).
DEFAULT_SHUTDOWN_SECONDS = 10.0
# Kept free before the deadline: connecting, listing, pausing, the last
# progress; and a share of the deadline for the prediction's error.
DEADLINE_FIXED_MARGIN = 2.0
DEADLINE_SHARE_MARGIN = 0.10
RATE_RECORDS = 5  # the last few matching stops make the rate
# A line (fixed window cost + bytes over a rate) is fitted only when the
# records' sizes differ by this factor: else the intercept is noise.
LINE_MIN_SPREAD = 1.5
# The stop's own work outside the saves' window (process start, connecting,
# listing, planning, writing the list and the journal), seconds: the gap
# between a stop's wall time and its recorded save window on the test bed
# was 0.3-0.5 s (BENCHMARKS.md "Predicted against measured").
STOP_OVERHEAD_SECONDS = 0.4


@dataclass(frozen=True)
class GuestFacts:
    """What the planner knows of one guest (gathered by stop/facts.py)."""

    uuid: str
    name: str
    chain: tuple[str, ...]  # as configured (host or its policy)
    group: int  # order group index: 0 runs first
    max_memory_bytes: int  # the RAM block the image may hold
    extra_ram_bytes: int = 0  # video RAM and other RAM blocks of its devices
    blockers: tuple[str, ...] = ()  # why its definition cannot be saved
    refused: str | None = None  # why QEMU refused its last save (devices unchanged)
    rank: int | None = None  # position in SAVE_PRIORITY; None: not named
    last_image_bytes: int | None = None  # its last managed save image, from the history
    shutdown_seconds: tuple[float, ...] = ()  # its earlier shutdowns, from the history


@dataclass(frozen=True)
class SaveRecord:
    """One earlier stop's saves on this URI (from state.history.StopRecord)."""

    bytes_saved: int
    save_seconds: float
    parallel_save: int
    pause_before_save: bool
    bypass_cache: bool


@dataclass(frozen=True)
class HostFacts:
    free_bytes: int | None  # free space of the save directory's file system; None: not visible
    save_dir: str | None  # None: a remote daemon, or unknown
    reserve_bytes: int = 0  # SAVE_RESERVE
    deadline: float | None = None  # seconds the stop may take; None: no deadline
    image_format: str = "raw"  # qemu.conf's save_image_format
    parallel_save: int = 8
    pause_before_save: bool = True
    bypass_cache: bool = False
    parallel_shutdown: int = 0
    shutdown_timeout: float = 300.0  # 0: no limit
    records: tuple[SaveRecord, ...] = ()  # oldest first
    room_unknown_why: str = ""  # said when free_bytes is None


@dataclass(frozen=True)
class Decision:
    uuid: str
    name: str
    configured: tuple[str, ...]
    chain: tuple[str, ...]  # what the stop runs
    reason: str  # "" (as configured) | "refused" | "blocker" | "room" | "time"
    why: str  # one line for people, "" when as configured
    saves: bool  # its chain still has suspend
    bound_bytes: int  # the most its save may write (0 when it is not saved)
    predicted_bytes: int  # what its save is expected to write
    predicted_seconds: float  # its own save or shutdown
    fallback: bool = False  # shutdown added: its chain ended at the save

    @property
    def as_configured(self) -> bool:
        return self.reason == ""


@dataclass
class Budget:
    decisions: list[Decision] = field(default_factory=list)
    room_bytes: int | None = None  # free less the reserve; None: unknown
    bound_bytes: int = 0  # the admitted saves' bounds together
    save_rate: float = DEFAULT_SAVE_RATE
    rate_source: str = ""
    window_seconds: float = 0.0  # a group's saves' fixed cost, besides bytes over the rate
    predicted_seconds: float = 0.0  # the whole stop, groups one after another
    deadline: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def all_as_configured(self) -> bool:
        return all(d.as_configured for d in self.decisions)


def save_bound(guest: GuestFacts, image_format: str) -> int:
    """The most a managed save of this guest can write."""
    raw = guest.max_memory_bytes + guest.extra_ram_bytes + DEVICE_STATE_BYTES
    if image_format in COMPRESSED_FORMATS:
        raw += int(raw * COMPRESSED_SLACK)
    return raw


def predicted_image(guest: GuestFacts, image_format: str) -> int:
    """What its save is expected to write: its last image (the history), else the bound."""
    bound = save_bound(guest, image_format)
    if guest.last_image_bytes is not None and 0 < guest.last_image_bytes <= bound:
        return guest.last_image_bytes
    return bound


def _matching(host: HostFacts) -> list[SaveRecord]:
    return [r for r in host.records
            if (r.parallel_save, r.pause_before_save, r.bypass_cache)
            == (host.parallel_save, host.pause_before_save, host.bypass_cache)
            and r.bytes_saved > 0 and r.save_seconds > 0][-RATE_RECORDS:]


def fit_line(records: Sequence[SaveRecord]) -> tuple[float, float] | None:
    """Least squares of save_seconds = window + bytes / rate over the
    records: (rate, window), or None when their sizes are too alike
    (max < LINE_MIN_SPREAD x min) or the line is not physical (a rate or a
    window below zero)."""
    xs = [float(r.bytes_saved) for r in records]
    ys = [r.save_seconds for r in records]
    if len(records) < 2 or max(xs) < LINE_MIN_SPREAD * min(xs):
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    window = my - slope * mx
    if slope <= 0 or window < 0:
        return None
    return 1 / slope, window


def save_model(host: HostFacts) -> tuple[float, float, str]:
    """The aggregate save rate (bytes/s) of this URI, a group's fixed window
    cost (s), and where they come from. From the last RATE_RECORDS stops with
    the same PARALLEL_SAVE, PAUSE_BEFORE_SAVE and BYPASS_CACHE: a fitted line
    when their sizes differ enough (fit_line), else the median of their rates
    (a cold first stop after boot does not drag the others down once there are
    three) with no window cost. No stop with these settings: the slowest rate
    of the other records, never above DEFAULT_SAVE_RATE."""
    same = _matching(host)
    if same:
        plural = f"{len(same)} earlier stop{'s' if len(same) > 1 else ''} with these settings"
        line = fit_line(same)
        if line is not None:
            return line[0], line[1], f"{plural}, fitted line"
        return statistics.median(r.bytes_saved / r.save_seconds for r in same), 0.0, plural
    others = [r.bytes_saved / r.save_seconds for r in host.records if r.bytes_saved > 0 and r.save_seconds > 0]
    if others and min(others) < DEFAULT_SAVE_RATE:
        return min(others), 0.0, "the slowest earlier stop (none with these settings)"
    return float(DEFAULT_SAVE_RATE), 0.0, "no earlier stop: the conservative default"


def save_rate(host: HostFacts) -> tuple[float, str]:
    """The rate and its source of save_model (without the window cost)."""
    rate, _window, source = save_model(host)
    return rate, source


def shutdown_seconds(guest: GuestFacts, host: HostFacts) -> float:
    """Its shutdown: the median of its earlier shutdowns, else a default, within SHUTDOWN_TIMEOUT."""
    seconds = statistics.median(guest.shutdown_seconds) if guest.shutdown_seconds else DEFAULT_SHUTDOWN_SECONDS
    return min(seconds, host.shutdown_timeout) if host.shutdown_timeout else seconds


def makespan(durations: Sequence[float], slots: int) -> float:
    """How long durations take on `slots` workers served in list order, as
    the chains' queues serve them (0 or 1: one after another)."""
    if slots <= 1:
        return float(sum(durations))
    ends = [0.0] * slots
    for seconds in durations:
        ends[ends.index(min(ends))] += seconds
    return max(ends)


def without_save(chain: tuple[str, ...], deadline: bool) -> tuple[tuple[str, ...], bool]:
    """The chain without suspend; a chain that ended at the save ends with a
    shutdown instead (and a power-off at the deadline, if there is one)."""
    if "suspend" not in chain:
        return chain, False
    rest = tuple(a for a in chain if a != "suspend")
    if chain[-1] != "suspend":
        return rest, False
    extra = tuple(a for a in (("shutdown", "poweroff") if deadline else ("shutdown",)) if a not in rest)
    return rest + extra, True


@dataclass
class _Guest:
    facts: GuestFacts
    saves: bool
    reason: str = ""
    why: str = ""
    bound: int = 0
    predicted: int = 0
    pending: bool = False  # not yet walked by the time rule: left out of the timeline


def _rank_key(g: _Guest) -> tuple[int, int, int, str]:
    rank = g.facts.rank
    return (0 if rank is not None else 1, rank or 0, g.bound, g.facts.name)


def plan_budget(guests: Sequence[GuestFacts], host: HostFacts) -> Budget:
    """Decide every guest (rules in the module's docstring)."""
    budget = Budget(deadline=host.deadline)
    budget.save_rate, budget.window_seconds, budget.rate_source = save_model(host)
    state = [_Guest(g, "suspend" in g.chain) for g in guests]
    for g in state:
        if not g.saves:
            continue
        g.bound = save_bound(g.facts, host.image_format)
        g.predicted = predicted_image(g.facts, host.image_format)
        if g.facts.blockers:
            _drop(g, "blocker", "cannot be saved: " + "; ".join(g.facts.blockers))
        elif g.facts.refused:
            _drop(g, "refused", f"its last save was refused ({g.facts.refused}) and its devices have not changed")
    ranked = sorted((g for g in state if g.saves), key=_rank_key)
    _admit_room(ranked, host, budget)
    if host.deadline is not None:
        _fit_time(ranked, state, host, budget)
    budget.predicted_seconds = _timeline(state, host, budget)[-1][2]
    for g in state:
        budget.decisions.append(_decide(g, host, budget.save_rate))
    return budget


def _drop(g: _Guest, reason: str, why: str) -> None:
    g.saves, g.reason, g.why = False, reason, why


def _admit_room(ranked: list[_Guest], host: HostFacts, budget: Budget) -> None:
    if host.free_bytes is None:
        budget.notes.append("the free space of the save directory is not checked: "
                            + (host.room_unknown_why or "it cannot be seen from here"))
        budget.bound_bytes = sum(g.bound for g in ranked)
        return
    room = max(0, host.free_bytes - host.reserve_bytes)
    budget.room_bytes = room
    used = 0
    for g in ranked:
        if used + g.bound <= room:
            used += g.bound
            continue
        _drop(g, "room", f"its save needs up to {_mib(g.bound)}; {_mib(room - used)} of the save directory's "
                         f"{_mib(room)} (free less SAVE_RESERVE) are left for it")
    budget.bound_bytes = used


def _timeline(state: list[_Guest], host: HostFacts, budget: Budget) -> list[tuple[int, float, float]]:
    """Per order group, in order: (group, when it starts, when its saves
    end), predicted in seconds from the stop's start (STOP_OVERHEAD_SECONDS
    first); each group starts when the previous one's saves and shutdowns
    are over."""
    spans = []
    start = STOP_OVERHEAD_SECONDS
    for index in sorted({g.facts.group for g in state}):
        members = [g for g in state if g.facts.group == index and not g.pending]
        saved = sum(g.predicted for g in members if g.saves)
        saves = saved / budget.save_rate + (budget.window_seconds if saved else 0.0)
        downs = [shutdown_seconds(g.facts, host) for g in members if not g.saves and _shuts_down(g)]
        spans.append((index, start, start + saves))
        start += max(saves, makespan(downs, host.parallel_shutdown))
    spans.append((-1, start, start))  # the end of the stop
    return spans


def _shuts_down(g: _Guest) -> bool:
    chain = without_save(g.facts.chain, False)[0] if not g.saves else g.facts.chain
    return bool(chain) and chain[0] == "shutdown"


def _fit_time(ranked: list[_Guest], state: list[_Guest], host: HostFacts, budget: Budget) -> None:
    """Walking the ranking, admit each saver whose admission keeps every
    group's saves ending before the deadline less the margin (the guests not
    walked yet left out, those not admitted counted as shut down); the
    others are shut down instead. Admitting a guest of an earlier group may
    push a later group's saves past the limit: then the lowest-ranked saver
    of that later group goes too, until every group fits."""
    assert host.deadline is not None
    limit = host.deadline - DEADLINE_FIXED_MARGIN - host.deadline * DEADLINE_SHARE_MARGIN
    candidates = [g for g in ranked if g.saves]
    for g in candidates:
        g.pending = True
    for g in candidates:
        g.pending = False
        if _late_group(state, host, budget, limit) is not None:
            _too_late(g, host, budget, limit)
    while (late := _late_group(state, host, budget, limit)) is not None:
        _too_late([g for g in ranked if g.saves and g.facts.group == late][-1], host, budget, limit)


def _late_group(state: list[_Guest], host: HostFacts, budget: Budget, limit: float) -> int | None:
    """The first order group whose saves would end after limit."""
    for index, _start, saves_end in _timeline(state, host, budget)[:-1]:
        if saves_end > limit and any(g.saves and not g.pending and g.facts.group == index for g in state):
            return index
    return None


def _too_late(g: _Guest, host: HostFacts, budget: Budget, limit: float) -> None:
    took = g.predicted / budget.save_rate
    _drop(g, "time", f"its save ({_mib(g.predicted)}, about {took:.0f} s at {_mib(budget.save_rate)}/s) would not "
                     f"end before the deadline ({host.deadline:.0f} s, less a margin of "
                     f"{(host.deadline or 0) - limit:.0f} s)")
    budget.bound_bytes -= g.bound


def _decide(g: _Guest, host: HostFacts, rate: float) -> Decision:
    f = g.facts
    if g.saves or "suspend" not in f.chain:
        chain, fallback = f.chain, False
    else:
        chain, fallback = without_save(f.chain, host.deadline is not None)
    why = g.why
    if fallback:
        why += ("; its chain has nothing after the save: it is shut down instead"
                + (" and powered off at the deadline" if host.deadline is not None else ""))
    if g.saves:
        seconds = g.predicted / rate
    elif chain and chain[0] == "shutdown":
        seconds = shutdown_seconds(f, host)
    else:
        seconds = 0.0
    return Decision(f.uuid, f.name, f.chain, chain, g.reason, why, g.saves, g.bound if g.saves else 0,
                    g.predicted if g.saves else 0, seconds, fallback)


def _mib(value: float) -> str:
    return f"{value / MIB:.0f} MiB"
