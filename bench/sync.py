"""Sync: N ops (records x 5 fields) from one agent process to another over
TCP + TLS 1.3, beside loro and pycrdt exporting and importing the same ops
in-process, same run.

Agent A (a `serve` process on 127.0.0.1) holds the records; this process is
agent B: it opens an empty store, loads its engine, and the timed part is
one `sync` catch-up (connect, TLS, handshake, every batch merged into B's
store and op log, both sides idle). Bytes on the wire are what both sides
wrote to the socket (TLS record overhead excluded). Peers: the time of
export + import of the whole update into a fresh document.

Goals: sync time <= loro's export + import (i.e. ops/s >= loro's);
wire bytes <= 0.5x loro's update.
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

from bench.common import peer, REPO, emit, fig, median, parse_args, records, rows

clock = time.perf_counter


def ours(tmp, n, runs):
    from agent.node import Node, init_identity
    from agent.sync.commands import sync_once
    from agent.sync.identity import ensure_identity
    from agent.sync.peers import add_peer
    a = os.path.join(tmp, "a")
    init_identity(a)
    ida = ensure_identity(a)
    with Node(a) as node:
        for key, fields in records(n):
            node.put(key, fields)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    srv = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", a,
                            "--json", "serve", "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        addr = json.loads(srv.stdout.readline())["listening"]
        times, stats = [], None
        for r in range(runs):
            b = os.path.join(tmp, "b%d" % r)
            init_identity(b)
            idb = ensure_identity(b)
            add_peer(a, idb, "127.0.0.1:9")
            time.sleep(1.1)          # serve re-reads peers.json once a second
            add_peer(b, ida, addr)
            with Node(b) as node:
                engine = node.engine.name
                t = clock()
                s = asyncio.run(sync_once(node, b, idb, ida, addr))
                times.append(clock() - t)
                assert s.caught_up and s.stats["new"] == n, s.stats
                assert node.get(next(records(1))[0]) is not None
                stats = s.stats
            shutil.rmtree(b)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
    return engine, times, stats


def loro_peer(n, runs):
    from loro import ExportMode, LoroDoc, LoroMap
    a = LoroDoc()
    recs = a.get_map("records")
    for key, name, score, visits, site, active in rows(n):
        m = recs.get_or_create_container(key, LoroMap())
        m.insert("name", name)
        m.insert("score", score)
        m.insert("visits", visits)
        m.insert("site", site)
        m.insert("active", active)
    a.commit()
    times = []
    for _ in range(runs):
        t = clock()
        update = a.export(ExportMode.Updates(from_=LoroDoc().oplog_vv))
        b = LoroDoc()
        b.import_(update)
        times.append(clock() - t)
    assert len(b.get_map("records").get_deep_value()) == n
    return times, len(update)


def pycrdt_peer(n, runs):
    from pycrdt import Doc, Map
    a = Doc()
    recs = a.get("records", type=Map)
    with a.transaction():
        for key, name, score, visits, site, active in rows(n):
            recs[key] = Map({"name": name, "score": score, "visits": visits, "site": site,
                             "active": active})
    times = []
    for _ in range(runs):
        t = clock()
        update = a.get_update()
        b = Doc()
        b.apply_update(update)
        times.append(clock() - t)
    assert len(b.get("records", type=Map)) == n
    return times, len(update)


def main():
    args = parse_args(__doc__, 20_000, 2_000, runs=(int, "timed runs (default 3)"))
    runs = args.runs or 3
    n, ops = args.n, args.n * 5
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-sync-")
    try:
        engine, times, st = ours(tmp, n, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    t = median(times)
    wire = st["wire_out"] + st["wire_in"]
    figures = [fig("sync %d ops over TLS (median)" % ops, "ms", t * 1000),
               fig("sync rate", "ops/s", ops / t)]
    notes, raw = [], {"ours_s": times, "ours_stats": st}
    for name, fn, goals in (("loro", loro_peer, (("ratio", 1.0), ("ratio", 0.5))),
                            ("pycrdt", pycrdt_peer, (None, None))):
        got = peer(fn, n, runs)
        if isinstance(got, str):
            notes.append(got)
            continue
        pt, size = median(got[0]), got[1]
        raw[name + "_s"] = got[0]
        figures.append(fig("sync time vs %s export+import" % name, "ms", t * 1000, pt * 1000,
                           name, goals[0]))
        figures.append(fig("%s export+import rate" % name, "ops/s", ops / pt))
        figures.append(fig("bytes on the wire vs update", "bytes", wire, size, name, goals[1]))
    notes.append("ours: %d changes (one per put of 5 fields), %d raw change bytes (hashes "
                 "stripped) -> %d bytes on the wire" % (st["recv_changes"], st["raw_in"], wire))
    emit(args, {"benchmark": "sync", "records": n, "ops": ops, "runs": runs, "engine": engine,
                "figures": figures, "notes": notes, "raw": raw})


if __name__ == "__main__":
    main()
