"""Local latency: put (relaxed and durable) and get on a store of N records,
beside SQLite (prepared statements) in the same process and run.

  relaxed put  N new five-field records, timed one by one
  read         N gets of random existing keys
  durable put  D more records with durable=True (each put fsyncs)
SQLite peer: a file database in a temp dir; relaxed = one open transaction
(autocommit off), durable = autocommit with WAL + synchronous=FULL.
Goals (reported, never fail the run): relaxed put p99 <= 20 us, get p99 <= 5 us.
If the put goal misses, the top of a cProfile of 1,000 puts is reported.
"""
import cProfile
import os
import pstats
import random
import shutil
import sqlite3
import tempfile
import time

from bench.common import emit, fig, parse_args, pct, records, rows

clock = time.perf_counter_ns
PUT_GOAL_US, GET_GOAL_US = 20.0, 5.0


def time_each(fn, items):
    out = []
    for it in items:
        t = clock()
        fn(*it)
        out.append(clock() - t)
    return out


def ours(d, n, n_durable, keys):
    from agent.node import Node
    node = Node.open(d)
    engine = node.engine.name  # load the engine before timing
    recs = list(records(n + n_durable))
    put = time_each(node.put, recs[:n])
    get = time_each(node.get, [(k,) for k in keys])
    prof = None
    if pct(put, 99) / 1000 > PUT_GOAL_US:
        prof = profile_puts(node, n)
    node.close()
    node = Node.open(d, durable=True)
    durable = time_each(node.put, recs[n:])
    node.close()
    return engine, put, get, durable, prof


def profile_puts(node, n, count=1000):
    """Top entries (by own time) of cProfile over `count` puts of new
    records, like the timed ones, as microseconds per put."""
    recs = [("prof-%06d" % i, f) for i, (_, f) in enumerate(records(count, seed=7))]
    p = cProfile.Profile()
    p.enable()
    for k, f in recs:
        node.put(k, f)
    p.disable()
    st = pstats.Stats(p)
    out = {"puts": count, "total_us_per_put": st.total_tt / count * 1e6}
    for order, col in (("top", 2), ("top_cum", 3)):  # by own time, by cumulative time
        out[order] = []
        for (file, line, func), (cc, nc, tt, ct, _) in sorted(
                st.stats.items(), key=lambda kv: -kv[1][col])[:15]:
            where = os.path.relpath(file) if file.startswith("/") else file
            out[order].append({"func": "%s:%d(%s)" % (where, line, func),
                               "calls_per_put": nc / count, "own_us_per_put": tt / count * 1e6,
                               "cum_us_per_put": ct / count * 1e6})
    return out


def sqlite_peer(d, n, n_durable, keys):
    data = list(rows(n + n_durable))
    schema = ("CREATE TABLE r (k TEXT PRIMARY KEY, name TEXT, score REAL,"
              " visits INTEGER, site TEXT, active INTEGER)")
    ins = "INSERT INTO r VALUES (?, ?, ?, ?, ?, ?)"
    path = os.path.join(d, "peer.sqlite")
    con = sqlite3.connect(path)  # default isolation: inserts share one transaction
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(schema)
    con.commit()
    put = time_each(lambda *r: con.execute(ins, r), data[:n])
    con.commit()
    sel = "SELECT name, score, visits, site, active FROM r WHERE k = ?"
    get = time_each(lambda k: con.execute(sel, (k,)).fetchone(), [(k,) for k in keys])
    con.close()
    con = sqlite3.connect(path, isolation_level=None)  # autocommit: a commit per insert
    con.execute("PRAGMA synchronous=FULL")
    durable = time_each(lambda *r: con.execute(ins, r), data[n:])
    con.close()
    return put, get, durable


def main():
    args = parse_args(__doc__, 100_000, 10_000,
                      durable=(int, "durable puts (default 2000, quick 500)"))
    n = args.n
    n_durable = args.durable or (500 if args.quick else 2000)
    rng = random.Random(1)
    keys = ["user-%06d" % rng.randrange(n) for _ in range(n)]
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-")
    try:
        engine, put, get, durable, prof = ours(os.path.join(tmp, "node"), n, n_durable, keys)
        s_put, s_get, s_durable = sqlite_peer(tmp, n, n_durable, keys)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    us = lambda s, p: pct(s, p) / 1000.0
    peer = "sqlite"
    figures = [
        fig("put p50 (relaxed)", "us", us(put, 50), us(s_put, 50), peer),
        fig("put p99 (relaxed)", "us", us(put, 99), us(s_put, 99), peer, goal=("abs", PUT_GOAL_US)),
        fig("get p50", "us", us(get, 50), us(s_get, 50), peer),
        fig("get p99", "us", us(get, 99), us(s_get, 99), peer, goal=("abs", GET_GOAL_US)),
        fig("put p50 (durable)", "us", us(durable, 50), us(s_durable, 50), peer),
        fig("put p99 (durable)", "us", us(durable, 99), us(s_durable, 99), peer),
    ]
    extra = {name: {"n": len(s), "max_us": max(s) / 1000, "p999_us": us(s, 99.9),
                    "mean_us": sum(s) / len(s) / 1000}
             for name, s in (("put", put), ("get", get), ("durable_put", durable),
                             ("sqlite_put", s_put), ("sqlite_get", s_get),
                             ("sqlite_durable_put", s_durable))}
    emit(args, {"benchmark": "latency", "n": n, "durable_n": n_durable, "engine": engine,
                "sqlite_version": sqlite3.sqlite_version, "figures": figures,
                "raw": extra, "profile": prof})


if __name__ == "__main__":
    main()
