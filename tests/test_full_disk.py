"""A full disk, for real: an 8 MiB tmpfs written until nothing fits.

Acceptance: writing until the disk is full ends in a clear error and exit
code (DiskFull, exit 8), never a SIGBUS; every acked write is still there;
after space is freed, 100 more writes are acked and reach a fresh peer over
TLS, and this device's sequence numbers never go back. `mycelium serve`
keeps running when state.json hits ENOSPC, and opening a full data
directory gives typed errors, never an OSError traceback.

Needs root (mount -t tmpfs): skipped when not root, a loud failure when
root cannot mount.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from agent.change import parse_change
from agent.errors import DiskFull
from agent.node import Node
from agent.sync.devid import display_id, normalize_id

from tests.sync.procs import ENV, Serve, cmd, init, wait_for

SIZE = "8m"
BALLAST = 3 * 512 * 1024  # 1.5 MiB, written first and freed later
VALUE_LEN = 200

# Writes records of ~200-byte values with the Python API (durable mode) and
# prints "KEY I" after each put returned (the ack). Phase 1 makes new keys;
# with update=1, phase 2 then rewrites the existing keys until the op log
# itself no longer fits. Exit 8 on DiskFull, 0 when `limit` puts were acked;
# any other exception is a traceback and exit 1, a signal a negative code.
WRITER = r"""
import sys
from agent.errors import AgentError, DiskFull
from agent.node import Node

d, prefix, limit, update = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
sys.stdout.reconfigure(line_buffering=True)


def value(key, i):
    return {"v": ("%s/%d/" % (key, i)).ljust(VALUE_LEN, "."), "i": i}


node = Node(d, durable=True)
made = i = 0
code = 0
try:
    while not limit or made < limit:
        key = "%s%06d" % (prefix, made)
        node.put(key, value(key, i))
        print(key, i)
        made += 1
        i += 1
except DiskFull as e:
    print("phase 1 (new keys): DiskFull after %d acks: %s" % (made, e), file=sys.stderr)
    code = DiskFull.exit_code
if code and update and made:
    j = 0
    try:
        while True:
            key = "%s%06d" % (prefix, j % made)
            node.put(key, value(key, i))
            print(key, i)
            i += 1
            j += 1
    except DiskFull as e:
        print("phase 2 (rewrites): DiskFull after %d acks: %s" % (j, e), file=sys.stderr)
try:
    node.close()
except AgentError as e:
    print("close: %s: %s" % (type(e).__name__, e), file=sys.stderr)
for ev in node.events:
    print("event: %s" % ev, file=sys.stderr)
sys.exit(code)
""".replace("VALUE_LEN", str(VALUE_LEN))


def value(key, i):
    return {"v": ("%s/%d/" % (key, i)).ljust(VALUE_LEN, "."), "i": i}


def _write(data_dir, prefix, limit=0, update=False, timeout=120):
    """Run WRITER; returns (returncode, [(key, i) acked, in order], stderr)."""
    p = subprocess.run([sys.executable, "-c", WRITER, data_dir, prefix, str(limit),
                        "1" if update else "0"], capture_output=True, text=True, env=ENV,
                       timeout=timeout)
    assert p.returncode >= 0, (
        "the writer died by signal %d%s: %s" % (-p.returncode, " (SIGBUS: a page fault in a "
                                                "mapping the disk could not back)" if
                                                -p.returncode == 7 else "", p.stderr[-2000:]))
    acks = []
    for line in p.stdout.splitlines():
        key, i = line.split()
        acks.append((key, int(i)))
    return p.returncode, acks, p.stderr


def _root_or_skip():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 8 MiB tmpfs, unmounted afterwards."""
    _root_or_skip()
    mnt = str(tmp_path / "tmpfs")
    os.mkdir(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % SIZE, "tmpfs", mnt],
                       capture_output=True, text=True)
    if p.returncode:
        pytest.fail("running as root but `mount -t tmpfs` failed (%s): this test needs a "
                    "tmpfs (CAP_SYS_ADMIN in a container)" % p.stderr.strip())
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", mnt]).returncode:
            subprocess.run(["umount", "-l", mnt])


