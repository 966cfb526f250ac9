"""The orchestrator between two real serve processes over TLS: a device on
battery syncs now and then instead of staying connected, the device on
mains power does not redial it in a loop, and every write still arrives."""
import json
import os
import time

import pytest

from agent import events as E
from agent.client import connect

from .procs import Serve, cmd, init, wait_for

EVERY = 3       # battery_sync_s of the device on battery


def _has(d, key, fields):
    with connect(d, readonly=True) as n:
        return n.get(key) == fields


def _connected(d, peer):
    try:
        with open(os.path.join(d, "sync", "state.json")) as f:
            return json.load(f)["peers"][peer]["connected"]
    except (OSError, ValueError, KeyError):
        return False


@pytest.mark.parametrize("mode", ["battery", "metered"])
def test_a_device_on_battery_or_a_metered_link_syncs_now_and_then_and_loses_nothing(
        tmp_path, mode):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    with open(os.path.join(a, "mycelium.toml"), "w") as f:
        f.write('power = "battery"\nbattery_sync_s = %d\n' % EVERY if mode == "battery" else
                'power = "ac"\nmetered_sync_s = %d\n' % EVERY)
    sa, sb = Serve(a), Serve(b)
    try:
        cmd(a, "peer", "add", idb, sb.addr, *(["--metered"] if mode == "metered" else []))
        cmd(b, "peer", "add", ida, sa.addr)
        expect = {}
        for i in range(4):           # writes on both sides, each must cross
            for d, who in ((a, "a"), (b, "b")):
                key = "%s:%d" % (who, i)
                with connect(d) as c:
                    c.put(key, {"v": i})
                expect[key] = {"v": i}
            time.sleep(1.5)
        for d in (a, b):
            assert wait_for(lambda: all(_has(d, k, v) for k, v in expect.items()),
                            timeout=4 * EVERY), (d, sa.log()[-2000:], sb.log()[-2000:])

        # over a window: mostly not connected, a few sessions, no redial loop
        t0 = time.time()
        samples = []
        while time.time() - t0 < 3 * EVERY:
            samples.append(_connected(a, _stored(idb)))
            time.sleep(0.1)
        sa.stop()
        sb.stop()
        starts = [e for e in E.read(a, since=t0, kinds=("sync.connected",))]
        assert 1 <= len(starts) <= 6, (len(starts), sa.log()[-3000:])
        assert sum(samples) < 0.5 * len(samples), (sum(samples), len(samples))
        # the device on mains power was told the peer syncs now and then
        rows = [json.loads(line) for line in cmd(b, "--json", "peer", "list").stdout.splitlines()]
        assert rows[0]["sync"] == "the peer syncs now and then", rows
        rows = [json.loads(line) for line in cmd(a, "--json", "peer", "list").stdout.splitlines()]
        assert rows[0]["sync"] == "%s: every %d s" % (
            "on battery" if mode == "battery" else "metered link", EVERY), rows
    finally:
        sa.stop()
        sb.stop()


def _stored(shown):
    from agent.sync.devid import stored_id
    return stored_id(shown)
