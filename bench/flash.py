"""Flash writes: bytes this process hands to storage per acknowledged change,
from the kernel's per-process counter (/proc/self/io, write_bytes), beside
SQLite in WAL mode writing the same rows, same run.

Workload: the sensor hub's steady state. 1,000 keys already exist; each
update is one put of a reading (lww float) and a counter increment.
Two paces:

- burst: updates as fast as they come (N of them);
- paced: one update every 110 ms (P of them), as a sensor writes: each
  lands in its own 100 ms flush, the worst case for a log.

Modes: relaxed (ours: the log fsyncs every 100 ms; SQLite:
synchronous=NORMAL, a commit per update) and durable (ours: --durable, an
fsync before each ack; SQLite: synchronous=FULL). The count covers the
updates and the close (checkpoint, SQLite's WAL checkpoint), divided by
the updates. Reads (`get` of every key) are measured too: they must write 0.

write_bytes counts pages when this process dirties them (buffered writes,
mmap stores), so a page rewritten after it was written back counts again:
that is what flash sees. The filesystem's journal (jbd2) is not counted, on
either side. On tmpfs every figure is 0: run it on the device's storage
(the benchmark uses a directory beside the repository, not /tmp).

Goal: in relaxed burst, at most 3x the change's raw bytes per change.
"""
import os
import shutil
import sqlite3
import tempfile
import time

from bench.common import REPO, emit, fig, parse_args

KEYS = 1000


def write_bytes() -> int:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _reading(i):
    return "sensor-%03d" % (i % KEYS), ((i * 2654435761) % 2 ** 32) / 2 ** 32 * 100.0


def _paced(n, pace):
    for i in range(n):
        if pace:
            time.sleep(pace)
        yield i


def ours(tmp, n, durable, pace):
    from agent.node import Node, init_identity
    from agent.values import Inc
    d = tempfile.mkdtemp(dir=tmp)
    init_identity(d)
    with Node(d) as node:
        for i in range(KEYS):
            node.put(_reading(i)[0], {"reading": 0.0, "count": Inc(1)})
    os.sync()
    with Node(d, durable=durable) as node:
        log0 = node.log.size()
        w0 = write_bytes()
        for i in _paced(n, pace):
            key, x = _reading(KEYS + i)
            node.put(key, {"reading": x, "count": Inc(1)})
        raw = (node.log.size() - log0) / n
    os.sync()
    w = write_bytes() - w0
    with Node(d) as node:
        r0 = write_bytes()
        for i in range(KEYS):
            node.get(_reading(i)[0])
        reads = write_bytes() - r0
    shutil.rmtree(d)
    return {"per_change": w / n, "raw_change": raw, "reads": reads}


def sqlite_peer(tmp, n, durable, pace):
    d = tempfile.mkdtemp(dir=tmp)
    path = os.path.join(d, "db.sqlite")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=%s" % ("FULL" if durable else "NORMAL"))
    db.execute("CREATE TABLE r (k TEXT PRIMARY KEY, reading REAL, count INTEGER)")
    db.execute("BEGIN")
    for i in range(KEYS):
        db.execute("INSERT INTO r VALUES (?, 0.0, 1)", (_reading(i)[0],))
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()
    w0 = write_bytes()
    for i in _paced(n, pace):
        key, x = _reading(KEYS + i)
        db.execute("UPDATE r SET reading = ?, count = count + 1 WHERE k = ?", (x, key))
    db.close()
    os.sync()
    w = write_bytes() - w0
    shutil.rmtree(d)
    return {"per_change": w / n}


def main():
    args = parse_args(__doc__, 20_000, 5_000, paced=(int, "paced updates (default 50, quick 20)"))
    n = args.n
    p = args.paced or (20 if args.quick else 50)
    tmp = tempfile.mkdtemp(prefix=".bench-flash-", dir=os.path.dirname(REPO))
    figs, raw = [], {}
    try:
        if write_bytes() < 0:
            emit(args, {"benchmark": "flash", "figures": [],
                        "notes": ["no /proc/self/io here: nothing measured"]})
            return
        for mode, durable in (("relaxed", False), ("durable", True)):
            for pace_name, count, pace in (("burst", n, 0.0), ("paced 110 ms", p, 0.11)):
                if durable and pace_name == "burst":
                    count = min(count, 2000)
                us = ours(tmp, count, durable, pace)
                sq = sqlite_peer(tmp, count, durable, pace)
                raw["%s %s" % (mode, pace_name)] = {"ours": us, "sqlite": sq, "n": count}
                goal = ("abs", 3 * us["raw_change"]) if (mode, pace_name) == (
                    "relaxed", "burst") else None
                figs.append(fig("bytes written per change, %s, %s (%d updates; raw change %d B)"
                                % (mode, pace_name, count, us["raw_change"]), "B",
                                us["per_change"], sq["per_change"], "SQLite WAL", goal))
        figs.append(fig("bytes written by 1,000 gets", "B",
                        raw["relaxed burst"]["ours"]["reads"], None, None, ("abs", 0)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(args, {"benchmark": "flash", "n": n, "figures": figs,
                "notes": ["write_bytes of /proc/self/io; the filesystem journal is not counted"],
                "raw": raw})


if __name__ == "__main__":
    main()
