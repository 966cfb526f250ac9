"""Merge: one remote change of 10K lww ops (2,000 records x 5 fields) into a
replica that already holds those records, beside loro and pycrdt doing the
same (one map per record, 5 fields) in the same run.

Node A writes the base records; replica B merges A's changes and is closed.
The 10K-op change is built by hand (agent.change.build_change with
agent.core.ops.lww ops, stamps from A's clock) so it is ONE change. Each
timed run merges it into a fresh copy of B's directory (copytree while closed).
Goal: merge <= 0.2x loro's import time. Also reported: the wasm core's
gzipped size (if built) and the engine that ran.
"""
import gzip
import os
import shutil
import tempfile
import time

from bench.common import peer, emit, fig, median, parse_args

FIELDS = ("name", "score", "n", "site", "active")
clock = time.perf_counter


def base_fields(i):
    return {"name": "user-%06d" % i, "score": i * 0.5, "n": i,
            "site": "site-%02d" % (i % 50), "active": i % 2 == 0}


def new_fields(i):
    return {"name": "renamed-%06d" % i, "score": i * 1.5, "n": i + 1,
            "site": "site-%02d" % ((i + 7) % 50), "active": i % 2 == 1}


def keys(n):
    return ["user-%06d" % i for i in range(n)]


def ours(tmp, n, runs):
    from agent.change import build_change
    from agent.core import ops as O
    from agent.node import Node
    a = Node.open(os.path.join(tmp, "a"))
    for i, k in enumerate(keys(n)):
        a.put(k, base_fields(i))
    b_dir = os.path.join(tmp, "b")
    b = Node.open(b_dir)
    b.merge_changes(list(a.changes_since({})))
    b.close()
    ops = bytearray()
    top = 0
    for i in range(n):
        stamp = top = a.clock.now()
        for fi, v in enumerate(new_fields(i).values()):
            O.lww(ops, i, fi, stamp, 0, v)
    raw = build_change(a.actor, a.seq + 1, top, keys(n), list(FIELDS), [a.actor],
                       n * len(FIELDS), ops)
    a.close()
    times = []
    for r in range(runs):
        d = os.path.join(tmp, "b%d" % r)
        shutil.copytree(b_dir, d)
        node = Node.open(d)
        engine = node.engine.name  # load the engine before timing
        t = clock()
        merged = node.merge_changes([raw])
        times.append(clock() - t)
        assert merged == 1 and node.get("user-000001") == new_fields(1)
        node.close()
        shutil.rmtree(d)
    return engine, times, len(raw)


def loro_peer(n, runs):
    from loro import ExportMode, LoroDoc, LoroMap
    a = LoroDoc()
    recs = a.get_map("records")
    maps = []
    for i, k in enumerate(keys(n)):
        m = recs.get_or_create_container(k, LoroMap())
        for f, v in base_fields(i).items():
            m.insert(f, v)
        maps.append(m)
    a.commit()
    base = a.export(ExportMode.Snapshot())
    vv = a.oplog_vv
    for i, m in enumerate(maps):
        for f, v in new_fields(i).items():
            m.insert(f, v)
    a.commit()
    update = a.export(ExportMode.Updates(from_=vv))
    times = []
    for _ in range(runs):
        b = LoroDoc()
        b.import_(base)
        t = clock()
        b.import_(update)
        times.append(clock() - t)
    assert b.get_map("records").get_deep_value()["user-000001"] == new_fields(1)
    return times, len(update)


def pycrdt_peer(n, runs):
    from pycrdt import Doc, Map
    a = Doc()
    recs = a.get("records", type=Map)
    with a.transaction():
        for i, k in enumerate(keys(n)):
            recs[k] = Map(base_fields(i))
    base = a.get_update()
    state = a.get_state()
    with a.transaction():
        for i, k in enumerate(keys(n)):
            m = recs[k]
            for f, v in new_fields(i).items():
                m[f] = v
    update = a.get_update(state)
    times = []
    for _ in range(runs):
        b = Doc()
        b.apply_update(base)
        t = clock()
        b.apply_update(update)
        times.append(clock() - t)
    assert b.get("records", type=Map)["user-000001"]["name"] == "renamed-000001"
    return times, len(update)


def wasm_gz_size():
    import agent.core
    path = os.path.join(os.path.dirname(agent.core.__file__), "crdt_core.wasm")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), 9))


def main():
    args = parse_args(__doc__, 2_000, 2_000, runs=(int, "timed runs (default 7, quick 3)"))
    runs = args.runs or (3 if args.quick else 7)
    n, ops = args.n, args.n * len(FIELDS)
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-")
    try:
        engine, times, size = ours(tmp, n, runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms = median(times) * 1000
    figures, notes, raw = [], [], {"ours_s": times}
    for name, fn, goal in (("loro", loro_peer, ("ratio", 0.2)), ("pycrdt", pycrdt_peer, None)):
        got = peer(fn, n, runs)
        if isinstance(got, str):
            notes.append(got)
            figures.append(fig("merge %d ops (median)" % ops, "ms", ms, None, name, goal, got))
            continue
        raw[name + "_s"] = got[0]
        figures.append(fig("merge %d ops (median)" % ops, "ms", ms, median(got[0]) * 1000,
                           name, goal))
        figures.append(fig("change / update size", "bytes", size, got[1], name))
    gz = wasm_gz_size()
    figures.append(fig("core module gzipped", "bytes", gz,
                       note=None if gz else "agent/core/crdt_core.wasm not built"))
    emit(args, {"benchmark": "merge", "records": n, "ops": ops, "runs": runs,
                "engine": engine, "figures": figures, "notes": notes, "raw": raw})


if __name__ == "__main__":
    main()
