"""Hybrid logical clock.

A stamp is one 64-bit integer: 48 bits of Unix milliseconds, then a 16-bit
counter, so stamps compare as integers. With the 64-bit actor id it is
unique and totally ordered: (hlc, actor).
"""
import time

from .errors import ClockSkewError

__all__ = ["HLC", "pack", "unpack", "DEFAULT_MAX_SKEW_MS"]

DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000
_MS_MAX = (1 << 48) - 1
_CTR_MAX = 0xFFFF


def pack(ms: int, counter: int) -> int:
    return (ms << 16) | counter


def unpack(stamp: int):
    return stamp >> 16, stamp & 0xFFFF


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HLC:
    """now() gives a fresh stamp; observe() folds in a remote one."""

    __slots__ = ("actor", "last", "max_skew_ms", "_wall", "floor_ms")

    def __init__(self, actor: int, last: int = 0,
                 max_skew_ms: int = DEFAULT_MAX_SKEW_MS, wall=_wall_ms):
        if not 0 < actor < (1 << 64):
            raise ValueError("actor id must be a non-zero 64-bit integer")
        self.actor = actor
        self.last = last
        self.max_skew_ms = max_skew_ms
        self._wall = wall
        # "now" for the skew check is at least the last persisted stamp: a Pi
        # without a real-time clock that boots in 1970 still takes changes.
        # It is fixed at open, so accepted stamps cannot ratchet it forward.
        self.floor_ms = last >> 16

    def now(self) -> int:
        wall = pack(min(self._wall(), _MS_MAX), 0)
        last = self.last
        if wall > last:
            self.last = wall
        else:
            ms, ctr = unpack(last)
            self.last = pack(ms + 1, 0) if ctr == _CTR_MAX else last + 1
        return self.last

    def check(self, stamp: int) -> None:
        """Raise ClockSkewError if stamp is further ahead than the bound."""
        ms = stamp >> 16
        wall = self._wall()
        if wall < self.floor_ms:
            wall = self.floor_ms
        if ms - wall > self.max_skew_ms:
            raise ClockSkewError(
                "its stamp is %.1f s ahead of this device's clock (bound %.0f s); "
                "check the clock of the device that wrote it, or raise --max-skew"
                % ((ms - wall) / 1000, self.max_skew_ms / 1000))

    def observe(self, stamp: int) -> None:
        """Adopt a remote stamp so later local stamps sort after it."""
        self.check(stamp)
        if stamp > self.last:
            self.last = stamp
