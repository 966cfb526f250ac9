"""Reads write nothing, work beside a writer, and data stays private.

1. Under strace, `get`, `scan`, `stats`, `peer list` and `watch` on a store
   of 100K records (clean, and left dirty by a SIGKILLed writer) make no
   fsync, fdatasync, msync, rename, unlink, ftruncate or fallocate call at
   all, no write to a file in the data directory, no writable open or
   shared writable mapping of one, and leave every file as it was.
2. Beside a running writer (no serve, so no control socket): while it
   makes new keys (the key index grows), reads through a long-lived
   read-only Node and through fresh opens in this process always find the
   keys that exist, whole, and an open reports no damage; then `mycelium
   get` and `scan` always exit 0 (nothing on stderr) and never show a torn
   record or one older than a previous run showed; a second writer is
   refused with exit 4.
3. Every file under the data directory is 0600 and every directory 0700
   (or stricter), even under umask 000.

The strace test needs strace: skipped when not root and strace is missing,
a loud failure when root (CI) and it is missing.
"""
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from agent.node import Node, init_identity

from tests.sync.procs import ENV

RECORDS = 100_000
READ_ENV = dict(ENV, PYTHONDONTWRITEBYTECODE="1")  # the interpreter writes no .pyc either

_script = os.path.join(os.path.dirname(sys.executable), "mycelium")
MYCELIUM = [_script] if os.path.exists(_script) else [sys.executable, "-m", "agent"]

# Every call that writes, syncs, removes, renames, creates or maps writable
# ("?": not an error where the architecture lacks the call).
TRACED = ("fsync,fdatasync,msync,?sync_file_range,syncfs,rename,renameat,?renameat2,"
          "write,pwrite64,writev,pwritev,?pwritev2,openat,?open,?creat,unlink,unlinkat,"
          "?rmdir,ftruncate,truncate,fallocate,mmap,?mkdir,mkdirat,?link,linkat,?symlink,"
          "symlinkat,?copy_file_range,sendfile")
NEVER = ("fsync", "fdatasync", "msync", "sync_file_range", "syncfs", "rename", "renameat",
         "renameat2", "unlink", "unlinkat", "rmdir", "ftruncate", "truncate", "fallocate",
         "link", "linkat", "symlink", "symlinkat", "mkdir", "mkdirat")
WRITES = ("write", "pwrite64", "writev", "pwritev", "pwritev2", "copy_file_range", "sendfile")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")

_line = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(\S+)(.*)$")
_fd_first = re.compile(r"^(-?\d+)<(.*?)>(?:, |$)")
_open_args = re.compile(r'^(\w+)(?:<(.*?)>)?, "((?:[^"\\]|\\.)*)", ([A-Z0-9_|]+)')
_ret_path = re.compile(r"^(-?\d+)<(.*)>$")


def _strace_or_fail():
    if shutil.which("strace") is None:
        if os.geteuid() == 0:
            pytest.fail("strace is not installed (as root, CI must run this test): "
                        "apt-get install strace")
        pytest.skip("strace is not installed")


