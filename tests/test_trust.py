"""The trust verdict (pure): each rule on synthetic per-second tables, with the seconds it names."""

from __future__ import annotations

import pandas as pd

from loadtest.analysis.trust import Evidence, generator_peak, judge
from loadtest.results.summary import Summary, Trust, seconds_text


def timeline(seconds: int, late: dict | None = None, dropped: dict | None = None) -> pd.DataFrame:
    rows = []
    for s in range(seconds):
        rows.append(
            {
                "second": s,
                "target": 100,
                "sent": 100,
                "dropped": (dropped or {}).get(s, 0),
                "response_p99_ms": 20.0 + (late or {}).get(s, 0.0),
                "service_p99_ms": 18.0,
                "lateness_p99_ms": 0.3 + (late or {}).get(s, 0.0),
            }
        )
    return pd.DataFrame(rows)


def resources(seconds: int, generator_util: dict | None = None, **core_columns: dict) -> pd.DataFrame:
    rows = []
    for s in range(seconds):
        row = {"second": s, "server_cpu_util": 0.4, "generator_cpu_util": (generator_util or {}).get(s, 0.3)}
        row.update({"core0_busy_pct": 40.0, "core1_busy_pct": 50.0, "core0_steal_pct": 0.0, "core1_steal_pct": 0.0})
        for column, values in core_columns.items():
            if s in values:
                row[column] = values[s]
        rows.append(row)
    return pd.DataFrame(rows)


def test_a_sound_run_is_trustworthy_and_says_by_which_rules():
    trust = judge(timeline(10), resources(10), Evidence(lateness_p99_ms=0.4, response_p99_ms=20.0, generator_cores=[1]))
    assert trust.trustworthy and trust.reasons == () and trust.lines == []
    assert "lateness p99 over 2 ms (at least 5 sends that late) with response p99 over service p99" in trust.rules


def test_lateness_that_is_a_material_share_of_the_response_is_not_trusted_with_its_seconds():
    # The case: send lateness p99 609 ms, response p99 615 ms, service p99 16 ms.
    evidence = Evidence(lateness_p99_ms=609, response_p99_ms=615, service_p99_ms=16)
    trust = judge(timeline(10, late={6: 600.0, 7: 600.0}), resources(10), evidence)
    assert not trust.trustworthy and [r.rule for r in trust.reasons] == ["lateness"]
    assert trust.seconds("lateness") == [6.0, 7.0]
    assert trust.lines == [
        "RESULTS NOT TRUSTWORTHY: the load generator sent late: lateness p99 609.0 ms; response p99 615.0 ms "
        "is 599.0 ms (97%) above service p99 16.0 ms; its own delay is in the latencies (seconds 6-7)"
    ]


def test_lateness_that_does_not_move_the_tail_is_noise():
    small = Evidence(lateness_p99_ms=1.9, response_p99_ms=5.0, service_p99_ms=3.0)  # under 2 ms late
    assert judge(timeline(5), resources(5), small).trustworthy
    slow_server = Evidence(lateness_p99_ms=30.0, response_p99_ms=900.0, service_p99_ms=880.0)  # 2% of the tail
    assert judge(timeline(5), resources(5), slow_server).trustworthy
    # 2.5 ms late at p99, but those sends are not the slow ones: response p99 is service p99's, near enough.
    fast_endpoint = Evidence(lateness_p99_ms=2.5, response_p99_ms=7.0, service_p99_ms=6.6)
    assert judge(timeline(5), resources(5), fast_endpoint).trustworthy


def test_a_p99_that_rests_on_a_few_late_sends_is_one_hiccup_not_a_verdict():
    # CI's case: 100 requests, one scheduling hiccup is the p99 (4 ms late, response 7.9 vs service 5.0 ms).
    hiccup = {"lateness_p99_ms": 4.0, "response_p99_ms": 7.9, "service_p99_ms": 5.0}
    assert judge(timeline(2), resources(2), Evidence(**hiccup, late_sends=1)).trustworthy
    assert judge(timeline(2), resources(2), Evidence(**hiccup, late_sends=4)).trustworthy
    trust = judge(timeline(2), resources(2), Evidence(**hiccup, late_sends=5))
    assert [r.rule for r in trust.reasons] == ["lateness"] and "(5 sends over 2 ms late)" in trust.lines[0]


