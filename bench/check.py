"""The convergence check (`mycelium check PEER`, agent/sync/check.py):
two N-record replicas whose version vectors agree but which differ in 10
keys (updates lost from one store), over TCP+TLS to a real `serve` process.

  walk      one comparison, no repair: the TREE walk from the root to the
            10 keys (and nothing else timed), in one session already caught
            up, repeated; p50/p99, round trips and bytes both ways.
  first     the first walk after serve starts: serve builds its digest tree
            from its store then (the tree lives in memory).
  repair    one check with repair: the walk, the records both ways, both
            sides' join and snapshot, the confirming walk.
  peer      what comparing every record would send instead: each key and its
            16-byte digest, once (the bytes of a flat digest list).

Goals (issue 11): told apart in at most 20 round trips and 64 KB, p99 at
most 10 ms; the seed's consensus SLA is p99 < 100 ms.
"""
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bench.common import REPO, emit, fig, parse_args, pct, records

LOST = 10


def build(tmp, n):
    """a (n records) and b (caught up from a, in process) with LOST of a's
    last updates missing from b's store; both closed."""
    from agent.node import Node, init_identity
    from agent.sync.session import Session
    from agent.sync.transport import settle
    from agent.values import is_visible
    a_dir, b_dir = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    for d in (a_dir, b_dir):
        init_identity(d)
    a, b = Node(a_dir, durable=False), Node(b_dir, durable=False)
    for key, rec in records(n):
        a.put(key, rec)

    def catch_up():
        sa, sb = Session(a, "dev-a", "dev-b"), Session(b, "dev-b", "dev-a")
        sa.start()
        sb.start()
        while not (sa.caught_up and sb.caught_up):
            moved = False
            for s, o in ((sa, sb), (sb, sa)):
                s.pump()
                data = s.data_to_send()
                if data:
                    settle(o, data)
                    moved = True
            if not moved:
                break

    catch_up()
    lost = ["user-%06d" % (i * (n // LOST)) for i in range(LOST)]
    old = {k: bytes(b.store.load(k)) for k in lost}
    for k in lost:
        a.put(k, {"score": -1.0})
    catch_up()
    assert a.vv == b.vv
    for k, blob in old.items():
        b.store.save(k, blob, is_visible(blob))
    a.close()
    b.close()
    return a_dir, b_dir, lost


def serve(a_dir, b_dir):
    import json
    from agent.sync.devid import display_id
    from agent.sync.identity import ensure_identity
    env = dict(os.environ, PYTHONPATH=REPO)
    run = lambda d, *a: subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *a],
                                       env=env, check=True, capture_output=True)
    ida, idb = display_id(ensure_identity(a_dir)), display_id(ensure_identity(b_dir))
    run(a_dir, "peer", "add", idb, "--name", "b")
    p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", a_dir, "--json",
                          "serve", "--listen", "127.0.0.1:0"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    addr = json.loads(p.stdout.readline())["listening"]
    run(b_dir, "peer", "add", ida, addr, "--name", "a")
    return p, ida, addr


async def _session(b_dir, ida, addr):
    from agent.node import Node
    from agent.sync import peers as P
    from agent.sync.devid import stored_id
    from agent.sync.identity import ensure_identity
    from agent.sync.session import Session
    from agent.sync.transport import client_context, connect, settle
    node = Node(b_dir, durable=False)
    host, port = P.parse_addr(addr)
    reader, writer = await connect(host, port, client_context(b_dir), stored_id(ida))
    s = Session(node, ensure_identity(b_dir), stored_id(ida))
    s.start()

    async def step():
        data = s.data_to_send()
        if data:
            writer.write(data)
            await writer.drain()
        got = await reader.read(1 << 18)
        if not got:
            raise RuntimeError("serve closed the session: %s" % s.error)
        settle(s, got)
        s.pump()
        if s.closed:
            raise RuntimeError("session closed: %s" % s.error)

    while not s.caught_up:
        s.pump()
        await step()
    return node, s, writer, step


async def measure(b_dir, ida, addr, walks):
    from agent.history.digests import digests_of
    from agent.sync.check import Compare
    node, s, writer, step = await _session(b_dir, ida, addr)
    t = time.perf_counter_ns()
    digests_of(node.store)
    local_build = time.perf_counter_ns() - t
    out = {"local_build_ns": local_build, "walks": []}

    async def one(repair):
        c = s.compare = Compare(s, repair)
        t0 = time.perf_counter_ns()
        c.start()
        while not c.done:
            await step()
        ns = time.perf_counter_ns() - t0
        s.compare = None
        return ns, c.report()

    out["first"] = await one(False)
    for _ in range(walks):
        out["walks"].append(await one(False))
    out["repair"] = await one(True)
    out["after"] = await one(False)
    keys = node.store.keys
    out["flat_bytes"] = sum(len(keys.key(k)) + 16 for k in range(keys.n))
    s.close()
    data = s.data_to_send()
    writer.write(data)
    writer.close()
    node.close()
    return out


def main():
    args = parse_args(__doc__, 100_000, 10_000)
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-check-")
    p = None
    try:
        t = time.monotonic()
        a_dir, b_dir, lost = build(tmp, args.n)
        setup = time.monotonic() - t
        p, ida, addr = serve(a_dir, b_dir)
        got = asyncio.run(measure(b_dir, ida, addr, 50 if args.quick else 300))
    finally:
        if p is not None:
            p.send_signal(signal.SIGTERM)
            p.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)
    walks = got["walks"]
    times = [ns for ns, _ in walks]
    rep = walks[0][1]
    assert all(r["differ"] == sorted(lost) for _, r in walks), walks[0]
    first_ns, first = got["first"]
    repair_ns, repair = got["repair"]
    after = got["after"][1]
    ms = lambda ns: ns / 1e6
    figures = [
        fig("check walk p99, %d records, %d differ" % (args.n, LOST), "ms", ms(pct(times, 99)),
            100.0, "seed consensus SLA", ("abs", 10.0),
            "p50 %.2f ms, %d walks, each finding the %d keys" % (ms(pct(times, 50)), len(times),
                                                                 LOST)),
        fig("check walk round trips", "round trips", rep["round_trips"], None, None,
            ("abs", 20)),
        fig("check walk bytes (both ways)", "bytes", rep["wire_bytes"], got["flat_bytes"],
            "every key and digest once", ("abs", 64 << 10)),
        fig("first walk after serve starts (serve builds its tree)", "ms", ms(first_ns)),
        fig("tree build on this side, %d records" % args.n, "ms", ms(got["local_build_ns"]),
            note="%.1f us a record" % (got["local_build_ns"] / 1e3 / args.n)),
        fig("check with repair (walk, records both ways, joins and snapshots, confirming walk)",
            "ms", ms(repair_ns), note="%d round trips, %d bytes; repaired here %d, agree %s; "
            "the next walk found %d" % (repair["round_trips"], repair["wire_bytes"],
                                        len(repair["repaired_here"]), repair["agree"],
                                        len(after["differ"]))),
    ]
    notes = ["setup (two replicas built and caught up in process) %.1f s" % setup,
             "the walk asks for the 16 children of each differing node, level by level "
             "(root, 16, 256, 4,096 leaves), then the (key, digest) entries of the differing "
             "leaves"]
    assert repair["agree"] and not after["differ"], (repair, after)
    emit(args, {"benchmark": "check", "n": args.n, "figures": figures, "notes": notes,
                "raw": {"walk_ns": times, "first_ns": first_ns, "repair_ns": repair_ns,
                        "first": first, "repair": repair}})


if __name__ == "__main__":
    main()
