"""The stop's budget (stop/budget.py): room, time, blockers, refusals, ranking, fallbacks."""

from __future__ import annotations

from libvirt_guests.stop.budget import (
    DEADLINE_FIXED_MARGIN,
    DEADLINE_SHARE_MARGIN,
    DEFAULT_SAVE_RATE,
    DEFAULT_SHUTDOWN_SECONDS,
    DEVICE_STATE_BYTES,
    MIB,
    STOP_OVERHEAD_SECONDS,
    GuestFacts,
    HostFacts,
    SaveRecord,
    fit_line,
    makespan,
    plan_budget,
    save_bound,
    save_model,
    save_rate,
    without_save,
)

SUSPEND = ("suspend",)


def guest(name: str, mib: int, chain: tuple[str, ...] = SUSPEND, **kw: object) -> GuestFacts:
    return GuestFacts(uuid=f"uuid-{name}", name=name, chain=chain, group=kw.pop("group", 0),  # type: ignore[arg-type]
                      max_memory_bytes=mib * MIB, **kw)  # type: ignore[arg-type]


def host(**kw: object) -> HostFacts:
    values: dict[str, object] = {"free_bytes": 100 * 1024 * MIB, "save_dir": "/save"}
    values.update(kw)
    return HostFacts(**values)  # type: ignore[arg-type]


def by_name(budget):  # type: ignore[no-untyped-def]
    return {d.name: d for d in budget.decisions}


def test_everyone_fits_everyone_is_saved_as_configured() -> None:
    budget = plan_budget([guest("a", 128), guest("b", 512)], host())
    assert budget.all_as_configured
    assert [d.chain for d in budget.decisions] == [SUSPEND, SUSPEND]
    assert budget.bound_bytes == (128 + 512) * MIB + 2 * DEVICE_STATE_BYTES


def test_room_smaller_first_and_the_rest_falls_back() -> None:
    # room for 128+256 (+state) but not the 1024
    free = (128 + 256) * MIB + 2 * DEVICE_STATE_BYTES + 10 * MIB
    budget = plan_budget([guest("big", 1024, ("suspend", "shutdown")), guest("a", 256), guest("b", 128)],
                         host(free_bytes=free + 64 * MIB, reserve_bytes=64 * MIB))
    d = by_name(budget)
    assert d["a"].saves and d["b"].saves
    assert not d["big"].saves and d["big"].reason == "room" and d["big"].chain == ("shutdown",)
    assert not d["big"].fallback  # its own chain had a next action
    assert "1040 MiB" in d["big"].why
    assert budget.bound_bytes <= budget.room_bytes  # type: ignore[operator]
    assert not budget.all_as_configured


def test_room_skips_a_big_one_but_admits_smaller_ranked_after_it() -> None:
    free = 300 * MIB
    budget = plan_budget([guest("big", 1024, rank=0), guest("small", 128)], host(free_bytes=free))
    d = by_name(budget)
    assert d["big"].reason == "room" and d["small"].saves


def test_reserve_is_taken_off_and_never_negative() -> None:
    budget = plan_budget([guest("a", 128)], host(free_bytes=100 * MIB, reserve_bytes=1024 * MIB))
    assert budget.room_bytes == 0
    assert by_name(budget)["a"].reason == "room"


def test_chain_ending_at_the_save_falls_back_to_shutdown_then_poweroff_only_with_a_deadline() -> None:
    tight = host(free_bytes=0)
    d = by_name(plan_budget([guest("a", 128)], tight))["a"]
    assert d.chain == ("shutdown",) and d.fallback and "shut down instead" in d.why
    d = by_name(plan_budget([guest("a", 128)], host(free_bytes=0, deadline=600)))["a"]
    assert d.chain == ("shutdown", "poweroff") and d.fallback and "powered off at the deadline" in d.why


