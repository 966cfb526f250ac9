"""Damage every file of a data directory and run what a user runs.

A data directory is built once per variant: written and closed cleanly
("clean"), or written by a process killed with SIGKILL, which leaves the
store dirty ("killed"; the page cache is intact, so every acked write must
survive). Then each file of it (os.walk: a new file is covered without a
change here) is damaged in a fresh copy, one way at a time: one byte flipped
at the start, at 12, at a third, in the middle and at the end (of the file,
and of the bytes written in it when it was made with room to grow);
truncated to half; truncated to nothing. On the copy, in order:

    mycelium --json scan      (read-only)
    mycelium id
    mycelium put new:key x=1  (a writer's open, which repairs)
    mycelium --json scan
    mycelium get new:key

Each command either gives the right answer with exit 0 (warnings on stderr
are fine), or exits non-zero with a message that names the damaged file and
says what to do. Never a traceback, never wrong or missing data with exit 0.
Exit 1 (not found) from get is right only if the put before it failed.

Each case runs in a forked child calling agent.cli.main in-process, so that
a crash (SIGBUS from a mapped file that shrank) or a hang is one failing
case, not the end of the run. Every failure is collected and reported at the
end, so one run shows them all.
"""
import gc
import io
import json
import os
import pathlib
import re
import shutil
import signal
import tempfile
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout

import pytest

from agent import Node, Inc, MV, Add, Remove
from agent.cli import main, _jsonable

SEGMENT = 4096
CASE_TIMEOUT = 60  # seconds; a case still running then is killed and reported as a hang
JOBS = max(1, min(4, os.cpu_count() or 1))
NEW_KEY = "new:key"
COMMANDS = (
    ("scan", ["--json", "scan"]),
    ("id", ["id"]),
    ("put", ["put", NEW_KEY, "x=1"]),
    ("scan again", ["--json", "scan"]),
    ("get", ["get", NEW_KEY]),
)
NEW_RECORD = {"key": NEW_KEY, "fields": {"x": "1"}, "kinds": {"x": "lww"}}
GET_OUTPUT = 'new:key\n  x = "1"  (lww)\n'
HINTS = ("mycelium repair", "mycelium sync", "mycelium serve", "mycelium init", "restore",
         "free some space", "peer add")


# -- the data directory