def _free(mnt) -> int:
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def _fill(path):
    """Write path until the disk refuses even one byte; returns the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    total = 0
    try:
        for chunk in (1 << 20, 1 << 12, 1):
            buf = b"\xa5" * chunk
            while True:
                try:
                    total += os.write(fd, buf)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return total


def _ballast(mnt):
    path = os.path.join(mnt, "ballast")
    with open(path, "wb") as f:
        f.write(b"\x5a" * BALLAST)
    return path


def _no_traceback(p, what):
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, (what, p.stderr)


def _disk_full_exit(p, what):
    _no_traceback(p, what)
    assert p.returncode == DiskFull.exit_code, (what, p.returncode, p.stdout, p.stderr)
    err = p.stderr.lower()
    assert "no space" in err and "free" in err, (what, p.stderr)


def _actor(data_dir):
    with open(os.path.join(data_dir, "identity.json")) as f:
        return int(json.load(f)["actor"], 16)


def test_full_disk_errors_cleanly_then_resumes_and_syncs(tmpfs, tmp_path):
    t0 = time.monotonic()
    problems = []
    ballast = _ballast(tmpfs)
    node_dir = os.path.join(tmpfs, "node")
    p = cmd(node_dir, "init", check=None)
    assert p.returncode == 0, p.stderr
    tid = init(node_dir)  # already there: just its device id

    # 1. Write until the disk is full: new keys, then rewrites until the op
    #    log itself does not fit. DiskFull (exit 8), never a signal.
    rc, acks, err = _write(node_dir, "k", update=True)
    assert rc == DiskFull.exit_code, (rc, err[-3000:])
    assert "Traceback" not in err, err
    assert "phase 1" in err and "phase 2" in err, err
    n_new = sum(1 for k, i in acks if i == int(k[1:]))
    assert n_new > 1000, (n_new, len(acks), err)
    topped = _fill(os.path.join(tmpfs, "top-up"))  # the last partial page, if any
    assert _free(tmpfs) == 0
    expect = dict(acks)  # key -> i of its last acked write

    # 2. The CLI on the full disk: a put is refused with exit 8 and says to
    #    free space; reads work.
    p = cmd(node_dir, "put", "cli-key", "v=" + "c" * VALUE_LEN, check=None)
    _disk_full_exit(p, "put on a full disk")
    first = acks[0][0]
    p = cmd(node_dir, "--json", "get", first, check=None)
    _no_traceback(p, "get")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["fields"] == value(first, expect[first]), p.stdout
    p = cmd(node_dir, "--json", "stats", check=None)
    _no_traceback(p, "stats")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["records"] == len(expect), p.stdout

    # 3. Every acked write is there, read back through a read-only open.
    with Node(node_dir, readonly=True) as n:
        wrong = [k for k, i in expect.items() if n.get(k) != value(k, i)]
        assert n.get("cli-key") is None
    assert not wrong, "%d acked records lost or wrong, e.g. %s" % (len(wrong), wrong[:5])

    # 4. Free the ballast: 100 more writes (new keys, as before) are acked.
    os.unlink(ballast)
    freed = _free(tmpfs)
    rc, after, err = _write(node_dir, "after", limit=100)
    assert "Traceback" not in err, err
    if rc != 0 or len(after) != 100:
        problems.append("after freeing the %d-byte ballast (%d bytes free), only %d of 100 "
                        "writes were acked (exit %d): %s" % (BALLAST, freed, len(after), rc,
                                                              err.strip()[-600:]))
    expect.update(after)
    all_acks = acks + after

    # 5. Sync to a fresh peer on the normal disk, over TLS: it holds every
    #    acked record, and nothing else.
    peer = str(tmp_path / "peer")
    pid = init(peer)
    cmd(node_dir, "peer", "add", pid, "127.0.0.1:9")
    srv = Serve(node_dir, str(tmp_path / "serve.log"))  # the log off the full disk
    try:
        cmd(peer, "peer", "add", tid, srv.addr)
        p = cmd(peer, "sync", tid, check=None, timeout=120)
        assert p.returncode == 0, (p.stdout, p.stderr, srv.log())
    finally:
        code = srv.stop()
    assert code == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()

    # 6. The sequence never goes back: this device's own changes in its log
    #    have strictly rising seqs, one per ack (a refused write leaves no
    #    trace), each naming the one before as its prev; the peer knows the
    #    highest and misses none.
    actor = _actor(node_dir)
    with Node(node_dir, readonly=True) as n:
        own = [c for c in (parse_change(raw) for _, raw in n.log.read()) if c.actor == actor]
        local_top = n.vv.get(actor)
    seqs = [c.seq for c in own]
    back = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
    assert not back, "the sequence went back or repeated: %s" % back[:10]
    assert len(own) == len(all_acks), ("log holds %d own changes for %d acks"
                                       % (len(own), len(all_acks)))
    broken = [(c.seq, c.prev, s) for c, s in zip(own, [0] + seqs) if c.prev != s]
    assert not broken, "changes whose prev is not the change before: %s" % broken[:10]
    assert local_top == seqs[-1], (local_top, seqs[-1])

    with Node(peer, readonly=True) as n:
        missing = [k for k, i in expect.items() if n.get(k) != value(k, i)]
        extra = n.count() - len(expect)
        assert n.vv.get(actor) == seqs[-1], (n.vv.get(actor), seqs[-1])
        assert not n.known.gaps.get(actor), n.known.gaps.get(actor)
        assert n.get("cli-key") is None
    assert not missing, "the peer lacks %d acked records, e.g. %s" % (len(missing), missing[:5])
    assert extra == 0, "the peer holds %d records no one acked" % extra
    print("full disk: %d acks before full (%d new keys), top-up %d B, %d B free after "
          "freeing the ballast, %d acks after, seq %d..%d, %.1f s"
          % (len(acks), n_new, topped, freed, len(after), seqs[0], seqs[-1],
             time.monotonic() - t0))
    assert not problems, "\n".join(problems)


def test_serve_keeps_running_when_state_json_hits_enospc(tmpfs, tmp_path):
    node_dir = os.path.join(tmpfs, "node")
    tid = init(node_dir)
    with Node(node_dir) as n:
        for i in range(50):
            n.put("s%d" % i, {"v": i})
    peer = str(tmp_path / "peer")
    pid = init(peer)
    # a known peer that is not there: every failed dial changes the sync state
    cmd(node_dir, "peer", "add", pid, "127.0.0.1:9")
    state = os.path.join(node_dir, "sync", "state.json")
    srv = Serve(node_dir, str(tmp_path / "serve.log"))  # the log off the full disk
    try:
        assert wait_for(lambda: os.path.exists(state), 10), srv.log()
        cmd(peer, "peer", "add", tid, srv.addr)
        filler = os.path.join(tmpfs, "filler")
        _fill(filler)
        assert _free(tmpfs) == 0
        before = os.stat(state).st_mtime_ns

        # a peer syncs (session events change the state), dials keep failing
        p = cmd(peer, "sync", tid, check=None, timeout=60)
        assert p.returncode == 0, (p.stderr, srv.log())
        wait_for(lambda: "cannot save the sync state" in srv.log() or srv.p.poll() is not None,
                 10)
        assert srv.p.poll() is None, "serve exited (%s) on the full disk:\n%s" % (
            srv.p.returncode, srv.log())
        assert "cannot save the sync state" in srv.log(), (
            "serve never tried to save state.json on the full disk:\n" + srv.log())
        log = srv.log()
        assert "state.json: no space left" in log, log
        time.sleep(1.5)  # at least one more retry
        assert srv.p.poll() is None, "serve exited (%s):\n%s" % (srv.p.returncode, srv.log())
        assert os.stat(state).st_mtime_ns == before  # it really could not write it

        # it still answers through its control socket
        p = cmd(node_dir, "--json", "stats", check=None)
        assert p.returncode == 0 and json.loads(p.stdout).get("served_by") == \
            "mycelium serve", (p.stdout, p.stderr)
        p = cmd(node_dir, "--json", "get", "s7", check=None)
        assert p.returncode == 0 and json.loads(p.stdout)["fields"] == {"v": 7}, p.stderr
        # a write through it is refused as disk full, and serve goes on
        p = cmd(node_dir, "put", "big", "v=" + "x" * 3000, check=None)
        _disk_full_exit(p, "put through the control socket on a full disk")
        assert srv.p.poll() is None, srv.log()

        # space again: the state is saved, writes are acked and synced
        os.unlink(filler)
        assert wait_for(lambda: "the sync state is saved again" in srv.log(), 10), srv.log()
        assert os.stat(state).st_mtime_ns != before
        with open(state) as f:
            saved = json.load(f)
        assert saved["peers"][normalize_id(pid)].get("last_sync"), saved
        cmd(node_dir, "put", "after", "v=1")
        p = cmd(node_dir, "--json", "get", "after", check=None)
        assert p.returncode == 0 and json.loads(p.stdout)["fields"] == {"v": "1"}, p.stderr
        cmd(peer, "sync", tid, timeout=60)
    finally:
        code = srv.stop()
    assert code == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()
    with Node(peer, readonly=True) as n:
        assert n.get("after") == {"v": "1"}
        assert all(n.get("s%d" % i) == {"v": i} for i in range(50))
    # what the full disk left behind is no damage: reads and a writer open are quiet
    for args in (("--json", "stats"), ("put", "z", "v=1"), ("--json", "get", "big")):
        p = cmd(node_dir, *args, check=None)
        _no_traceback(p, args)
        assert p.returncode == (1 if args[-1] == "big" else 0), (args, p.returncode, p.stderr)
        assert "warning" not in p.stderr, (args, p.stderr)


# Opens the node as a writer on a full disk and tries a put: whatever fails
# must be an AgentError (printed as "AGENT <class>"), never a bare OSError.
OPENER = r"""
import sys
from agent.errors import AgentError
from agent.node import Node
try:
    n = Node(sys.argv[1], durable=True)