def test_without_save_keeps_the_rest_of_the_chain_and_never_skips_shutdown() -> None:
    assert without_save(("migrate", "suspend"), False) == (("migrate", "shutdown"), True)
    assert without_save(("suspend", "poweroff"), True) == (("poweroff",), False)
    assert without_save(("suspend", "shutdown", "poweroff"), True) == (("shutdown", "poweroff"), False)
    assert without_save(("shutdown",), True) == (("shutdown",), False)


def test_blocker_and_refusal_go_straight_to_the_next_action() -> None:
    budget = plan_budget([guest("pci", 128, ("suspend", "shutdown"), blockers=("PCI host device 0000:01:00.0",)),
                          guest("ninep", 128, refused="migration blocked by 9p")], host())
    d = by_name(budget)
    assert d["pci"].reason == "blocker" and d["pci"].chain == ("shutdown",) and "0000:01:00.0" in d["pci"].why
    assert d["ninep"].reason == "refused" and d["ninep"].chain == ("shutdown",) and "9p" in d["ninep"].why
    assert budget.bound_bytes == 0  # they take no room


def test_a_refused_guest_takes_no_room_from_the_others() -> None:
    free = 128 * MIB + DEVICE_STATE_BYTES
    d = by_name(plan_budget([guest("refused", 64, refused="x"), guest("ok", 128)], host(free_bytes=free)))
    assert d["ok"].saves


def test_guests_without_suspend_are_untouched() -> None:
    d = by_name(plan_budget([guest("a", 128, ("shutdown", "poweroff"), blockers=("x",))], host(free_bytes=0)))
    assert d["a"].as_configured and d["a"].chain == ("shutdown", "poweroff") and not d["a"].saves
    assert d["a"].predicted_seconds == DEFAULT_SHUTDOWN_SECONDS


def test_host_rank_beats_size_and_metadata_has_no_say() -> None:
    free = 1100 * MIB + DEVICE_STATE_BYTES
    d = by_name(plan_budget([guest("small", 128), guest("ranked", 1024, rank=0)], host(free_bytes=free)))
    assert d["ranked"].saves and d["small"].reason == "room"


def test_unknown_room_saves_everyone_and_says_so() -> None:
    budget = plan_budget([guest("a", 128)], host(free_bytes=None, save_dir=None,
                                                  room_unknown_why="qemu+ssh://h/system is a remote daemon"))
    assert budget.all_as_configured and budget.room_bytes is None
    assert "remote daemon" in budget.notes[0]


def test_compressed_format_bound_is_a_little_above_raw() -> None:
    g = guest("a", 1024)
    assert save_bound(g, "xz") > save_bound(g, "raw") == 1024 * MIB + DEVICE_STATE_BYTES
    assert save_bound(g, "xz") <= save_bound(g, "raw") * 1.011
    assert save_bound(guest("v", 128, extra_ram_bytes=16 * MIB), "raw") == 144 * MIB + DEVICE_STATE_BYTES


def test_rate_from_matching_history_else_default_else_slowest_other() -> None:
    assert save_rate(host())[0] == DEFAULT_SAVE_RATE
    same = SaveRecord(1000 * MIB, 5.0, 8, True, False)
    other = SaveRecord(100 * MIB, 10.0, 1, True, False)
    rate, source = save_rate(host(records=(other, same)))
    assert rate == 200 * MIB and "1 earlier stop" in source
    rate, source = save_rate(host(records=(other,)))
    assert rate == 10 * MIB and "slowest" in source
    fast_other = SaveRecord(10000 * MIB, 1.0, 1, True, False)
    assert save_rate(host(records=(fast_other,)))[0] == DEFAULT_SAVE_RATE
    # the last few only, weighted by their seconds
    old = [SaveRecord(1 * MIB, 10.0, 8, True, False)] * 3
    new = [SaveRecord(100 * MIB, 1.0, 8, True, False)] * 5
    assert save_rate(host(records=(*old, *new)))[0] == 100 * MIB


