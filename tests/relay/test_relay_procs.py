"""Five real agents that sync only through a real nats-server (JetStream):
writes before and while they run, nats-server killed and restarted, then
wiped, an agent SIGKILLed and restarted, and messages on the stream that
are not runs. Afterwards every agent holds every acknowledged write (each
key and its value is checked, not a sample) and the stream holds each
change once."""
import json
import signal

from agent.client import connect
from agent.node import Node
from agent.relay.config import stream_name, subject
from agent.sync.batchwire import decode_changes
from agent.sync.frame import compress, decode_payload

from tests.sync.procs import Serve, cmd, init, state_vv, wait_for
from .stream import publish, read_stream

FLEET = "t"
N = 120          # records each agent writes before serve starts


def _records(d):
    with Node(d, readonly=True) as n:
        return dict(n.scan(""))


def _put(d, expect, key, v, by):
    with connect(d) as c:       # through the running serve's control socket
        c.put(key, {"v": v, "by": by})
    expect[key] = {"v": v, "by": by}


def _converged(dirs, total):
    """Every agent's version vector is the same and holds total changes'
    worth of writes (a SIGKILLed agent's seqs skip ahead, so the vector's
    sum can be more than the count: the records are checked at the end)."""
    def same():
        vvs = [state_vv(d) for d in dirs]
        return all(v == vvs[0] for v in vvs) and sum(vvs[0].values()) >= total
    return wait_for(same, timeout=60, step=0.2)


def _why(dirs, serves, total):
    return "expected %d changes; %s\n%s" % (
        total, [state_vv(d) for d in dirs], "\n".join(s.log()[-1500:] for s in serves))


def _runs_by_subject(url):
    """{subject: [(first, last, count)]} of the stream's good runs, in stream
    order, and the messages that are not runs."""
    runs, bad = {}, []
    for seq, subj, h, data in read_stream(url, stream_name(FLEET)):
        try:
            assert h["Myc-Enc"] == "zstd"
            parsed, odd, _, _ = decode_changes(decode_payload(data), 0, "test")
            first, last = int(h["Myc-First"]), int(h["Myc-Last"])
            if not parsed:
                raise ValueError("no changes")
        except Exception:  # noqa: BLE001 - the hostile messages this test wrote
            bad.append(seq)
            continue
        assert not odd and parsed[0].seq == first and parsed[-1].seq == last, (subj, seq)
        assert all(b.prev == a.seq for a, b in zip(parsed, parsed[1:])), (subj, seq)
        runs.setdefault(subj, []).append((first, last, len(parsed)))
    return runs, bad


def test_five_agents_converge_through_a_killed_and_wiped_relay(tmp_path, natsd):
    dirs = [str(tmp_path / ("d%d" % i)) for i in range(5)]
    for d in dirs:
        init(d)
    expect, actors = {}, []
    for i, d in enumerate(dirs):
        with Node(d) as n:
            actors.append(n.actor)
            for j in range(N):
                n.put("a%d:%04d" % (i, j), {"v": j, "by": i})
                expect["a%d:%04d" % (i, j)] = {"v": j, "by": i}
        out = cmd(d, "relay", "add", natsd.url, "--fleet", FLEET).stdout
        assert "fleet t" in out
    total = len(expect)
    serves = [Serve(d) for d in dirs]
    try:
        assert _converged(dirs, total), _why(dirs, serves, total)

        # writes while they run, one of them by the CLI
        for j in range(10):
            _put(dirs[j % 5], expect, "live:%02d" % j, j, j % 5)
        cmd(dirs[3], "put", "cli:1", "v:=1", "by:=3")
        expect["cli:1"] = {"v": 1, "by": 3}
        total += 11
        assert _converged(dirs, total), _why(dirs, serves, total)

        # nats-server killed; writes while it is down; restarted on its store
        natsd.kill()
        for j in range(10):
            _put(dirs[1], expect, "down:%02d" % j, j, 1)
        total += 10
        natsd.start()
        assert _converged(dirs, total), _why(dirs, serves, total)

        # an agent SIGKILLed; others write meanwhile; it comes back
        serves[2].stop(signal.SIGKILL)
        for j in range(10):
            _put(dirs[4], expect, "k2gone:%02d" % j, j, 4)
        serves[2] = Serve(dirs[2])
        _put(dirs[2], expect, "k2back", 1, 2)
        total += 11
        assert _converged(dirs, total), _why(dirs, serves, total)

        # messages that are not runs on agent 0's subject: damage, a zstd
        # frame that declares 1 GiB, an encoding nobody knows, and a
        # well-framed lie in the headers that would stall the subject
        subj0 = subject(FLEET, actors[0])
        publish(natsd.url, subj0, b"\x07not a batch")
        bomb = b"\x28\xb5\x2f\xfd\xa4" + (1 << 30).to_bytes(4, "little") + b"\x00" * 20
        publish(natsd.url, subj0, bomb, {"Myc-Enc": "zstd"})
        publish(natsd.url, subj0, b"\x00\x00", {"Myc-Enc": "lz4"})
        publish(natsd.url, subj0, compress(b"\x00\x00"),
                {"Myc-Enc": "zstd", "Myc-First": "1", "Myc-Last": "999999"})
        for j in range(5):
            _put(dirs[0], expect, "after-bad:%02d" % j, j, 0)
        total += 5
        assert _converged(dirs, total), _why(dirs, serves, total)
        def shown(d):
            return json.loads(cmd(d, "--json", "relay", "show").stdout)["state"]
        # every agent read all four; each counts them as messages that are not runs
        assert wait_for(lambda: all(shown(d)["bad_msgs"] >= 4 for d in dirs), timeout=10), \
            [shown(d) for d in dirs]
        runs, bad = _runs_by_subject(natsd.url)
        assert len(bad) == 4
        # each good run starts after the subject's last good run ended
        for subj, rs in runs.items():
            assert all(rs[k + 1][0] > rs[k][1] for k in range(len(rs) - 1)), (subj, rs)

        # nats-server loses its whole store: every agent publishes again,
        # five devices racing for each subject, and each change lands once
        natsd.kill(wipe=True)
        natsd.start()
        for j in range(5):
            _put(dirs[j], expect, "wiped:%d" % j, j, j)
        total += 5
        assert _converged(dirs, total), _why(dirs, serves, total)
        assert wait_for(lambda: sum(n for rs in _runs_by_subject(natsd.url)[0].values()
                                    for _, _, n in rs) == total, timeout=30)
        runs, bad = _runs_by_subject(natsd.url)
        assert bad == [] and len(runs) == 5
        for i, a in enumerate(actors):
            rs = runs[subject(FLEET, a)]
            assert rs[0][0] == 1 and all(rs[k + 1][0] > rs[k][1] for k in range(len(rs) - 1))
        # each agent finds the relay again (the retry waits up to 30 s)
        assert wait_for(lambda: all(shown(d)["connected"] for d in dirs), timeout=40)
        out = cmd(dirs[0], "relay", "show").stdout
        assert "connected since" in out and "fleet     t (stream MYC_t)" in out, out
    finally:
        for s in serves:
            s.stop()
    for d in dirs:
        got = _records(d)
        assert got == expect, (d, len(got), len(expect),
                               sorted(set(expect) ^ set(got))[:10])
    assert "not running (serve stopped)" in cmd(dirs[0], "relay", "show").stdout
