"""Bounded history: the sensor-hub workload (N updates spread over 1,000
keys, one put per reading, as a device writes them), then compaction, then a
brand-new device catching up, beside loro in the same run.

Ours: a Node writes every update; `compact()` writes the snapshot and drops
the log; a `serve` process then holds the compacted store and a new device
(this process, an empty store) runs one `sync` catch-up over TCP + TLS 1.3:
it receives the snapshot, absorbs it, then the tail. Reported: the disk
before and after compaction (store files, log, snapshot), the compaction's
time, the catch-up's time and bytes on the wire, and the new device's log.

loro: a LoroMap per key, insert then commit per update; its full snapshot
and its shallow snapshot at the current frontier, and the time of a shallow
export + import into a fresh document (what a new peer costs in loro).

Goals: snapshot bytes <= 4x loro's shallow snapshot (ours carries the CRDT
metadata of every field: stamps, actors, counters' per-actor totals); the
catch-up's wire bytes grow with the live state, not with N (reported for
two N in --quick: the ratio of wire bytes is near 1, not near 10).
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.common import REPO, emit, fig, parse_args, peer

clock = time.perf_counter
KEYS = 1000


def _reading(i):
    """Update i: its key and a reading with full float entropy (so that zstd
    cannot fold the values away; a real sensor's noise is no kinder)."""
    return "sensor-%03d" % (i % KEYS), ((i * 2654435761) % 2 ** 32) / 2 ** 32 * 100.0


def _dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def ours(tmp, n):
    from agent.node import Node, init_identity
    from agent.sync.commands import sync_once
    from agent.sync.identity import ensure_identity
    from agent.sync.peers import add_peer
    from agent.values import Inc
    a = os.path.join(tmp, "a")
    init_identity(a)
    ida = ensure_identity(a)
    out = {}
    with Node(a) as node:
        t = clock()
        for i in range(n):
            key, x = _reading(i)
            node.put(key, {"reading": x, "count": Inc(1)})
        out["put_s"] = clock() - t
        node.log.commit()
        st = node.stats()
        out["before"] = {"store": st["store_file_bytes"], "log": st["log_bytes"],
                         "dir": _dir_bytes(a)}
        c = node.compact()
        st = node.stats()
        out["compact_s"] = c["seconds"]
        out["after"] = {"store": st["store_file_bytes"], "log": st["log_bytes"],
                        "snapshot": st["snapshot_bytes"], "dir": _dir_bytes(a)}
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    b = os.path.join(tmp, "b")
    init_identity(b)
    idb = ensure_identity(b)
    add_peer(a, idb, "127.0.0.1:9")
    srv = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", a,
                            "--json", "serve", "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        addr = json.loads(srv.stdout.readline())["listening"]
        add_peer(b, ida, addr)
        with Node(b) as node:
            t = clock()
            s = asyncio.run(sync_once(node, b, idb, ida, addr))
            out["catchup_s"] = clock() - t
            assert s.caught_up, s.stats
            key, _ = _reading(n - 1)
            got = node.get(key)
            assert got is not None and got["count"] == (n - 1) // KEYS + 1, got
            out["wire"] = s.stats["wire_out"] + s.stats["wire_in"]
            out["snapshot_in"] = s.stats.get("snap_in")
            out["new_device_log"] = node.log.size()
        out["new_device_dir"] = _dir_bytes(b)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
    return out


def loro_peer(n):
    from loro import ExportMode, LoroDoc, LoroMap
    doc = LoroDoc()
    recs = doc.get_map("records")
    t = clock()
    for i in range(n):
        key, x = _reading(i)
        m = recs.get_or_create_container(key, LoroMap())
        m.insert("reading", x)
        m.insert("count", i // KEYS + 1)     # loro's map holds the total as a value
        doc.commit()
    put_s = clock() - t
    full = doc.export(ExportMode.Snapshot())
    t = clock()
    shallow = doc.export(ExportMode.ShallowSnapshot(doc.oplog_frontiers))
    fresh = LoroDoc()
    fresh.import_(shallow)
    catch = clock() - t
    assert len(fresh.get_map("records").get_deep_value()) == min(n, KEYS)
    return {"put_s": put_s, "full": len(full), "shallow": len(shallow), "catchup_s": catch}


def main():
    args = parse_args(__doc__, 200_000, 20_000)
    n = args.n
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-history-")
    try:
        us = ours(tmp, n)
        shutil.rmtree(tmp)
        os.makedirs(tmp)
        small = ours(tmp, n // 10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo = peer(loro_peer, n)
    L = lo if isinstance(lo, dict) else {}
    b, a = us["before"], us["after"]
    figs = [
        fig("log before compaction", "B", b["log"], L.get("full"), "loro full snapshot"),
        fig("data dir before compaction (store files + log)", "B", b["dir"]),
        fig("snapshot", "B", a["snapshot"], L.get("shallow"), "loro shallow snapshot",
            ("ratio", 4.0)),
        fig("log after compaction", "B", a["log"]),
        fig("data dir after compaction (store files + log + snapshot)", "B", a["dir"]),
        fig("compaction time", "ms", us["compact_s"] * 1000),
        fig("new device catch-up over TLS", "ms", us["catchup_s"] * 1000,
            L["catchup_s"] * 1000 if L else None, "loro shallow export+import"),
        fig("new device catch-up, bytes on the wire", "B", us["wire"], L.get("shallow"),
            "loro shallow snapshot"),
        fig("wire bytes at N vs at N/10 (grows with live state, not history)", "x",
            us["wire"] / small["wire"], 10.0, "history ratio N : N/10"),
        fig("new device's log after catch-up", "B", us["new_device_log"]),
        fig("put (mean, all updates)", "us", us["put_s"] / n * 1e6,
            L["put_s"] / n * 1e6 if L else None, "loro insert + commit"),
    ]
    notes = [lo] if isinstance(lo, str) else []
    notes.append("%d updates to %d keys, fields reading (lww) and count (counter)" % (n, KEYS))
    emit(args, {"benchmark": "history", "n": n, "figures": figs, "notes": notes,
                "raw": {"ours": us, "ours_tenth": small, "loro": lo}})


if __name__ == "__main__":
    main()
