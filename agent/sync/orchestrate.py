"""serve's orchestrator: for each peer, how to sync and when to dial again.

A peer is synced one of three ways:

- live: one session stays open and each change goes out as it is written
  (mains power, an unmetered link: the default);
- every N seconds: a session catches up both ways, closes, and the next
  one starts N seconds later (N jittered by +-20% so that a fleet does not
  dial in step). On battery N is `battery_sync_s` (300); with a peer marked
  `--metered` it is `metered_sync_s` (900); with both, the longer;
- through the relay: a peer whose address has failed RELAY_AFTER times in a
  row while the relay is connected is left to the relay, and its address
  is tried again only every RELAY_RETRY seconds.

A peer that said in its HELLO that it does not want a live session (it is
on battery, or on a metered link) is dialled again only after `quiet`
seconds: it dials itself when it wants to. Failed dials back off as
before: 0.5 s doubling to 30 s, jittered.

decide() is pure (its inputs are what serve knows, randomness is passed
in), so the rules are tested as a table; Power reads the battery at most
once a minute (psutil.sensors_battery, where the platform has one, as on
laptops and Termux), or takes MYCELIUM_POWER=battery|ac as given.
"""
import os
import random
import time
from typing import NamedTuple

__all__ = ["Plan", "decide", "Power", "BACKOFF_MIN", "BACKOFF_MAX", "RELAY_AFTER",
           "RELAY_RETRY", "BATTERY_EVERY", "METERED_EVERY"]

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
RELAY_AFTER = 3             # failed dials in a row before a peer is left to the relay
RELAY_RETRY = 300.0         # seconds between tries of such a peer's address
BATTERY_EVERY = 300.0       # defaults of battery_sync_s and metered_sync_s
METERED_EVERY = 900.0
POWER_EVERY = 60.0          # seconds between reads of the battery sensor
JITTER = 0.2


class Plan(NamedTuple):
    live: bool          # keep the next session open (else catch up and close)
    wait: float         # seconds before the next dial, jitter applied
    route: str          # "direct" or "relay"
    why: str            # for people: state.json, `peer list`, the log


def _jitter(t, rnd):
    return t * (1.0 - JITTER + 2 * JITTER * rnd())


def decide(*, on_battery=False, metered=False, failures=0, relay_up=False,
           peer_live=True, synced=True, battery_every=BATTERY_EVERY,
           metered_every=METERED_EVERY, rnd=random.random) -> Plan:
    """The plan for one peer after a dial or session: failures, the dials or
    sessions in a row that got nowhere; synced, the last session caught up
    (or moved changes); peer_live, what the peer asked for in its HELLO."""
    every, whys = 0.0, []
    if on_battery and battery_every > 0:
        every, whys = battery_every, ["on battery"]
    if metered and metered_every > 0:
        every = max(every, metered_every)
        whys.append("metered link")
    live = every == 0
    if failures >= RELAY_AFTER and relay_up:
        return Plan(live, _jitter(max(RELAY_RETRY, every), rnd), "relay",
                    "unreachable %d times: the relay carries its changes" % failures)
    if failures:
        back = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (failures - 1))
        return Plan(live, _jitter(back, rnd), "direct", "retrying")
    if not peer_live and synced:
        quiet = max(every, battery_every or BATTERY_EVERY)
        return Plan(live, _jitter(quiet, rnd), "direct", "the peer syncs now and then")
    if not live:
        why = " and ".join(whys)
        return Plan(False, _jitter(every, rnd), "direct", "%s: every %.0f s" % (why, every))
    return Plan(True, _jitter(BACKOFF_MIN, rnd), "direct", "live")


class Power:
    """Whether this device runs on battery, read at most once a minute."""

    def __init__(self, env=os.environ, clock=time.monotonic, sensor=None):
        self.forced = (env.get("MYCELIUM_POWER") or "auto").strip().lower()
        self.clock = clock
        self.sensor = sensor or _battery_sensor
        self.at = None
        self.value = False

    def on_battery(self) -> bool:
        if self.forced in ("battery", "ac"):
            return self.forced == "battery"
        now = self.clock()
        if self.at is None or now - self.at >= POWER_EVERY:
            self.at = now
            self.value = self.sensor()
        return self.value


def _battery_sensor() -> bool:
    """True if psutil sees a battery that is not plugged in."""
    try:
        import psutil
        b = psutil.sensors_battery()
    except (ImportError, AttributeError, OSError, RuntimeError):
        return False
    return b is not None and b.power_plugged is False