def test_a_busy_generator_and_each_starved_core_are_named_per_core_not_averaged():
    busy = judge(timeline(10), resources(10, generator_util={4: 0.95, 5: 0.97}), Evidence())
    assert [r.rule for r in busy.reasons] == ["generator_busy"] and busy.seconds() == [4.0, 5.0]
    # Pinned to core 1, hogged while core 0 idles: the average of the machine's cores (70%) would hide it.
    hogged = resources(10, core1_busy_pct={3: 100.0, 4: 100.0})
    trust = judge(timeline(10), hogged, Evidence(generator_cores=[1]))
    assert [r.rule for r in trust.reasons] == ["starved_core"] and trust.seconds() == [3.0, 4.0]
    assert "core 1 over 95% busy" in trust.lines[0] and trust.lines[0].endswith("(seconds 3-4)")
    # Free to run on cores 0 and 1, it moves to the idle one: starved only when both are, each on its own figures.
    assert judge(timeline(10), hogged, Evidence(generator_cores=[0, 1])).trustworthy
    both = resources(10, core0_busy_pct={4: 99.0, 5: 99.0}, core1_busy_pct={3: 100.0, 4: 100.0})
    assert judge(timeline(10), both, Evidence(generator_cores=[0, 1])).seconds() == [4.0]
    stolen = judge(timeline(10), resources(10, core1_steal_pct={8: 35.0}), Evidence(generator_cores=[1]))
    assert "core 1 over 20% stolen" in stolen.lines[0] and stolen.seconds("starved_core") == [8.0]


def test_the_generators_start_up_and_warm_up_are_not_held_against_it():
    r = resources(10, generator_util={0: 1.0, 1: 0.99}, core1_busy_pct={0: 100.0}).astype({"second": float})
    r.loc[-1] = {**r.loc[0].to_dict(), "second": -0.9, "generator_cpu_util": 1.0, "core1_busy_pct": 100.0}
    r = r.sort_index()
    assert judge(timeline(10), r, Evidence(warmup_s=2.0, generator_cores=[1])).trustworthy
    assert generator_peak(r, 2.0) == 0.3
    assert not judge(timeline(10), r, Evidence(warmup_s=0.0, generator_cores=[1])).trustworthy  # measured now


def test_processes_exiting_after_the_runs_end_are_not_held_against_it():
    # 5 measured seconds after a 1 s warm-up; seconds 7-9 are the drain and shutdown.
    exiting = resources(10, generator_util={8: 0.99}, core1_busy_pct={9: 100.0})
    assert judge(timeline(10), exiting, Evidence(warmup_s=1.0, duration_s=5.0, generator_cores=[1])).trustworthy
    assert not judge(timeline(10), exiting, Evidence(warmup_s=1.0, generator_cores=[1])).trustworthy


def test_client_drops_and_a_lost_worker_are_not_trusted():
    trust = judge(
        timeline(6, dropped={2: 5, 3: 1}),
        resources(6),
        Evidence(dropped=6, lost_workers=({"worker": "w2", "at_s": 3.0, "arrivals": 412},)),
    )
    assert [r.rule for r in trust.reasons] == ["lost_worker", "client_drops"]
    assert trust.seconds("client_drops") == [2.0, 3.0] and trust.seconds("lost_worker") == [3.0]
    assert "412 arrivals of their share not sent" in trust.lines[0]


def test_the_verdict_round_trips_through_the_summary():
    trust = judge(timeline(6, dropped={2: 5}), resources(6), Evidence(dropped=5))
    assert Trust.from_dict(trust.as_dict()) == trust
    summary = Summary.from_dict({"schema": "loadtest.summary/1", "trust": trust.as_dict()})
    assert summary.trust == trust and summary.as_dict()["trust"]["reasons"][0]["seconds"] == [2.0]


def test_seconds_are_folded_into_spans():
    assert seconds_text([1.0, 2.0, 3.0, 7.0, 9.0, 10.0]) == " (seconds 1-3, 7, 9-10)"
    assert seconds_text([4.0]) == " (second 4)" and seconds_text([]) == ""