def parse_trace(path, data_dir):
    """{"counts": {syscall: n}, "bad": [what wrote to data_dir, or a NEVER call]}."""
    d = os.path.realpath(data_dir)

    def inside(p):
        p = os.path.normpath(p)
        return p == d or p.startswith(d + os.sep)

    counts, bad, pending = {}, [], {}
    opened_d = 0
    with open(path, errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            m = re.match(r"^(\d+)\s+(.*) <unfinished \.\.\.>$", raw)
            if m:
                pending[m.group(1)] = m.group(2)
                continue
            m = re.match(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$", raw)
            if m:
                raw = "%s  %s%s" % (m.group(1), pending.pop(m.group(1), m.group(2) + "("),
                                    m.group(3))
            m = _line.match(raw)
            if not m:
                continue  # signals, exits
            pid, name, args, ret, _ = m.groups()
            counts[name] = counts.get(name, 0) + 1
            if name in NEVER:
                bad.append(raw)
            elif name in WRITES or name == "ftruncate":
                fm = _fd_first.match(args)
                if fm and inside(fm.group(2)):
                    bad.append(raw)
            elif name == "mmap":
                mm = re.search(r", (PROT_[A-Z_|]+), (MAP_[A-Z_|]+), (-?\d+)<(.*?)>", args)
                if mm and "PROT_WRITE" in mm.group(1) and "MAP_SHARED" in mm.group(2) \
                        and inside(mm.group(4)):
                    bad.append(raw)
            elif name in ("openat", "open", "creat"):
                if name == "openat":
                    om = _open_args.match(args)
                    if not om:
                        bad.append("unparsed: " + raw)
                        continue
                    _, cwd, p, flags = om.groups()
                    p = os.path.join(cwd or "/", p)
                else:
                    om = re.match(r'^"((?:[^"\\]|\\.)*)"(?:, ([A-Z0-9_|]+))?', args)
                    p, flags = om.group(1), (om.group(2) or "") if name == "open" else "O_CREAT"
                rm = _ret_path.match(ret)
                if rm:
                    p = rm.group(2)
                if inside(p):
                    opened_d += 1
                    if any(fl in flags.split("|") for fl in WRITE_FLAGS):
                        bad.append(raw)
    return {"counts": counts, "bad": bad, "opened_in_dir": opened_d}


def snapshot(data_dir):
    """path -> (mode, size, mtime_ns, sha1) of everything under data_dir."""
    out = {}
    for root, dirs, files in os.walk(data_dir):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            h = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    h = hashlib.sha1(f.read()).hexdigest()
            out[os.path.relpath(p, data_dir)] = (st.st_mode, st.st_size, st.st_mtime_ns, h)
    return out


def traced(tmp_path, data_dir, *args):
    """Run `mycelium --data-dir D ARGS` under strace; (process, parsed trace)."""
    trace = str(tmp_path / ("trace.%d" % random.getrandbits(32)))
    p = subprocess.run(["strace", "-f", "-y", "-qq", "-e", "trace=" + TRACED, "-o", trace,
                        *MYCELIUM, "--data-dir", data_dir, *args],
                       capture_output=True, text=True, env=READ_ENV, timeout=120)
    assert "strace:" not in p.stderr, p.stderr  # strace itself failed (ptrace refused?)
    got = parse_trace(trace, data_dir)
    assert got["opened_in_dir"] > 0, "the trace shows no open in %s: wrong process?" % data_dir
    return p, got


def _summary(got):
    c = got["counts"]
    return "writes %d (none to the data dir), openat %d (%d in the data dir, all read-only), " \
           "%s" % (sum(c.get(n, 0) for n in WRITES), c.get("openat", 0), got["opened_in_dir"],
                   ", ".join("%s %d" % (n, c.get(n, 0)) for n in
                             ("fsync", "fdatasync", "msync", "rename", "unlink", "unlinkat",
                              "ftruncate", "fallocate")))


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ro") / "node")
    init_identity(d)
    subprocess.run(MYCELIUM + ["--data-dir", d, "init"], env=ENV, check=True,
                   capture_output=True)  # the TLS identity too, for `peer list`
    with Node(d) as n:
        for i in range(RECORDS):
            n.put("k%06d" % i, {"a": i, "b": i})
    return d


def _record(p):
    return json.loads(p.stdout)["fields"]


def test_reads_write_nothing(big_store, tmp_path):
    _strace_or_fail()
    before = snapshot(big_store)
    report = []
    checks = [
        (("--json", "get", "k031337"), lambda p: _record(p) == {"a": 31337, "b": 31337}),
        (("--json", "scan", "k0999", "--limit", "5"),
         lambda p: [json.loads(x)["key"] for x in p.stdout.splitlines()]
         == ["k099900", "k099901", "k099902", "k099903", "k099904"]),
        (("--json", "stats"), lambda p: json.loads(p.stdout)["records"] == RECORDS),
        (("peer", "list"), lambda p: True),
        (("--json", "watch", "--timeout", "0.5"), lambda p: p.stdout == ""),
    ]
    for args, ok in checks:
        p, got = traced(tmp_path, big_store, *args)
        assert p.returncode == 0 and ok(p), (args, p.returncode, p.stdout[-500:], p.stderr)
        assert not got["bad"], (args, got["bad"][:20])
        report.append("%-22s %s" % (" ".join(a for a in args if a != "--json"),
                                    _summary(got)))
    assert snapshot(big_store) == before, "a read changed a file in the data directory"
    print("\n" + "\n".join(report))


WRITER = r"""
import os, sys
from agent.node import Node
n = Node(sys.argv[1])
i = 0
while True:
    n.put("w%07d" % i, {"a": i, "b": i})
    n.put("last", {"i": i})
    os.write(1, b"%d\n" % i)  # the ack, after both puts returned
    i += 1
"""


def test_read_of_a_store_left_dirty_by_sigkill_writes_nothing(big_store, tmp_path):
    _strace_or_fail()
    d = str(tmp_path / "dirty")
    shutil.copytree(big_store, d)
    w = subprocess.Popen([sys.executable, "-c", WRITER, d], stdout=subprocess.PIPE,
                         env=ENV)
    last = -1
    try:
        while last < 3000:
            line = w.stdout.readline()
            assert line, "the writer stopped"
            last = int(line)
    finally:
        w.send_signal(signal.SIGKILL)  # mid-stream: it is still writing
        rest = w.stdout.read()
        w.wait()
    for line in rest.split():
        last = int(line)
    assert not os.path.exists(os.path.join(d, "store", "clean")), "the kill left it clean"
    before = snapshot(d)
    report = []
    p, got = traced(tmp_path, d, "--json", "get", "w%07d" % last)
    assert p.returncode == 0 and _record(p) == {"a": last, "b": last}, (p.stdout, p.stderr)
    assert not got["bad"], got["bad"][:20]
    report.append("get (dirty, acked key) %s" % _summary(got))
    p, got = traced(tmp_path, d, "--json", "get", "last")
    assert p.returncode == 0 and _record(p)["i"] in (last, last + 1), (last, p.stdout, p.stderr)
    assert not got["bad"], got["bad"][:20]
    p, got = traced(tmp_path, d, "--json", "scan", "w", "--keys-only")
    keys = [json.loads(x) for x in p.stdout.splitlines()]
    assert p.returncode == 0 and len(keys) in (last + 1, last + 2), (last, len(keys), p.stderr)
    assert not got["bad"], got["bad"][:20]
    report.append("scan (dirty)           %s" % _summary(got))
    assert snapshot(d) == before, "a read of a dirty store changed a file"
    assert not os.path.exists(os.path.join(d, "store", "clean"))
    print("\n%d acks before the kill\n" % (last + 1) + "\n".join(report))


# The writer beside the reads. Growing keys.hash is made to take 0.2 s more
# (through the agent's filesystem seam): a slow disk, or the rehash of a
# big store, which runs in that window anyway; readers meet it every time.
BESIDE = r"""
import os, sys, time
from agent import fs
from agent.node import Node


class SlowHashGrowth(fs.RealFS):
    def allocate(self, fd, offset, length):
        super().allocate(fd, offset, length)
        if os.readlink("/proc/self/fd/%d" % fd).endswith("keys.hash"):
            time.sleep(0.2)


fs.install(SlowHashGrowth())
n = Node(sys.argv[1])
new = int(sys.argv[2])
i = 0
while True:
    n.put("k%d" % (i % 500), {"a": i, "b": i})
    if i < new:
        n.put("n%07d" % i, {"a": i, "b": i})  # new keys: keys.tab, heap and hash grow
    if i == 1000:
        os.write(1, b"ready\n")
    if i == new:
        os.write(1, b"grown\n")
    i += 1
"""
CLI_ROUNDS = 20  # each runs `get` and `scan` at once: 40 CLI reads
NEW_KEYS = 12_000  # the key hash grows (a rehash) at about 2.3K, 5.1K and 10.8K of them


def _check(problems, rec, key, how):
    if rec is None:
        problems.append("%s: %s not found (it exists)" % (how, key))
    elif set(rec) != {"a", "b"} or rec["a"] != rec["b"]:
        problems.append("%s: torn or wrong record %s = %s" % (how, key, rec))
    elif key.startswith("n") and rec["a"] != int(key[1:]):
        problems.append("%s: %s holds another record's value %s" % (how, key, rec))


def test_reads_beside_a_running_writer_are_never_torn(tmp_path):
    d = str(tmp_path / "node")
    init_identity(d)
    w = subprocess.Popen([sys.executable, "-c", BESIDE, d, str(NEW_KEYS)],
                         stdout=subprocess.PIPE, env=ENV)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(w.stdout.readline, b"")),
                              daemon=True)
    reader.start()
    seen = {}  # key -> highest `a` read so far: a later read never goes back
    problems = []
    n_a = 0
    open_failed = False
    runs = reads = opens = 0
    t_a = -1.0
    t0 = time.monotonic()
    rnd = random.Random(0)
    try:
        while b"ready\n" not in lines:
            assert w.poll() is None and time.monotonic() - t0 < 60, "the writer did not start"
            time.sleep(0.01)
        # A. While the writer makes new keys (the key index grows): one
        #    long-lived read-only node, and fresh opens, in this process.
        existing = ["k%d" % j for j in range(500)] + ["n%07d" % j for j in range(1000)]
        with Node(d, readonly=True) as n1:
            while b"grown\n" not in lines:
                assert w.poll() is None, "the writer died"
                key = rnd.choice(existing)
                _check(problems, n1.get(key), key, "long-lived reader")
                reads += 1
                # as many fresh opens as reads, until one went wrong (it may take
                # seconds): the later growths are left to the long-lived reader
                if reads % 2 == 0 and not open_failed:
                    with Node(d, readonly=True) as n2:
                        opens += 1
                        if n2.events:
                            problems.append("a fresh read-only open reported: %s"
                                            % n2.events[0])
                            open_failed = True
                        _check(problems, n2.get(key), key, "fresh open")
        t_a = time.monotonic() - t0
        n_a = len(problems)
        # B. The CLI, get and scan at once, while the writer rewrites k*.
        prefix1 = sorted(["k1"] + ["k1%d" % i for i in range(10)] +
                         ["k1%02d" % i for i in range(100)])
        for it in range(CLI_ROUNDS):
            key = "k%d" % rnd.randrange(500)
            before = dict(seen)  # the two runs of a round are concurrent: compare across rounds
            procs = [(args, subprocess.Popen(MYCELIUM + ["--data-dir", d, *args],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, env=ENV))
                     for args in (("--json", "get", key), ("--json", "scan", "k1"))]
            for args, p in procs:
                out, err = p.communicate(timeout=60)
                runs += 1
                if p.returncode != 0 or err:
                    problems.append("%s: exit %d: %s" % (args, p.returncode, err.strip()))
                    continue
                recs = [json.loads(x) for x in out.splitlines()]
                if args[1] == "scan" and [r["key"] for r in recs] != prefix1:
                    problems.append("scan k1 gave %d keys, not the 111 k1*" % len(recs))
                for r in recs:
                    _check(problems, r["fields"], r["key"], "mycelium %s" % args[1])
                    if r["fields"] and r["fields"].get("a", -1) < before.get(r["key"], -1):
                        problems.append("%s went back from a=%d to a=%d"
                                        % (r["key"], before[r["key"]], r["fields"]["a"]))
                    if r["fields"]:
                        seen[r["key"]] = max(seen.get(r["key"], -1), r["fields"].get("a", -1))
            if it == CLI_ROUNDS // 2:
                # a second writer is refused while the first runs
                p = subprocess.run(MYCELIUM + ["--data-dir", d, "put", "intruder", "v=1"],
                                   capture_output=True, text=True, env=ENV, timeout=60)
                assert p.returncode == 4, (p.returncode, p.stderr)
                assert re.search(r"another mycelium process|in use by another process",
                                 p.stderr), p.stderr
        assert w.poll() is None, "the writer died"
    finally:
        w.send_signal(signal.SIGKILL)
        w.wait()
    elapsed = time.monotonic() - t0
    kinds = sorted({re.sub(r"\d+", "N", x)[:160] for x in problems})
    assert not problems, (
        "kinds of problem: %s\n"
        "%d problems in-process (%d reads, %d fresh opens in %.1f s), e.g.:\n  %s\n"
        "%d problems in %d CLI runs, e.g.:\n  %s"
        % (kinds, n_a, reads, opens, t_a, "\n  ".join(problems[:min(n_a, 8)]),
           len(problems) - n_a, runs, "\n  ".join(problems[n_a:n_a + 8])))
    with Node(d, readonly=True) as n:
        assert n.get("intruder") is None
        done = n.count()
    print("\nbeside the writer: %d reads and %d fresh opens in-process (%.1f s), %d CLI runs;"
          " all exit 0, nothing torn, nothing missing (%d records, %.1f s)"
          % (reads, opens, t_a, runs, done, elapsed))


