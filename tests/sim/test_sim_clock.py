"""The simulator's experiment clock: scenario steps in experiment seconds or days, fired when
experiment time ``(now - origin) * time_scale`` reaches them; steps already passed when the
clock is set fire at once, in order; ramps expand into interpolated steps; bad input gets
errors naming ``scenario[i]`` or the clock field."""

from __future__ import annotations

import re
import time

import pytest

from harness.sim.params import ParamError
from harness.sim.process import SimProcess, SimProcessError, set_clock
from harness.sim.settings import DAY_S, load_settings

FAST = {"ttft_ms": 1, "itl_ms": 1, "itl_jitter": 0}


def _settings(tmp_path, scenario: str, profile: str = "cloud"):
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(f"profile: {profile}\nscenario:\n{scenario}")
    return load_settings(config_file=cfg)


# -- the timeline as written ------------------------------------------------------------


def test_at_day_is_experiment_days_and_sorts_with_at_s(tmp_path):
    s = _settings(
        tmp_path,
        "  - {at_day: 1.5, params: {accuracy: 0.5}}\n"
        "  - {at_s: 3600, params: {accuracy: 0.7}, note: an hour in}\n"
        "  - {at_day: 0, params: {accuracy: 0.8}}\n",
    )
    assert [(st.at_s, st.params["accuracy"]) for st in s.scenario] == [
        (0.0, 0.8),
        (3600.0, 0.7),
        (1.5 * 86400, 0.5),
    ]
    assert s.scenario[1].note == "an hour in"


def test_a_ramp_expands_into_linearly_interpolated_steps(tmp_path):
    s = _settings(
        tmp_path,
        "  - from_day: 0\n    to_day: 30\n    every_day: 1\n    note: limits tighten\n"
        "    params: {rate_limited_rate: [0.0, 0.08], rtt_ms: [100, 160]}\n",
    )
    assert len(s.scenario) == 31
    assert [st.at_s for st in s.scenario] == [d * DAY_S for d in range(31)]
    for d, st in enumerate(s.scenario):
        assert st.params["rate_limited_rate"] == pytest.approx(0.08 * d / 30)
        assert st.params["rtt_ms"] == pytest.approx(100 + 2 * d)
    assert s.scenario[0].note == "limits tighten (ramp 1/31)"
    assert s.scenario[-1].params["rate_limited_rate"] == pytest.approx(0.08)


def test_a_ramp_ends_on_its_end_and_rounds_integers(tmp_path):
    s = _settings(
        tmp_path,
        "  - {from_s: 10, to_s: 20, every_s: 4, params: {max_num_seqs: [10, 20]}}\n",
        profile="vllm",
    )
    # 10, 14, 18 and the end, 20: 10 + 10 * (t - 10) / 10 rounded
    assert [(st.at_s, st.params["max_num_seqs"]) for st in s.scenario] == [
        (10.0, 10),
        (14.0, 14),
        (18.0, 18),
        (20.0, 20),
    ]
    assert all(type(st.params["max_num_seqs"]) is int for st in s.scenario)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ("{at_s: 1, at_day: 1, params: {accuracy: 0.5}}", r"scenario\[1\].*exactly one"),
        ("{params: {accuracy: 0.5}}", r"scenario\[1\].*exactly one"),
        ("{at_day: -1, params: {accuracy: 0.5}}", r"scenario\[1\]\.at_day.*>= 0"),
        ("{at_day: soon, params: {accuracy: 0.5}}", r"scenario\[1\]\.at_day must be days"),
        ("{at_day: 2, params: {accuracy: 0.5}, when: 3}", r"scenario\[1\].*unknown keys.*when"),
        ("{at_day: 2, params: {accuracy: 1.5}}", r"scenario\[1\].*accuracy"),
        (
            "{from_day: 0, to_day: 3, every_day: 1, params: {system_fingerprint: [a, b]}}",
            r"scenario\[1\]\.params\.system_fingerprint: a ramp interpolates numbers only",
        ),
        (
            "{from_day: 0, to_day: 3, every_day: 1, params: {error_statuses: [500, 503]}}",
            r"scenario\[1\]\.params\.error_statuses: a ramp interpolates numbers only",
        ),
        (
            "{from_day: 0, to_day: 3, every_day: 1, params: {rate_limited_rate: 0.1}}",
            r"scenario\[1\]\.params\.rate_limited_rate: a ramp takes \[start, end\]",
        ),
        (
            "{from_day: 0, to_day: 3, every_day: 1, params: {rate_limited_rate: [0, 2]}}",
            r"scenario\[1\].*rate_limited_rate.*\[0, 1\]",
        ),
        (
            "{from_day: 0, to_day: 3, every_day: 1, params: {no_such: [0, 1]}}",
            r"scenario\[1\].*unknown parameter 'no_such'",
        ),
        (
            "{from_day: 3, to_day: 3, every_day: 1, params: {accuracy: [0, 1]}}",
            r"scenario\[1\]\.to_day \(3\) must be after from_day",
        ),
        (
            "{from_day: 0, to_day: 3, every_day: 0, params: {accuracy: [0, 1]}}",
            r"scenario\[1\]\.every_day must be > 0",
        ),
        (
            "{from_day: 0, to_day: 30, params: {accuracy: [0, 1]}}",
            r"scenario\[1\] is a ramp.*missing \['every_day'\]",
        ),
        (
            "{from_day: 0, to_day: 30, every_s: 1, every_day: 1, params: {accuracy: [0, 1]}}",
            r"scenario\[1\] \(a ramp\) has unknown keys \['every_s'\]",
        ),
        (
            "{from_s: 0, to_s: 100000, every_s: 1, params: {accuracy: [0, 1]}}",
            r"scenario\[1\] expands to 100002 steps",
        ),
    ],
)
def test_bad_steps_and_ramps_name_their_entry(tmp_path, entry, needle):
    with pytest.raises(ParamError, match=needle):
        _settings(tmp_path, f"  - {{at_s: 0, params: {{accuracy: 0.9}}}}\n  - {entry}\n")