def _text(n, seed):
    """n bytes of printable text."""
    base = "%d-abcdefghijklmnopqrstuvwxyz" % seed
    return (base * (n // len(base) + 1))[:n]


def _workload(n):
    """Every field kind, adds and removes, deletes and a revival, and values
    from 1 byte to 3 KB so that many arena size classes exist."""
    sizes = (1, 16, 40, 90, 150, 230, 400, 700, 1100, 1600, 2200, 3000)
    for i in range(200):
        f = {"name": _text(sizes[i // 16 % len(sizes)] if i % 16 == 0 else 1 + i % 12, i),
             "age": i, "visits": Inc(i % 7 + 1), "mood": MV("m%d" % (i % 4)),
             "tags": Add("t%d" % (i % 5), "all")}
        if i % 3 == 0:
            f["score"] = i / 8.0
        if i % 11 == 0:
            f["raw"] = bytes([i % 256]) * (1 + i % 9)
        if i % 13 == 0:
            f["flag"] = (None, True, False)[i % 3]
        n.put("user:%03d" % i, f)
        if i == 100:
            n.checkpoint()
    for i in range(0, 200, 3):
        n.put("user:%03d" % i, {"visits": Inc(-2), "tags": Remove("all"), "mood": MV("later")})
    for j, i in enumerate(range(0, 200, 16)):  # the record moves to another size class
        n.put("user:%03d" % i, {"name": _text(sizes[(j + 6) % 9], -i)})
    for i in (7, 17, 33, 99, 150, 181):
        n.delete("user:%03d" % i)
    n.put("user:017", {"name": "back", "visits": Inc(1)})
    for j in range(12):
        n.put("count:%d" % (j % 3), {"n": Inc(1 if j % 4 else -1)})
    n.put("\u043a\u043b\u044e\u0447:1", {"name": "\u00fcn\u00efc\u00f8d\u00e9",
                                         "tags": Add("a", "b", "c")})
    n.put("only:removes", {"tags": Add("x")})
    n.put("only:removes", {"tags": Remove("x")})
    n.put("big:1", {"blob": _text(50_000, 1)})          # past the largest slot: store/big/
    n.put("big:2", {"blob": _text(40_000, 2), "n": Inc(3)})
    n.put("big:2", {"more": _text(30_000, 3)})


def _records(n):
    """What `mycelium --json scan` must print, as parsed lines, read from the
    writer itself before it closes or is killed."""
    return [{"key": k, "fields": {f: _jsonable(v) for f, v in rec.items()}, "kinds": kinds}
            for k, rec, kinds in n.scan(with_kinds=True)]


def _call(argv):
    """(exit code, stdout, stderr, traceback or None) of one in-process run."""
    out, err = io.StringIO(), io.StringIO()
    tb = None
    rc = None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException:
        tb = traceback.format_exc()
    return rc, out.getvalue(), err.getvalue(), tb


def _build(path, variant):
    """A data directory written by _workload; returns the records it holds."""
    rc, _, err, tb = _call(["--data-dir", path, "init"])
    assert rc == 0 and tb is None, (rc, err, tb)
    if variant == "clean":
        with Node(path, segment_bytes=SEGMENT) as n:
            _workload(n)
            return _records(n)
    result = path + ".expected.json"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            n = Node(path, segment_bytes=SEGMENT)
            _workload(n)
            with open(result, "w") as f:
                json.dump(_records(n), f)
            os.write(w, b"!")  # every write is acked: kill now
            time.sleep(600)
        finally:
            os._exit(1)
    os.close(w)
    ready = os.read(r, 1)
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert ready == b"!", "the writer died before its last ack (status %r)" % status
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    with open(result) as f:
        records = json.load(f)
    os.unlink(result)
    assert not os.path.exists(os.path.join(path, "store", "clean"))
    return records


def _scratch(tmp_path_factory, variant):
    """Where the copies go: tmpfs if there is one (a writer's open fsyncs
    every file it repairs, and on a disk a thousand opens take minutes),
    else pytest's tmp directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        return pathlib.Path(tempfile.mkdtemp(prefix="mycelium-damage-%s-" % variant, dir=shm))
    return tmp_path_factory.mktemp("damage-" + variant)


@pytest.fixture(scope="module", params=["clean", "killed"])
def source(request, tmp_path_factory):
    variant = request.param
    base = _scratch(tmp_path_factory, variant)
    request.addfinalizer(lambda: shutil.rmtree(str(base), ignore_errors=True))
    path = str(base / "data")
    records = _build(path, variant)
    # the undamaged directory gives the expected answers (on a copy: the
    # source stays exactly as the writer left it)
    check = str(base / "check")
    shutil.copytree(path, check, symlinks=True)
    rc, out, err, tb = _call(["--data-dir", check, "--json", "scan"])
    assert (rc, tb) == (0, None), (rc, err, tb)
    assert [json.loads(x) for x in out.splitlines()] == records, "the undamaged scan is wrong"
    rc, out, err, tb = _call(["--data-dir", check, "id"])
    assert (rc, tb) == (0, None), (rc, err, tb)
    device_id = out.strip()
    shutil.rmtree(check)
    return variant, path, records, device_id, base


# -- damage


def _cases(root):
    """(path relative to root, damage) for every file under root."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            size = os.path.getsize(p)
            if size == 0:
                out.append((rel, ("truncate", 0)))  # a no-op, but the file is covered
                continue
            # files made with room to grow are mostly zeros: also hit the middle
            # and the end of what is written in them
            with open(p, "rb") as f:
                used = len(f.read().rstrip(b"\0"))
            offsets = []
            for off in (0, 12, size // 3, size // 2, size - 1, used // 2, used - 1):
                if 0 <= off < size and off not in offsets:
                    offsets.append(off)
            damages = [("flip", off) for off in offsets]
            for n in (size // 2, 0):
                if ("truncate", n) not in damages:
                    damages.append(("truncate", n))
            out.extend((rel, dmg) for dmg in damages)
    return out


def _damage(path, damage):
    kind, n = damage
    if kind == "flip":
        with open(path, "r+b") as f:
            f.seek(n)
            b = f.read(1)
            f.seek(n)
            f.write(bytes([b[0] ^ 0xFF]))
    else:
        os.truncate(path, n)


def _label(damage):
    if damage is None:
        return "no damage"
    kind, n = damage
    return "flip byte %d" % n if kind == "flip" else "truncate to %d" % n


def _run_case(src, work, rel, damage, result):
    d = os.path.join(work, "data")
    shutil.copytree(src, d, symlinks=True)
    if damage is not None:
        _damage(os.path.join(d, rel), damage)
    runs = [_call(["--data-dir", d] + argv) for _, argv in COMMANDS]
    with open(result + ".tmp", "w") as f:
        json.dump(runs, f)
    os.replace(result + ".tmp", result)
    shutil.rmtree(work, ignore_errors=True)


def _run_all(src, cases, tmp):
    """Run every case in a forked child, JOBS at a time. Returns, per case,
    the list of command runs or a string saying how the child died, and the
    CPU seconds the children took."""
    # what the commands import on use, imported once here rather than in
    # every child (asyncio and ssl for `id`, the engine's binding for `put`)
    import agent.core.wasm  # noqa: F401
    import agent.repair  # noqa: F401
    import agent.sync.commands  # noqa: F401
    results = [None] * len(cases)
    cpu = 0.0
    running = {}
    gc.freeze()  # the children's collections then leave the parent's pages shared
    todo = list(enumerate(cases))
    todo.reverse()
    while todo or running:
        while todo and len(running) < JOBS:
            i, (rel, damage) = todo.pop()
            work = os.path.join(tmp, "case%d" % i)
            result = work + ".json"
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    signal.signal(signal.SIGALRM, signal.SIG_DFL)
                    signal.alarm(CASE_TIMEOUT)
                    _run_case(src, work, rel, damage, result)
                    status = 0
                except BaseException:
                    with open(result + ".err", "w") as f:
                        f.write(traceback.format_exc())
                finally:
                    os._exit(status)
            running[pid] = (i, work, result)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        cpu += usage.ru_utime + usage.ru_stime
        i, work, result = running.pop(pid)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            with open(result) as f:
                results[i] = json.load(f)
            os.unlink(result)
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            results[i] = ("hung for %ds (killed by SIGALRM)" % CASE_TIMEOUT
                          if sig == signal.SIGALRM else
                          "the process died of %s" % signal.Signals(sig).name)
        else:
            try:
                with open(result + ".err") as f:
                    results[i] = "the test harness failed: " + f.read().strip().splitlines()[-1]
            except OSError:
                results[i] = "the child exited %r" % status
        shutil.rmtree(work, ignore_errors=True)
    gc.unfreeze()
    return results, cpu


# -- judging


def _names(err, rel):
    if rel in err:
        return True
    base = re.escape(os.path.basename(rel))
    return re.search(r"(?<![\w.])%s(?![\w])" % base, err) is not None


def _short(text, n=300):
    lines = [x for x in text.strip().splitlines() if x.strip()]
    s = " | ".join(lines[-2:])
    return s if len(s) <= n else s[:n] + "..."


def _scan_lines(out):
    try:
        return [json.loads(x) for x in out.splitlines()]
    except ValueError:
        return None


def _diff(got, want):
    """' (2 missing, 0 extra, 1 different: user:003, ...)' for two scans."""
    if got is None:
        return " (not JSON lines)"
    have = {r["key"]: r for r in got}
    need = {r["key"]: r for r in want}
    missing = sorted(set(need) - set(have))
    extra = sorted(set(have) - set(need))
    changed = sorted(k for k in set(need) & set(have) if need[k] != have[k])
    return " (%d missing, %d extra, %d different: %s)" % (
        len(missing), len(extra), len(changed), ", ".join((missing + extra + changed)[:4]))


def _judge(runs, rel, records, device_id):
    """The failures of one case, each (command, exit code, why, stderr or
    traceback), and whether every command exited 0."""
    fails = []
    put_ok = False
    with_new = sorted(records + [NEW_RECORD], key=lambda r: r["key"])
    for (name, _), (rc, out, err, tb) in zip(COMMANDS, runs):
        if tb is not None:
            fails.append((name, None, "traceback", _short(tb)))
            continue
        if rc == 0:
            wrong = None
            if name == "scan":
                got = _scan_lines(out)
                if got != records:
                    wrong = "wrong records" + _diff(got, records)
            elif name == "id":
                if out.strip() != device_id:
                    wrong = "a wrong id %r" % out.strip()[:60]
            elif name == "put":
                put_ok = True
            elif name == "scan again":
                got = _scan_lines(out)
                # a put refused after its change reached the log may show: either is right then
                if got != with_new and (put_ok or got != records):
                    wrong = "wrong records" + _diff(got, with_new if put_ok else records)
            elif name == "get":
                if out != GET_OUTPUT:
                    wrong = "wrong output %r" % out[:80]
            if wrong is not None:
                fails.append((name, rc, "WRONG DATA with exit 0: " + wrong, _short(err)))
            continue
        if rel is None:
            fails.append((name, rc, "fails on the undamaged copy", _short(err)))
            continue
        if rc == 1 and name == "get" and not put_ok:
            continue  # not found, and rightly: the put was refused
        why = []
        if rc == 1 and name == "get":
            why.append("MISSING DATA: not found after the put succeeded")
        if not _names(err, rel):
            why.append("does not name the file")
        if not any(h in err.lower() for h in HINTS):
            why.append("says nothing to do")
        if why:
            fails.append((name, rc, "; ".join(why), _short(err)))
    return fails, all(r[0] == 0 and r[3] is None for r in runs)


def test_every_damaged_file_is_repaired_or_refused_with_a_message(source):
    variant, path, records, device_id, base = source
    cases = _cases(path)
    t0 = time.monotonic()
    results, cpu = _run_all(path, [("(the undamaged directory)", None)] + cases, str(base))
    took = time.monotonic() - t0

    report = []
    repaired = refused = failed = 0
    baseline = results.pop(0)
    if isinstance(baseline, str):
        report.append(("(the undamaged directory)", None, "-", None, baseline, ""))
    else:
        report.extend(("(the undamaged directory)", None, name, rc, why, err)
                      for name, rc, why, err in _judge(baseline, None, records, device_id)[0])
    for (rel, damage), runs in zip(cases, results):
        if isinstance(runs, str):
            report.append((rel, damage, "-", None, runs, ""))
            failed += 1
            continue
        fails, all_ok = _judge(runs, rel, records, device_id)
        if fails:
            failed += 1
            report.extend((rel, damage, name, rc, why, err) for name, rc, why, err in fails)
        elif all_ok:
            repaired += 1
        else:
            refused += 1
    files = len({rel for rel, _ in cases})
    print("\n%s: %d cases over %d files (%d records), %.1f s (%.1f s CPU in %d jobs): "
          "%d right with exit 0 throughout, %d refused with a message, %d failing"
          % (variant, len(cases), files, len(records), took, cpu, JOBS, repaired, refused,
             failed))
    lines = []
    last = None
    for rel, damage, name, rc, why, err in report:
        if rel != last:
            lines.append(rel)
            last = rel
        lines.append("  %-17s %-10s exit %-4s %s" % (_label(damage), name, rc, why))
        if err:
            lines.append("      %s" % err)
    if report:
        pytest.fail("%s: %d of %d cases fail:\n%s" % (variant, failed, len(cases),
                                                     "\n".join(lines)), pytrace=False)


def test_a_kill_while_recovery_repairs_a_damaged_record_loses_nothing(tmp_path):
    """A writer's open that finds a record's slot damaged marks it for repair
    from the op log. Killed before that repair, the next open must still
    know the record is damaged: before, the mark was "no blob" in
    keys.tab, so the next open took the record for empty and replayed only
    the changes after the checkpoint into it, and everything older was gone
    (found by tests/test_crash.py's set check: 27 acked adds at once)."""
    import struct
    from agent.node import init_identity
    from agent.store.keyindex import ENTRY, HDR_SIZE, ESIZE
    from agent.store.arena import SIZE_CLASSES
    d = str(tmp_path / "d")
    init_identity(d)
    with Node(d) as n:
        for i in range(20):
            n.put("r", {"tags": Add("old%d" % i), "n": Inc(1), "f%d" % i: i})
        n.checkpoint()
        kid = n.store.find(b"r")
    pid = os.fork()
    if pid == 0:   # a writer that adds after the checkpoint, then dies: a dirty store
        try:
            n = Node(d)
            n.put("r", {"tags": Add("new"), "n": Inc(1)})
            n.log.commit()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    with open(os.path.join(d, "store", "keys.tab"), "rb") as f:
        f.seek(HDR_SIZE + kid * ESIZE)
        _, _, cls, _, slot, _ = ENTRY.unpack(f.read(ESIZE))
    with open(os.path.join(d, "store", "arena.%d" % SIZE_CLASSES[cls]), "r+b") as f:
        f.seek(slot * SIZE_CLASSES[cls] + 20)       # a flipped byte in the record's blob
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    pid = os.fork()
    if pid == 0:   # the next writer finds the damage and is killed before it repairs
        from agent.recovery import Recovery
        Recovery.repair = lambda self, kids: os._exit(0)
        try:
            Node(d)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    with Node(d) as n:
        got = n.get("r")
    assert got["n"] == 21 and sorted(got["tags"]) == sorted(["old%d" % i for i in range(20)]
                                                            + ["new"]), got
    assert all(got["f%d" % i] == i for i in range(20)), got