def _umask0():
    os.umask(0)


def test_files_are_private(tmp_path):
    d = str(tmp_path / "node")
    peer = str(tmp_path / "peer")
    run = lambda dd, *a: subprocess.run(MYCELIUM + ["--data-dir", dd, *a],  # noqa: E731
                                        capture_output=True, text=True, env=ENV,
                                        preexec_fn=_umask0, timeout=60)
    for dd in (d, peer):
        p = run(dd, "init")
        assert p.returncode == 0, p.stderr
    pid = run(peer, "id").stdout.strip()
    assert run(d, "put", "a", "v=1").returncode == 0
    assert run(d, "peer", "add", pid, "127.0.0.1:9").returncode == 0
    log = open(str(tmp_path / "serve.log"), "wb")
    srv = subprocess.Popen(MYCELIUM + ["--data-dir", d, "--json", "serve", "--listen",
                                       "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log,
                           env=ENV, preexec_fn=_umask0)
    sock_mode = None
    try:
        assert srv.stdout.readline(), "serve did not start"
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(d, "sync", "state.json")):
            assert time.monotonic() < deadline, "serve wrote no state.json"
            time.sleep(0.05)
        assert run(d, "put", "b", "v=2").returncode == 0  # through the control socket
        sock_mode = stat.S_IMODE(os.lstat(os.path.join(d, "control.sock")).st_mode)
    finally:
        srv.send_signal(signal.SIGTERM)
        code = srv.wait(15)
        log.close()
    assert code == 0
    bad = []
    listing = []
    if sock_mode is not None and sock_mode & 0o077:
        bad.append("control.sock %o" % sock_mode)
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            rel = os.path.relpath(p, d)
            listing.append("%s %o" % (rel, mode))
            if stat.S_ISDIR(st.st_mode) and mode & 0o077:
                bad.append("dir %s %o" % (rel, mode))
            elif not stat.S_ISDIR(st.st_mode) and mode & 0o077:
                bad.append("file %s %o" % (rel, mode))
    root_mode = stat.S_IMODE(os.stat(d).st_mode)
    if root_mode & 0o077:
        bad.append("the data directory itself %o" % root_mode)
    print("\ncontrol.sock %s; " % (oct(sock_mode) if sock_mode is not None else "?") +
          ", ".join(sorted(listing)))
    assert not bad, "not private (umask 000): %s" % bad


