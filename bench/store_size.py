"""Store size: N five-field records in a fresh Node (relaxed mode, one put
per record) against SQLite :memory: holding the same rows, in the same run.

Each phase runs in its own fresh interpreter so its RSS is its own:
  write   open a fresh Node, put N records, report bytes and RSS
  reopen  open that directory again, count, get a few records, report RSS
  sqlite  build the same rows in :memory:, report page bytes and RSS
Goal: data bytes <= 2x SQLite's in-memory footprint (text-key table).
"""
import os
import shutil
import sys
import tempfile

from bench.common import (emit, fig, parse_args, peak_rss, records, rows, rss,
                          run_json)

SCHEMAS = {
    # like-for-like: records are looked up by their string key
    "text_key": "CREATE TABLE r (k TEXT PRIMARY KEY, name TEXT, score REAL,"
                " visits INTEGER, site TEXT, active INTEGER)",
    # the smallest table SQLite can hold these rows in (no key string)
    "int_key": "CREATE TABLE r (k INTEGER PRIMARY KEY, name TEXT, score REAL,"
               " visits INTEGER, site TEXT, active INTEGER)",
}


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f))
               for d, _, fs in os.walk(path) for f in fs)


def phase_write(data_dir, n):
    from agent.node import Node
    base = rss()
    node = Node.open(data_dir)
    for key, fields in records(n):
        node.put(key, fields)
    st = node.stats()
    out = {"rss_base": base, "rss": rss(), "peak": peak_rss(), "engine": node.engine.name,
           "data_bytes": st["data_bytes"], "store_file_bytes": st["store_file_bytes"],
           "log_bytes": st["log_bytes"], "records": st["records"]}
    node.close()
    out["dir_bytes"] = dir_bytes(data_dir)
    out["store_dir_bytes"] = dir_bytes(os.path.join(data_dir, "store"))
    return out


def phase_reopen(data_dir, n):
    from agent.node import Node
    base = rss()
    node = Node.open(data_dir)
    count = node.count()
    for i in (0, n // 3, n // 2, n - 1):
        assert node.get("user-%06d" % i) is not None
    out = {"rss_base": base, "rss": rss(), "peak": peak_rss(), "count": count,
           "replayed": node.replayed}
    # then load the core and use it: a local write and a merged remote change
    import random
    from agent.node import init_identity
    engine = node.engine.name
    node.put("user-000000", {"score": 1.0})
    other_dir = data_dir + "-peer"
    init_identity(other_dir)
    with Node(other_dir) as other:
        other.put("user-000001", {"score": 2.0})
        change = list(other.changes_since({}))
    node.merge_changes(change)
    rnd = random.Random(1)
    for _ in range(1000):
        node.get("user-%06d" % rnd.randrange(n))
    out.update(rss_core=rss(), peak_core=peak_rss(), engine=engine)
    node.close()
    return out


def phase_sqlite(schema, n):
    import sqlite3
    base = rss()
    con = sqlite3.connect(":memory:")
    con.execute(SCHEMAS[schema])
    ins = "INSERT INTO r VALUES (?, ?, ?, ?, ?, ?)"
    if schema == "int_key":
        con.executemany(ins, ((i,) + r[1:] for i, r in enumerate(rows(n))))
    else:
        con.executemany(ins, rows(n))
    con.commit()
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    size = con.execute("PRAGMA page_size").fetchone()[0]
    return {"rss_base": base, "rss": rss(), "peak": peak_rss(), "bytes": pages * size,
            "sqlite_version": sqlite3.sqlite_version}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        _, _, phase, arg, n = sys.argv
        fn = {"write": phase_write, "reopen": phase_reopen, "sqlite": phase_sqlite}[phase]
        emit(type("A", (), {"out": None}), fn(arg, int(n)))
        return
    args = parse_args(__doc__, 100_000, 10_000)
    n = str(args.n)
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-")
    try:
        d = os.path.join(tmp, "node")
        w = run_json(["bench.store_size", "--phase", "write", d, n])
        r = run_json(["bench.store_size", "--phase", "reopen", d, n])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sq = run_json(["bench.store_size", "--phase", "sqlite", "text_key", n])
    sqi = run_json(["bench.store_size", "--phase", "sqlite", "int_key", n])
    peer = "sqlite :memory:"
    figures = [
        fig("data bytes (vs text-key table)", "bytes", w["data_bytes"], sq["bytes"], peer,
            goal=("ratio", 2.0)),
        fig("data bytes (vs int-key table)", "bytes", w["data_bytes"], sqi["bytes"], peer),
        fig("data bytes per record", "bytes", w["data_bytes"] / args.n,
            sq["bytes"] / args.n, peer),
        fig("store files on disk", "bytes", w["store_dir_bytes"], sq["bytes"], peer),
        fig("op log on disk", "bytes", w["log_bytes"]),
        fig("RSS after writing (process)", "bytes", w["rss"], sq["rss"], peer),
        fig("RSS growth while writing", "bytes", w["rss"] - w["rss_base"],
            sq["rss"] - sq["rss_base"], peer),
        fig("peak RSS while writing", "bytes", w["peak"], sq["peak"], peer),
        fig("RSS after reopen (process)", "bytes", r["rss"], sq["rss"], peer,
            note="open + count + 4 gets"),
        fig("RSS growth on reopen", "bytes", r["rss"] - r["rss_base"],
            sq["rss"] - sq["rss_base"], peer),
        fig("RSS with the records and the core loaded", "bytes", r["rss_core"],
            goal=("abs", 35 * 1024 * 1024),
            note="reopen, %s core loaded, a write, a merge, 1,000 gets" % r["engine"]),
    ]
    emit(args, {"benchmark": "store_size", "n": args.n, "engine": w["engine"],
                "figures": figures,
                "raw": {"write": w, "reopen": r, "sqlite_text_key": sq, "sqlite_int_key": sqi}})


if __name__ == "__main__":
    main()