def test_the_month_scenarios_load():
    cloud = load_settings(config_file="configs/sim/month_cloud.yaml")
    steps = cloud.scenario
    update = [st for st in steps if "system_fingerprint" in st.params]
    assert [st.at_s / DAY_S for st in update] == [15.0]
    assert update[0].params["system_fingerprint"] != cloud.params.system_fingerprint
    assert set(update[0].params["category_accuracy"]) == {"fact_lookup"}
    assert update[0].params["category_accuracy"]["fact_lookup"] < cloud.params.accuracy - 0.2
    ramp = [st.params["rate_limited_rate"] for st in steps if "rate_limited_rate" in st.params]
    assert len(ramp) == 31 and ramp == sorted(ramp)
    assert ramp[0] == pytest.approx(0.01) and ramp[-1] == pytest.approx(0.08)
    assert cloud.params.retry_after_s <= 0.5
    vllm = load_settings(config_file="configs/sim/month_vllm.yaml")
    assert vllm.scenario == [] and vllm.params.system_fingerprint and vllm.params.response_model


# -- the clock on a running simulator ---------------------------------------------------


SCALE = 4 * DAY_S  # a day in 1/4 s


@pytest.fixture
def month(tmp_path):
    cfg = tmp_path / "month.yaml"
    cfg.write_text(
        "profile: cloud\nparams: {system_fingerprint: fp_0}\nscenario:\n"
        "  - {at_day: 1, params: {system_fingerprint: fp_1}}\n"
        "  - {at_day: 2, params: {system_fingerprint: fp_2}}\n"
        "  - {at_day: 3.5, params: {system_fingerprint: fp_3}}\n"
        "  - {at_s: 1, params: {accuracy: 0.5}, note: one experiment second in}\n"
    )
    with SimProcess("cloud", params=FAST, config_file=str(cfg)) as sim:
        yield sim


@pytest.fixture(scope="module")
def plain():
    """A simulator whose clock the tests only try (and fail) to set."""
    with SimProcess("cloud", params=FAST) as sim:
        yield sim


def _fp(state):
    return state["params"]["system_fingerprint"]


def test_without_a_clock_steps_are_seconds_since_start(month):
    state = month.get_config()
    assert state["clock"]["origin_ns"] is None and state["clock"]["time_scale"] == 1.0
    assert state["clock"]["experiment_s"] == pytest.approx(state["uptime_s"], abs=0.5)
    time.sleep(max(0.0, 1.1 - state["uptime_s"]))
    state = month.get_config()
    assert state["params"]["accuracy"] == 0.5  # the at_s: 1 step fired a second in
    assert [s["applied"] for s in state["scenario"]] == [True, False, False, False]
    assert _fp(state) == "fp_0"