def test_a_configured_group_may_read_the_data_but_not_the_key(tmp_path):
    """MYCELIUM_GROUP=NAME: files 0640 and directories 02750 of that group
    (so its members can read, e.g. a backup user); the TLS and signing keys
    stay 0600."""
    import grp
    gid = os.getgid()
    name = grp.getgrgid(gid).gr_name
    d = str(tmp_path / "node")
    env = dict(ENV, MYCELIUM_GROUP=name)
    run = lambda *a: subprocess.run(MYCELIUM + ["--data-dir", d, *a],  # noqa: E731
                                    capture_output=True, text=True, env=env,
                                    preexec_fn=_umask0, timeout=60)
    assert run("init").returncode == 0
    assert run("put", "a", "v=1").returncode == 0
    assert run("id").returncode == 0
    modes = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            modes[os.path.relpath(os.path.join(root, n), d)] = (
                stat.S_IMODE(st.st_mode), st.st_gid, stat.S_ISDIR(st.st_mode))
    assert modes["sync/key.pem"][0] == 0o600 and modes["actor.key"][0] == 0o600
    for rel, (mode, g, isdir) in modes.items():
        if rel in ("sync/key.pem", "actor.key"):
            continue
        assert mode == (0o2750 if isdir else 0o640), (rel, oct(mode))
        assert g == gid, rel
    p = subprocess.run(MYCELIUM + ["--data-dir", str(tmp_path / "x"), "init"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(ENV, MYCELIUM_GROUP="no-such-group-here"))
    assert p.returncode == 2 and "no such group" in p.stderr