def test_deadline_saves_as_many_as_fit_smaller_first() -> None:
    rate = SaveRecord(100 * MIB, 1.0, 8, True, False)  # 100 MiB/s
    guests = [guest(f"g{i}", mib, last_image_bytes=mib * MIB) for i, mib in enumerate((800, 200, 400, 100))]
    deadline = 20.0
    limit = deadline - DEADLINE_FIXED_MARGIN - deadline * DEADLINE_SHARE_MARGIN  # 16 s: 1600 MiB
    budget = plan_budget(guests, host(deadline=deadline, records=(rate,)))
    d = by_name(budget)
    assert limit == 16.0  # 1600 MiB at 100 MiB/s: all 1500 MiB fit
    assert all(d[n].saves for n in d)
    budget = plan_budget(guests, host(deadline=12.0, records=(rate,)))  # limit 8.8 s: 880 MiB
    d = by_name(budget)
    assert sorted(d[n].predicted_bytes // MIB for n in d if d[n].saves) == [100, 200, 400]
    assert d["g0"].reason == "time" and d["g0"].chain == ("shutdown", "poweroff") and "deadline" in d["g0"].why
    assert budget.predicted_seconds >= 7.0


def test_deadline_prediction_before_history_uses_the_bound() -> None:
    # no history: 40 MiB/s and the bound (memory + device state)
    budget = plan_budget([guest("a", 512)], host(deadline=10.0))
    assert by_name(budget)["a"].reason == "time"
    budget = plan_budget([guest("a", 128)], host(deadline=10.0))
    assert by_name(budget)["a"].saves
    assert abs(budget.predicted_seconds - (128 * MIB + DEVICE_STATE_BYTES) / DEFAULT_SAVE_RATE
               - STOP_OVERHEAD_SECONDS) < 0.01


def test_groups_run_one_after_another_and_later_groups_lose_first() -> None:
    rate = SaveRecord(100 * MIB, 1.0, 8, True, False)
    first = guest("first", 500, group=0, last_image_bytes=500 * MIB)
    down = guest("down", 128, ("shutdown",), group=0, shutdown_seconds=(9.0, 11.0))  # 10 s
    later = guest("later", 300, group=1, last_image_bytes=300 * MIB)
    budget = plan_budget([first, down, later], host(deadline=15.0, records=(rate,)))  # limit 11.5 s
    d = by_name(budget)
    assert d["first"].saves  # 5 s
    assert d["later"].reason == "time"  # would start at 10 s and end at 13 s
    assert d["down"].predicted_seconds == 10.0
    budget = plan_budget([first, down, later], host(deadline=20.0, records=(rate,)))  # limit 16 s
    assert by_name(budget)["later"].saves and abs(budget.predicted_seconds - 13.0 - STOP_OVERHEAD_SECONDS) < 0.01


def test_shutdown_prediction_uses_its_history_within_the_timeout_and_the_parallel_cap() -> None:
    a = guest("a", 128, ("shutdown",), shutdown_seconds=(2.0, 4.0, 30.0))
    b = guest("b", 128, ("shutdown",))
    d = by_name(plan_budget([a, b], host(shutdown_timeout=8)))
    assert d["a"].predicted_seconds == 4.0 and d["b"].predicted_seconds == 8.0
    assert plan_budget([a, b], host(shutdown_timeout=0, parallel_shutdown=0)).predicted_seconds \
        == 14.0 + STOP_OVERHEAD_SECONDS
    assert plan_budget([a, b], host(shutdown_timeout=0, parallel_shutdown=4)).predicted_seconds \
        == 10.0 + STOP_OVERHEAD_SECONDS


def test_makespan() -> None:
    assert makespan([3, 3, 2, 2, 2], 2) == 7  # list order, as the queues serve them
    assert makespan([5, 1], 0) == 6
    assert makespan([], 3) == 0


def test_no_guest_no_problem() -> None:
    budget = plan_budget([], host(deadline=5))
    assert budget.decisions == [] and budget.predicted_seconds == STOP_OVERHEAD_SECONDS and budget.all_as_configured


def test_nothing_fits_the_time_every_saver_is_shut_down_but_none_powered_off_without_shutdown() -> None:
    guests = [guest(f"g{i}", 1024) for i in range(3)] + [guest("p", 128, ("suspend", "poweroff"))]
    budget = plan_budget(guests, host(deadline=1.0))
    for d in budget.decisions:
        assert not d.saves and d.reason == "time"
        assert d.chain in (("shutdown", "poweroff"), ("poweroff",))
    assert by_name(budget)["p"].chain == ("poweroff",)  # its own chain: suspend then poweroff


def test_time_a_ranked_guest_too_big_for_the_deadline_does_not_cost_the_smaller_ones() -> None:
    # the README's worked example, with STOP_DEADLINE=50: db (ranked, 60 s) cannot end in time, the others can
    gib = 1024 * MIB
    rate = SaveRecord(30 * gib, 150.0, 8, True, False)  # 204.8 MiB/s
    guests = [guest("db", 16 * 1024, rank=0, last_image_bytes=12 * gib),
              guest("web1", 4096, last_image_bytes=2 * gib), guest("web2", 4096, last_image_bytes=2 * gib),
              guest("ci", 8192, last_image_bytes=6 * gib)]
    d = by_name(plan_budget(guests, host(free_bytes=40 * gib, deadline=50, records=(rate,))))
    assert d["db"].reason == "time"
    assert d["web1"].saves and d["web2"].saves  # 4 GiB: 20 s of the 43 s
    assert d["ci"].reason == "time"  # with ci: 10 GiB, 50 s


def test_time_a_ranked_guest_that_fits_keeps_its_place() -> None:
    rate = SaveRecord(100 * MIB, 1.0, 8, True, False)
    guests = [guest("ranked", 800, rank=0, last_image_bytes=800 * MIB),
              guest("a", 300, last_image_bytes=300 * MIB), guest("b", 300, last_image_bytes=300 * MIB)]
    d = by_name(plan_budget(guests, host(deadline=12.0, records=(rate,))))  # 8.8 s: 880 MiB
    assert d["ranked"].saves and d["a"].reason == d["b"].reason == "time"


def record(mib: float, seconds: float, parallel: int = 8) -> SaveRecord:
    return SaveRecord(int(mib * MIB), seconds, parallel, True, False)


def test_model_fits_a_line_when_the_recent_sizes_differ() -> None:
    # 1 s of window cost and 200 MiB/s, exactly
    rate, window, source = save_model(host(records=(record(200, 2.0), record(600, 4.0), record(1000, 6.0))))
    assert abs(rate - 200 * MIB) < 1 and abs(window - 1.0) < 1e-9 and "fitted line" in source
    budget = plan_budget([guest("a", 384)], host(records=(record(200, 2.0), record(1000, 6.0))))
    # (384 MiB + 16 MiB) / 200 MiB/s + 1 s window + the stop's overhead
    assert abs(budget.predicted_seconds - (2.0 + 1.0 + STOP_OVERHEAD_SECONDS)) < 1e-6
    # only the settings of this stop count
    assert fit_line([record(200, 2.0, parallel=1), record(1000, 6.0, parallel=1)]) is not None
    assert save_model(host(records=(record(200, 2.0, parallel=1), record(1000, 6.0, parallel=1))))[1] == 0.0


def test_model_without_spread_or_physics_is_the_median_rate_and_no_window() -> None:
    assert fit_line([record(500, 2.0), record(600, 3.0)]) is None  # sizes too alike
    assert fit_line([record(200, 6.0), record(1000, 2.0)]) is None  # bigger was faster: no rate
    assert fit_line([record(200, 0.5), record(1000, 6.0)]) is None  # negative window
    # a cold first stop (half the rate) does not drag the median once there are three
    rate, window, source = save_model(host(records=(record(500, 5.0), record(500, 2.5), record(500, 2.5))))
    assert rate == 200 * MIB and window == 0.0 and "3 earlier stops" in source