def test_at_day_steps_fire_on_the_experiment_clock(month):
    origin = time.time_ns()
    state = set_clock(month.base_url, origin, SCALE)  # the /v1 URL works too
    assert state["clock"]["origin_ns"] == origin and state["clock"]["time_scale"] == SCALE
    assert _fp(state) == "fp_0"
    assert [s["applied"] for s in state["scenario"]] == [True, False, False, False]  # at_s 1
    deadline = time.monotonic() + 5
    while not all(s["applied"] for s in state["scenario"]) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = month.get_config()
    assert _fp(state) == "fp_3"
    for step in state["scenario"]:
        late_s = (step["fired_at_s"] - step["at_s"]) / SCALE  # wall seconds after its time
        assert 0.0 <= late_s < 0.25, step  # never early; on time up to timer jitter
    assert state["clock"]["experiment_day"] == pytest.approx(
        (time.time_ns() - origin) / 1e9 * SCALE / DAY_S, abs=0.5
    )


def test_steps_already_passed_fire_at_once_in_order_and_resetting_keeps_them(month):
    slow = 1.0
    origin = time.time_ns() - int(2.5 * DAY_S / slow * 1e9)  # the month is 2.5 days in
    state = month.set_clock(origin, slow)
    assert [s["applied"] for s in state["scenario"]] == [True, True, True, False]
    assert _fp(state) == "fp_2"  # day 1 then day 2: the later one wins
    fired = [s["fired_at_s"] for s in state["scenario"][1:3]]  # [0] (at_s 1) may be earlier
    assert all(f == pytest.approx(2.5 * DAY_S, abs=5) for f in fired)
    # back to day 0: what fired stays applied; the day-3.5 step waits
    state = month.set_clock(time.time_ns(), slow)
    assert _fp(state) == "fp_2" and state["scenario"][3]["applied"] is False
    assert state["clock"]["experiment_s"] == pytest.approx(0.0, abs=1.0)
    # a faster clock reschedules it: day 3.5 comes in 0.35 s
    state = month.set_clock(time.time_ns(), 10 * DAY_S)
    assert state["scenario"][3]["applied"] is False
    time.sleep(0.6)
    state = month.get_config()
    assert _fp(state) == "fp_3" and state["scenario"][3]["applied"] is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"origin_ns": "now", "time_scale": 1}, "origin_ns must be an integer"),
        ({"origin_ns": 1.5e18, "time_scale": 1}, "origin_ns must be an integer"),
        ({"origin_ns": 0, "time_scale": 0}, "time_scale must be a finite number > 0"),
        ({"origin_ns": 0, "time_scale": "fast"}, "time_scale must be a number"),
        ({"time_scale": 2}, "expected .*origin_ns.*time_scale"),
        ({"origin_ns": 0, "scale": 2}, "unknown keys \\['scale'\\]"),
    ],
)
def test_bad_clocks_are_refused(plain, body, needle):
    status, raw = plain.request("POST", "/admin/clock", body)
    assert status == 400
    assert re.search(needle, raw.decode()), raw
    assert plain.get_config()["clock"]["origin_ns"] is None  # nothing changed


def test_set_clock_errors_are_clear(plain):
    with pytest.raises(SimProcessError, match=r"refused the clock.*time_scale must be"):
        set_clock(plain.url, time.time_ns(), -1.0)
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(SimProcessError, match=r"cannot set the experiment clock at http"):
        set_clock(dead + "/v1", time.time_ns(), 1.0, timeout_s=0.5)


def test_the_clock_can_be_given_at_start(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("profile: cloud\nscenario:\n  - {at_day: 10, params: {accuracy: 0.3}}\n")
    origin = time.time_ns() - int(11 * DAY_S / 3600 * 1e9)  # 11 days in at 3600x
    with SimProcess(
        "cloud", params=FAST, config_file=str(cfg), clock_origin_ns=origin, time_scale=3600
    ) as sim:
        state = sim.get_config()
    assert state["clock"]["time_scale"] == 3600 and state["params"]["accuracy"] == 0.3
