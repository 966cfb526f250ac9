"""The timeline (agent/events.py): bounded, durable, torn lines skipped,
several writers, and the events the agent writes to it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agent import events as E
from agent.node import Node
from agent.values import Inc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def _cli(d, *args, check=0):
    p = subprocess.run([sys.executable, "-m", "agent", "--data-dir", str(d), *args],
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == check, (args, p.stdout, p.stderr)
    return p


def test_emitted_events_are_read_back_in_order_after_flush(tmp_path):
    t = E.Timeline(str(tmp_path))
    for i in range(5):
        t.emit("sync.merged", "PEER", changes=i)
    assert E.read(str(tmp_path)) == []          # nothing is written before flush
    assert t.flush() == 5
    got = E.read(str(tmp_path))
    assert [e["changes"] for e in got] == [0, 1, 2, 3, 4]
    assert {e["kind"] for e in got} == {"sync.merged"} and got[0]["device"] == "PEER"


def test_ring_never_passes_its_cap_and_keeps_the_newest(tmp_path):
    cap = 64 << 10
    t = E.Timeline(str(tmp_path), cap=cap)
    for i in range(20_000):
        t.emit("notice", msg="event number %d with some words" % i)
        if i % 100 == 99:
            t.flush()
            size = sum(os.path.getsize(tmp_path / n) for n in (E.FILE, E.OLD)
                       if (tmp_path / n).exists())
            assert size <= cap, size
    got = E.read(str(tmp_path))
    nums = [int(e["msg"].split()[2]) for e in got]
    assert nums[-1] == 19_999 and nums == sorted(nums)
    assert nums == list(range(nums[0], 20_000))     # a contiguous tail: nothing in between lost
    assert len(nums) > 400


def test_a_torn_or_damaged_line_is_skipped_and_the_rest_read(tmp_path):
    t = E.Timeline(str(tmp_path))
    for i in range(3):
        t.emit("notice", msg="m%d" % i)
    t.flush()
    path = tmp_path / E.FILE
    data = bytearray(path.read_bytes())
    lines = data.split(b"\n")
    lines[1] = lines[1].replace(b"m1", b"mX")        # bit rot: the CRC no longer matches
    path.write_bytes(b"\n".join(lines) + b'0badc0de {"time":1,"kind":"torn')  # a torn tail
    assert [e["msg"] for e in E.read(str(tmp_path))] == ["m0", "m2"]
    t.emit("notice", msg="after")
    t.flush()      # appended after the torn tail: that line is lost with it, later ones are not
    t.emit("notice", msg="later")
    t.flush()
    assert [e["msg"] for e in E.read(str(tmp_path))][-1] == "later"


def test_flush_on_a_full_disk_drops_the_events_and_never_raises(tmp_path, monkeypatch):
    t = E.Timeline(str(tmp_path))
    t.emit("notice", msg="x")

    def full(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(E.os, "write", full)
    assert t.flush() == 0
    assert t.dropped == 1 and "No space left" in t.error
    monkeypatch.undo()
    t.emit("notice", msg="y")
    assert t.flush() == 1 and t.error is None


def test_the_buffer_is_bounded_when_nothing_flushes(tmp_path):
    t = E.Timeline(str(tmp_path))
    for _ in range(E.MAX_BUFFER + 50):
        t.emit("notice")
    assert len(t._buf) == E.MAX_BUFFER and t.dropped == 50


def test_tallies_sum_routine_traffic_into_one_event_per_window(tmp_path):
    now = [1000.0]
    t = E.Timeline(str(tmp_path), clock=lambda: now[0])
    for _ in range(30):
        t.tally("sync.sent", "P", changes=2, bytes=100)
    t.flush()
    assert E.read(str(tmp_path)) == []              # the window is still open
    now[0] += E.TALLY_SECONDS
    t.flush()
    (ev,) = E.read(str(tmp_path))
    assert ev["changes"] == 60 and ev["bytes"] == 3000 and ev["seconds"] == E.TALLY_SECONDS


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    code = ("import sys; from agent import events as E\n"
            "t = E.Timeline(sys.argv[1], cap=1 << 30)\n"
            "for i in range(2000):\n"
            "    t.emit('notice', msg=sys.argv[2] + str(i))\n"
            "    if i % 7 == 0: t.flush()\n"
            "t.flush()\n")
    ps = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), w], env=ENV)
          for w in "ab"]
    assert [p.wait(60) for p in ps] == [0, 0]
    msgs = [e["msg"] for e in E.read(str(tmp_path))]
    for w in "ab":
        assert [m for m in msgs if m[0] == w] == [w + str(i) for i in range(2000)]


def test_two_processes_rotating_at_once_keep_the_ring_whole(tmp_path):
    # Each writer checks, after each of its flushes, that the ring still holds
    # about half its cap: two writers rotating at once, without the lock and
    # the check that the file is still events.log, would throw a half away.
    code = ("import os, sys; from agent import events as E\n"
            "d, w = sys.argv[1], sys.argv[2]; least = None\n"
            "t = E.Timeline(d, cap=16 << 10)\n"
            "for i in range(1500):\n"
            "    t.emit('notice', msg=w + str(i))\n"
            "    t.flush()\n"
            "    try:\n"
            "        n = os.path.getsize(os.path.join(d, E.OLD))\n"
            "    except FileNotFoundError:\n"
            "        continue\n"
            "    least = n if least is None else min(least, n)\n"
            "print(least)\n")
    ps = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), w], env=ENV,
                           stdout=subprocess.PIPE, text=True) for w in "ab"]
    least = [int(p.communicate(timeout=120)[0]) for p in ps]
    assert [p.returncode for p in ps] == [0, 0]
    assert min(least) >= (8 << 10) - 200, least   # the older half is never short
    for name in (E.FILE, E.OLD):
        for line in (tmp_path / name).read_bytes().splitlines():
            assert E._parse(line) is not None, line       # no interleaved or torn line
    got = E.read(str(tmp_path))
    last = []
    for w in "ab":    # the writer that ran longer may have rotated the other's out
        nums = [int(e["msg"][1:]) for e in got if e["msg"][0] == w]
        assert nums == sorted(nums)
        last += nums[-1:]
    assert 1499 in last


def test_follow_sees_events_across_a_rotation(tmp_path):
    t = E.Timeline(str(tmp_path), cap=8 << 10)
    t.emit("notice", msg="first")
    t.flush()
    code = ("import sys, time; from agent import events as E\n"
            "for ev in E.follow(sys.argv[1], poll=0.05, deadline=time.monotonic() + 20):\n"
            "    print(ev['msg'], flush=True)\n"
            "    if ev['msg'] == 'last': break\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=ENV,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "first"
    for i in range(300):      # many rotations at this cap
        t.emit("notice", msg="n%03d %s" % (i, "x" * 60))
        t.flush()
        if i % 50 == 0:
            time.sleep(0.1)
    t.emit("notice", msg="last")
    t.flush()
    out, _ = p.communicate(timeout=30)
    seen = out.split()
    assert seen[-1] == "last"
    nums = [int(m[1:]) for m in seen if m.startswith("n")]
    assert nums == sorted(nums) and nums[-1] == 299


def test_parse_since_takes_spans_and_dates():
    assert E.parse_since("90s", now=1000.0) == 910.0
    assert E.parse_since("2h", now=10000.0) == 10000.0 - 7200
    assert E.parse_since("2026-12-03T12:00") == E.parse_since("2026-12-03T12:00:00Z")
    with pytest.raises(ValueError, match="30s, 15m"):
        E.parse_since("yesterday")


def test_root_does_not_write_into_another_users_directory(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        os.chown(tmp_path, 12345, -1)        # the service's directory, as root sees it
    else:
        monkeypatch.setattr(E.os, "geteuid", lambda: 0)
    t = E.Timeline(str(tmp_path))
    t.emit("notice")
    t.flush()
    assert not (tmp_path / E.FILE).exists()


# -- what the agent writes there


def test_a_node_records_compaction_and_flushes_on_close(tmp_path):
    d = str(tmp_path / "a")
    with Node.open(d) as n:
        n.put("k", {"c": Inc(1)})
        n.compact()
        assert E.read(d) == []                   # buffered until close
    (ev,) = [e for e in E.read(d) if e["kind"] == "compaction"]
    assert ev["records"] == 1 and ev["device"] is None


def test_cli_events_filters_by_kind_and_since_and_prints_json(tmp_path):
    d = tmp_path / "a"
    _cli(d, "init")
    _cli(d, "peer", "add", "K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H", "127.0.0.1:9", "--unchecked",
         "--name", "bob")
    _cli(d, "put", "k", "x=1")
    _cli(d, "compact")
    out = _cli(d, "--json", "events", "--kind", "config").stdout.splitlines()
    (ev,) = [json.loads(x) for x in out]
    assert ev["what"] == "peer added" and ev["name"] == "bob"
    kinds = [json.loads(x)["kind"] for x in _cli(d, "--json", "events").stdout.splitlines()]
    assert kinds == ["config", "compaction"]
    assert _cli(d, "--json", "events", "--since", "1h", "-n", "1").stdout.count("\n") == 1
    text = _cli(d, "events", "--kind", "compaction,config").stdout
    assert "bob" in text and "compaction" in text and "\x1b[" not in text  # not a tty
    assert _cli(d, "events", "--since", "soon", check=2).stderr.count("30s, 15m") == 1


def test_serve_records_its_start_sessions_and_stop(tmp_path):
    from tests.sync.procs import Serve, cmd, init, wait_for
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ia, ib = init(a), init(b)
    cmd(b, "put", "x", "v=1")
    sa = Serve(a)
    try:
        cmd(a, "peer", "add", ib, "127.0.0.1:9")
        cmd(b, "peer", "add", ia, sa.addr)
        cmd(b, "sync", ia)
        assert wait_for(lambda: any(e["kind"] == "sync.caught_up" for e in E.read(a)), 10)
    finally:
        assert sa.stop(signal.SIGTERM) == 0
    kinds = [e["kind"] for e in E.read(a)]
    assert kinds[0] == "serve.start" and "config" in kinds and kinds[-1] == "serve.stop"
    merged = [e for e in E.read(a) if e["kind"] == "sync.merged"]
    assert sum(e["changes"] for e in merged) == 1 and merged[0]["device"] == ib
    assert any(e["kind"] == "sync.caught_up" and e["device"] == ia for e in E.read(b))


def test_a_repeated_warning_is_rate_limited_on_the_timeline_as_in_the_log(tmp_path):
    from agent.sync.daemon import Daemon
    from agent.sync.identity import ensure_identity
    d = str(tmp_path / "a")
    with Node.open(d) as n:
        daemon = Daemon(n, d, ensure_identity(d), quiet=True)
        for _ in range(100):     # an offline peer, retried every few seconds
            daemon.log("cannot reach shed", "warning", ("unreachable", "shed"))
        daemon.log("cannot save the sync state", "error")
        n.timeline.flush()
        got = [(e["kind"], e["msg"]) for e in E.read(d)]
    assert got == [("warning", "cannot reach shed"), ("error", "cannot save the sync state")]
