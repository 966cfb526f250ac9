"""Online backup and restore (issue 14): `mycelium backup FILE` while serve
runs and takes writes; `mycelium restore FILE` makes a new device with a
fresh actor id that syncs with the old one without a fork. Every write
acknowledged before the backup began is checked in the restored device.
Real processes."""
import json
import os
import threading

from agent.control import RemoteNode, socket_path
from tests.sync.procs import Serve, cmd, init, wait_for


def _get_all(d):
    out = {}
    for line in cmd(d, "--json", "scan").stdout.splitlines():
        r = json.loads(line)
        out[r["key"]] = r["fields"]
    return out


def test_backup_while_serving_holds_every_earlier_ack(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    srv = Serve(a)
    try:
        api = RemoteNode(socket_path(a))
        acked = {}
        for i in range(300):
            api.put("k%03d" % i, {"v": i, "s": "x" * (i % 50)})
            acked["k%03d" % i] = {"v": i, "s": "x" * (i % 50)}
        later = {}
        stop = threading.Event()

        def writer():
            w = RemoteNode(socket_path(a))
            i = 0
            while not stop.is_set():
                w.put("late%04d" % i, {"v": i})
                later["late%04d" % i] = {"v": i}
                i += 1
        t = threading.Thread(target=writer)
        t.start()
        try:
            got = json.loads(cmd(a, "--json", "backup", str(tmp_path / "b.snap")).stdout)
        finally:
            stop.set()
            t.join()
        assert got["records"] >= 300 and len(later) > 0
    finally:
        assert srv.stop() == 0
    r = str(tmp_path / "r")
    out = json.loads(cmd(r, "--json", "restore", str(tmp_path / "b.snap")).stdout)
    assert out["records"] == got["records"]
    state = _get_all(r)
    for k, v in acked.items():                 # every ack before the backup
        assert state.get(k) == v, k
    for k, v in state.items():                 # and nothing that was never written
        assert acked.get(k, later.get(k)) == v, k
    assert len(state) == got["records"]
    ia = json.loads(cmd(a, "--json", "stats").stdout)["actor"]
    ir = json.loads(cmd(r, "--json", "stats").stdout)["actor"]
    assert ia != ir and out["actor"] == ir
    assert cmd(a, "id").stdout.strip() != cmd(r, "id").stdout.strip()


def test_a_restored_device_syncs_with_the_old_one_without_a_fork(tmp_path):
    a, r = str(tmp_path / "a"), str(tmp_path / "r")
    ida = init(a)
    cmd(a, "put", "k", "v=1", "n+=2")
    cmd(a, "backup", str(tmp_path / "b.snap"))
    cmd(a, "put", "after", "v=2", "n+=5")          # after the backup: comes back by sync
    cmd(a, "put", "k", "n+=1")
    cmd(r, "restore", str(tmp_path / "b.snap"))
    idr = cmd(r, "id").stdout.strip()
    cmd(r, "put", "k", "n+=10", "w=restored")       # the restored device writes too
    cmd(a, "peer", "add", idr, "127.0.0.1:9")
    srv = Serve(a)
    try:
        cmd(r, "peer", "add", ida, srv.addr)
        cmd(r, "sync", ida[:7])
        cmd(r, "sync", ida[:7])
        assert wait_for(lambda: _get_all(a) == _get_all(r), 20), (_get_all(a), _get_all(r))
    finally:
        srv.stop()
    st = _get_all(r)
    assert st["k"] == {"v": "1", "n": 13, "w": "restored"} and st["after"] == {"v": "2", "n": 5}
    for d in (a, r):
        p = cmd(d, "check", check=None)
        assert p.returncode == 0, p.stdout       # no fork, nothing held or refused


def test_restore_refuses_a_damaged_file_and_a_used_directory(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    for i in range(5):
        cmd(a, "put", "k%d" % i, "v=%d" % i)
    snap = str(tmp_path / "b.snap")
    cmd(a, "backup", snap)
    data = bytearray(open(snap, "rb").read())
    data[len(data) // 2] ^= 0xFF
    bad = str(tmp_path / "bad.snap")
    open(bad, "wb").write(bytes(data))
    p = cmd(str(tmp_path / "r1"), "restore", bad, check=6)
    assert "snapshot" in p.stderr.lower()
    assert not os.path.exists(str(tmp_path / "r1"))            # nothing was made
    p = cmd(a, "restore", snap, check=2)
    assert "not empty" in p.stderr
    p = cmd(str(tmp_path / "r2"), "restore", str(tmp_path / "none.snap"), check=2)
    assert "no such backup" in p.stderr


def test_a_restore_cut_short_starts_again(tmp_path, monkeypatch):
    from agent.history import backup as B
    from agent.history import catchup
    a = str(tmp_path / "a")
    init(a)
    cmd(a, "put", "k", "v=1")
    snap = str(tmp_path / "b.snap")
    cmd(a, "backup", snap)
    r = str(tmp_path / "r")

    def crash(node, path):
        raise KeyboardInterrupt("power cut")
    monkeypatch.setattr(catchup, "absorb", crash)
    try:
        B.restore(snap, r)
    except KeyboardInterrupt:
        pass
    assert os.path.exists(os.path.join(r, B.PARTIAL))
    monkeypatch.undo()
    cmd(r, "restore", snap)
    assert _get_all(r) == {"k": {"v": "1"}} and not os.path.exists(os.path.join(r, B.PARTIAL))