except AgentError as e:
    print("AGENT open %s: %s" % (type(e).__name__, e))
    sys.exit(0)
print("OPENED")
try:
    n.put("api-key", {"v": "a" * 200})
    print("PUT OK")
except AgentError as e:
    print("AGENT put %s: %s" % (type(e).__name__, e))
try:
    n.close()
except AgentError as e:
    print("AGENT close %s: %s" % (type(e).__name__, e))
"""


def test_opening_a_full_data_dir_gives_typed_errors(tmpfs, tmp_path):
    ballast = _ballast(tmpfs)
    node_dir = os.path.join(tmpfs, "node")
    init(node_dir)
    rc, acks, err = _write(node_dir, "k", update=True)  # full, and left dirty
    assert rc == DiskFull.exit_code, err[-3000:]
    filler = os.path.join(tmpfs, "filler")
    _fill(filler)
    assert _free(tmpfs) == 0
    expect = dict(acks)
    key, i = acks[-1]

    p = subprocess.run([sys.executable, "-c", OPENER, node_dir], capture_output=True,
                       text=True, env=ENV, timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, (p.returncode, p.stderr)
    assert "PUT OK" not in p.stdout, p.stdout
    assert "AGENT" in p.stdout and "DiskFull" in p.stdout, p.stdout

    # writes: exit 8, "no space", "free"
    for args in (("put", "x1", "v=1"), ("put", key, "v=" + "z" * VALUE_LEN),
                 ("del", acks[0][0]), ("peer", "add", display_id("A" * 28), "127.0.0.1:9")):
        _disk_full_exit(cmd(node_dir, *args, check=None), args)
    _disk_full_exit(cmd(os.path.join(tmpfs, "new"), "init", check=None), "init on a full disk")
    # reads: work
    for args in (("--json", "get", key), ("--json", "stats"), ("scan", "--limit", "3"),
                 ("peer", "list"), ("id",), ("watch", "--timeout", "0.3")):
        p = cmd(node_dir, *args, check=None)
        _no_traceback(p, args)
        assert p.returncode == 0, (args, p.returncode, p.stderr)
        assert "warning" not in p.stderr, (args, p.stderr)  # a full disk is not damage
        if args[:2] == ("--json", "get"):
            assert json.loads(p.stdout)["fields"] == value(key, i), p.stdout
    # repair: a typed answer either way
    p = cmd(node_dir, "repair", check=None)
    _no_traceback(p, "repair")
    assert p.returncode in (0, DiskFull.exit_code), (p.returncode, p.stderr)
    # serve opens, serves reads, and stops cleanly
    srv = Serve(node_dir, str(tmp_path / "serve.log"))  # the log off the full disk
    try:
        p = cmd(node_dir, "--json", "get", key, check=None)
        assert p.returncode == 0 and json.loads(p.stdout)["fields"] == value(key, i), p.stderr
        assert srv.p.poll() is None, srv.log()
    finally:
        code = srv.stop()
    assert code == 0 and "Traceback" not in srv.log(), srv.log()

    # space again: everything acked is there and writes go on
    os.unlink(filler)
    os.unlink(ballast)
    shutil.rmtree(os.path.join(tmpfs, "new"), ignore_errors=True)
    p = cmd(node_dir, "put", "x1", "v=1")
    assert "warning" not in p.stderr, p.stderr  # the full disk left no damage behind
    with Node(node_dir, readonly=True) as n:
        assert not n.events, n.events
        wrong = [k for k, j in expect.items() if n.get(k) != value(k, j)]
        assert n.get("x1") == {"v": "1"} and n.get("api-key") is None
    assert not wrong, wrong[:5]
