"""Pooled waiting (Erlang C), prompt-length spread and the HFX goals built on them (core/scaling/queueing.py).

Regression cases from the Mooncake benchmark: long, heavy-tailed prompts must neither drive the HFX
autoscaler to its maximum fleet nor keep it there (an unattainable scale-in goal pinned it at max).
"""

from __future__ import annotations

import math

import pytest

from hyperflexis_sglang.core.perf_model import preset
from hyperflexis_sglang.core.scaling import ClassLoad, FleetSnapshot, InstanceState, achievable, make_scaler, \
    predict_collocated
from hyperflexis_sglang.core.scaling.queueing import SPREAD_POINTS, erlang_c, length_points, lognormal_sigma, \
    wait_within

PERF = preset()


@pytest.mark.parametrize("rho", [0.1, 0.5, 0.9])
def test_erlang_c_one_server_is_rho_and_falls_with_servers(rho):
    assert erlang_c(1, rho) == pytest.approx(rho)
    values = [erlang_c(n, rho) for n in (1, 2, 4, 8, 16)]
    assert all(b < a for a, b in zip(values, values[1:])), values


def test_erlang_c_known_value_and_bounds():
    assert erlang_c(2, 0.5) == pytest.approx(2 * 0.25 / 1.5)  # M/M/2: C = 2 rho^2 / (1 + rho)
    assert erlang_c(5, 0.0) == 0.0 and erlang_c(5, 1.0) == 1.0 and erlang_c(3, 1.7) == 1.0
    assert 0.0 <= erlang_c(10**6, 0.999) <= 1.0  # capped server count: finite time, still a probability


def test_wait_within_reduces_to_mm1_and_guards_edges():
    rho, s, w = 0.6, 0.2, 0.5
    assert wait_within(w, 1, rho, s) == pytest.approx(1 - rho * math.exp(-(1 - rho) * w / s))
    assert wait_within(-0.01, 4, 0.3, s) == 0.0  # the own prefill alone misses the TTFT
    assert wait_within(1.0, 4, 1.0, s) == 0.0  # overloaded
    assert wait_within(w, 8, rho, s) > wait_within(w, 2, rho, s)  # pooling over more replicas waits less


@pytest.mark.parametrize("mean, p90", [(12_700, 28_400), (1_150, 2_700), (500, 900)])
def test_lognormal_fit_keeps_mean_and_p90(mean, p90):
    pts = length_points(mean, p90)
    assert len(pts) == SPREAD_POINTS and list(pts) == sorted(pts)
    # quantile midpoints under-sample the far tail: their mean is up to ~10% low at Mooncake-like spread
    assert 0.88 * mean <= sum(pts) / len(pts) <= mean
    assert sum(1 for p in pts if p <= p90) == pytest.approx(0.9 * SPREAD_POINTS, abs=1)


@pytest.mark.parametrize("p90", [float("nan"), 1000.0, 800.0, math.inf])
def test_no_usable_spread_means_every_prompt_has_the_mean_length(p90):
    assert length_points(1000.0, p90) == (1000.0,) and lognormal_sigma(1000.0, p90) == 0.0


def test_widest_fit_is_capped():
    assert lognormal_sigma(100.0, 1e9) == pytest.approx(1.2815515, rel=1e-6)


def mooncake(rate: float, p90: bool = True) -> tuple[ClassLoad, ...]:
    """Mooncake-conversation-like classes: mean prompt 12.7k tokens, p90 28.4k."""
    q = 28_400.0 if p90 else float("nan")
    return (ClassLoad("interactive", 0.2 * rate, 12_700, 330, 0.45, 0.04, p90_input=q),
            ClassLoad("standard", 0.5 * rate, 12_700, 350, 2.0, 0.2, p90_input=q),
            ClassLoad("batch", 0.3 * rate, 12_700, 350, 15.0, 0.2, p90_input=q))


def test_spread_gives_a_partial_ceiling_instead_of_the_means_verdict():
    without, spread = achievable(PERF, mooncake(1.0, p90=False)), achievable(PERF, mooncake(1.0))
    assert without["interactive"] == 0.0 and without["standard"] == 1.0  # all-or-nothing by the mean prompt
    assert 0.3 < spread["interactive"] < 0.8  # the short prompts can make 450 ms
    assert 0.8 < spread["standard"] < 1.0  # the longest prompts cannot make 2 s on any fleet
    assert spread["batch"] == 1.0


def test_pooling_beats_split_queues_at_equal_per_replica_load():
    one = predict_collocated(PERF, mooncake(0.8), 1)
    eight = predict_collocated(PERF, mooncake(8 * 0.8), 8)
    assert eight.rho == pytest.approx(one.rho)
    assert eight.attainment["standard"] > one.attainment["standard"]


def inst(iid, since=0.0):
    return InstanceState(iid, "collocated", "ready", since, 1, 0, 0, 0, 0, PERF.kv_capacity_tokens)


def test_long_prompts_do_not_drive_hfx_to_its_maximum():
    d = make_scaler("hfx", perf=PERF, max_replicas=12).tick(FleetSnapshot((inst(0),), mooncake(1.53)), 0.0)
    assert 1 <= len(d.actions) <= 5, d  # 2-6 replicas for the base load, not 12


def test_long_prompts_do_not_pin_the_fleet_at_its_maximum():
    """Scale-in goals are held to the class's reach too: from 12 replicas at Mooncake's base load the
    fleet gives capacity back (one at a time) instead of keeping an unattainable goal."""
    policy = make_scaler("hfx", perf=PERF, max_replicas=12)
    fleet = [inst(i) for i in range(12)]
    removed = []
    for k in range(200):
        now = 5.0 * k
        d = policy.tick(FleetSnapshot(tuple(fleet), mooncake(1.53)), now)
        assert {a.kind for a in d.actions} <= {"remove"}, d  # never adds on a steady load
        gone = {a.iid for a in d.actions}
        removed += [(now, i) for i in gone]
        fleet = [i for i in fleet if i.iid not in gone]
    assert 2 <= len(fleet) <= 6, (len(fleet), removed)
    times = [t for t, _ in removed]
    assert all(b - a >= 15.0 for a, b in zip(times, times[1:])), times  # one at a time, spaced


def test_no_flapping_on_noisy_long_prompt_load():
    policy = make_scaler("hfx", perf=PERF, max_replicas=12)
    fleet, nxt, log = [inst(i) for i in range(4)], 4, []
    for k in range(360):
        now = 5.0 * k
        rate = 1.53 * (1 + 0.3 * (((k * 7919) % 13) / 6.0 - 1.0))  # +-30% deterministic noise
        d = policy.tick(FleetSnapshot(tuple(fleet), mooncake(rate)), now)
        for a in d.actions:
            log.append(a.kind)
            if a.kind == "add":
                fleet.append(inst(nxt, now))
                nxt += 1
            else:
                fleet = [i for i in fleet if i.iid != a.iid]
    changes = sum(1 for a, b in zip(log, log[1:]) if a != b)
    assert changes <= 1, log
