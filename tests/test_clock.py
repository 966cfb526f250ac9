import pytest

from agent.clock import HLC, pack, unpack
from agent.errors import ClockSkewError


def fixed(ms):
    return lambda: ms


def test_stamps_are_strictly_increasing_when_the_wall_clock_stalls():
    c = HLC(1, wall=fixed(1000))
    stamps = [c.now() for _ in range(5)]
    assert stamps == sorted(set(stamps))
    assert unpack(stamps[0]) == (1000, 0) and unpack(stamps[-1]) == (1000, 4)


def test_counter_overflow_carries_into_milliseconds():
    c = HLC(1, last=pack(1000, 0xFFFF), wall=fixed(5))
    assert unpack(c.now()) == (1001, 0)


def test_observed_remote_stamp_orders_later_local_stamps_after_it():
    c = HLC(1, wall=fixed(1000))
    c.observe(pack(1000 + 60_000, 3))
    assert c.now() > pack(1000 + 60_000, 3)


def test_stamp_beyond_skew_bound_is_refused_and_not_adopted():
    c = HLC(1, wall=fixed(1000), max_skew_ms=5 * 60 * 1000)
    before = c.last
    with pytest.raises(ClockSkewError):
        c.observe(pack(1000 + 5 * 60 * 1000 + 1, 0))
    assert c.last == before
    c.observe(pack(1000 + 5 * 60 * 1000, 0))  # exactly at the bound is fine


def test_skew_bound_is_configurable():
    c = HLC(1, wall=fixed(0), max_skew_ms=10)
    with pytest.raises(ClockSkewError):
        c.check(pack(11, 0))


def test_actor_id_must_be_nonzero_64_bit():
    with pytest.raises(ValueError):
        HLC(0)
    with pytest.raises(ValueError):
        HLC(1 << 64)


def test_skew_check_takes_now_as_at_least_the_last_persisted_stamp():
    """A Pi without a real-time clock boots in 1970: a fresh change from a
    peer whose clock is right is still within the bound."""
    from agent.clock import pack
    today = 1_796_000_000_000
    booted_in_1970 = HLC(1, last=pack(today, 0), wall=fixed(1000), max_skew_ms=300_000)
    booted_in_1970.check(pack(today + 200_000, 0))
    with pytest.raises(ClockSkewError):
        booted_in_1970.check(pack(today + 400_000, 0))
    with pytest.raises(ClockSkewError):        # without the floor it is refused
        HLC(1, wall=fixed(1000), max_skew_ms=300_000).check(pack(today + 200_000, 0))
