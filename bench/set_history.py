"""Set history: N add/remove pairs of ever-new elements on one set field of
one record, written as a device writes them (one put per add, one per
remove), against loro (a LoroMap, insert then delete per key, a commit
each) and pycrdt (a Map, set then pop per key, a transaction each) in the
same run.

Reports what the record costs once the set is empty again: our record blob
(what the store keeps) and log; loro's full and shallow snapshots; pycrdt's
full update. Goal: the record is of constant size (docs/SEMANTICS.md, "Sets:
the causal context"); before 0.3 each pair left about 29 bytes for good.
"""
import os
import shutil
import tempfile
import time

from bench.common import emit, fig, parse_args, peer

clock = time.perf_counter


def ours(tmp, n):
    from agent.node import Node, init_identity
    from agent.values import Add, Remove
    d = os.path.join(tmp, "a")
    init_identity(d)
    sizes = {}
    with Node(d) as node:
        t0 = clock()
        for i in range(1, n + 1):
            e = "element-%07d" % i
            node.put("s", {"tags": Add(e)})
            node.put("s", {"tags": Remove(e)})
            if i in (n // 100 or 1, n // 10 or 1, n):
                sizes[i] = len(node._blob("s") or b"")
        dt = clock() - t0
        st = node.stats()
        assert node.get("s") is None
    return {"record_bytes": sizes, "log_bytes": st["log_bytes"], "put_us": dt / (2 * n) * 1e6}


def loro_peer(n):
    import loro
    doc = loro.LoroDoc()
    m = doc.get_map("s")
    t0 = clock()
    for i in range(1, n + 1):
        e = "element-%07d" % i
        m.insert(e, True)
        doc.commit()
        m.delete(e)
        doc.commit()
    dt = clock() - t0
    full = doc.export(loro.ExportMode.Snapshot())
    shallow = doc.export(loro.ExportMode.ShallowSnapshot(doc.oplog_frontiers))
    return {"snapshot": len(full), "shallow": len(shallow), "op_us": dt / (2 * n) * 1e6}


def pycrdt_peer(n):
    import pycrdt
    doc = pycrdt.Doc()
    m = doc.get("s", type=pycrdt.Map)
    t0 = clock()
    for i in range(1, n + 1):
        e = "element-%07d" % i
        with doc.transaction():
            m[e] = True
        with doc.transaction():
            del m[e]
    dt = clock() - t0
    return {"update": len(doc.get_update()), "op_us": dt / (2 * n) * 1e6}


def main():
    args = parse_args(__doc__, 100_000, 10_000)
    n = args.n
    tmp = tempfile.mkdtemp(prefix="myc-bench-sets-")
    try:
        us = ours(tmp, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lo = peer(loro_peer, n)
    py = peer(pycrdt_peer, n)
    sizes = us["record_bytes"]
    first, last = min(sizes), max(sizes)
    figs = [
        fig("record bytes after %d pairs (after %d: %d)" % (last, first, sizes[first]), "B",
            sizes[last], lo["shallow"] if isinstance(lo, dict) else None,
            "loro shallow snapshot", ("ratio", 1.0),
            note="constant: %s" % (sizes[last] == sizes[first])),
        fig("log bytes per pair", "B", us["log_bytes"] / n),
        fig("put (add or remove) mean", "us", us["put_us"],
            lo["op_us"] if isinstance(lo, dict) else None, "loro insert/delete + commit"),
    ]
    if isinstance(lo, dict):
        figs.append(fig("loro full snapshot", "B", lo["snapshot"]))
    if isinstance(py, dict):
        figs.append(fig("pycrdt full update", "B", py["update"]))
        figs.append(fig("pycrdt set/del + transaction mean", "us", py["op_us"]))
    emit(args, {"benchmark": "set_history", "n": n, "figures": figs,
                "raw": {"ours": us, "loro": lo, "pycrdt": py}})


if __name__ == "__main__":
    main()
