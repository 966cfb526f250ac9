"""The orchestrator's rules as a table (agent/sync/orchestrate.py), and the
power reading it takes them from."""
import pytest

from agent.sync import orchestrate as O


def plan(**kw):
    kw.setdefault("rnd", lambda: 0.5)       # no jitter: the plain figure
    return O.decide(**kw)


@pytest.mark.parametrize("kw, live, wait, route", [
    ({}, True, O.BACKOFF_MIN, "direct"),
    ({"on_battery": True}, False, 300, "direct"),
    ({"metered": True}, False, 900, "direct"),
    ({"on_battery": True, "metered": True, "battery_every": 1200}, False, 1200, "direct"),
    ({"on_battery": True, "battery_every": 0}, True, O.BACKOFF_MIN, "direct"),
    ({"metered": True, "metered_every": 0}, True, O.BACKOFF_MIN, "direct"),
    # failed dials back off, doubling, to the cap
    ({"failures": 1}, True, 0.5, "direct"),
    ({"failures": 2}, True, 1.0, "direct"),
    ({"failures": 20}, True, O.BACKOFF_MAX, "direct"),
    # an unreachable peer is left to the relay, if the relay is up
    ({"failures": 2, "relay_up": True}, True, 1.0, "direct"),
    ({"failures": 3, "relay_up": True}, True, O.RELAY_RETRY, "relay"),
    ({"failures": 3, "relay_up": True, "metered": True, "metered_every": 3600}, False, 3600,
     "relay"),
    # a peer that syncs now and then is not dialled in a loop
    ({"peer_live": False}, True, 300, "direct"),
    ({"peer_live": False, "battery_every": 60}, True, 60, "direct"),
    ({"peer_live": False, "synced": False, "failures": 1}, True, 0.5, "direct"),
])
def test_the_plan_for_each_case(kw, live, wait, route):
    p = plan(**kw)
    assert (p.live, p.route) == (live, route), p
    assert p.wait == pytest.approx(wait), p
    assert p.why


def test_waits_are_jittered_within_a_fifth_either_way():
    lo = O.decide(on_battery=True, rnd=lambda: 0.0).wait
    hi = O.decide(on_battery=True, rnd=lambda: 0.999999).wait
    assert lo == pytest.approx(240) and hi == pytest.approx(360, rel=1e-4)
    import random
    rng = random.Random(7)
    waits = {round(O.decide(failures=4, rnd=rng.random).wait, 6) for _ in range(50)}
    assert len(waits) > 40 and all(3.2 <= w <= 4.8 for w in waits)


def test_power_forced_by_the_environment_never_reads_the_sensor():
    def sensor():
        raise AssertionError("read the sensor")
    assert O.Power({"MYCELIUM_POWER": "battery"}, sensor=sensor).on_battery() is True
    assert O.Power({"MYCELIUM_POWER": "AC"}, sensor=sensor).on_battery() is False


def test_power_reads_the_sensor_at_most_once_a_minute():
    now, reads, plugged = [0.0], [], [False]

    def sensor():
        reads.append(now[0])
        return not plugged[0]
    p = O.Power({}, clock=lambda: now[0], sensor=sensor)
    assert p.on_battery() is True
    plugged[0] = True
    now[0] = 59.0
    assert p.on_battery() is True and reads == [0.0]
    now[0] = 60.0
    assert p.on_battery() is False and reads == [0.0, 60.0]


def test_the_battery_sensor_of_this_machine_answers_a_bool():
    # a machine without a battery (psutil gives None) runs on mains
    assert O._battery_sensor() in (True, False)
