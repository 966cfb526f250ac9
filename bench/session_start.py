"""Session start against history: a peer 10 changes behind, with 10K and with
1M changes of history in the log (100K in quick; no compaction, so the
whole history is there), as a sensor hub writes them (1,000 keys, one put
of a reading and a counter increment each).

Timed: what a session does before its first CHANGES frame, on the node's
side: find where to start reading the log for the peer's Known
(`Node.log_start_for`: the segments' per-actor index, then the blocks
within the segment) and read on to the 10 changes it lacks. Three cases,
each in a fresh process: the first session ever (the sealed segments'
indexes are built and written), the first after a restart (they are read
from disk), and later ones (median of 50, warm). Beside them, the same with
the start at the segment's beginning, as before blocks existed ("segment
start"). Goal (issue 10): the 1M figure within 2x of the 10K one.

    python -m bench.session_start [--quick] [--n N]
"""
import json
import os
import shutil
import sys
import tempfile
import time

from bench.common import REPO, emit, fig, median, parse_args, run_json

BEHIND = 10


def build(d, n):
    from agent.node import Node
    from agent.values import Inc
    t0 = time.perf_counter()
    with Node.open(d) as node:
        for i in range(n):
            node.put("sensor:%04d" % (i % 1000), {"t": (i * 7919 % 10007) / 100.0,
                                                   "n": Inc(1)})
    return {"build_s": round(time.perf_counter() - t0, 1)}


def _one(node, known, whole_segment):
    from agent.change import actor_seq
    t0 = time.perf_counter()
    start = node.log_start_for(known)
    if whole_segment:
        start = (start[0], 0)
    found = read = 0
    for _, raw in node.log.read(start):
        read += 1
        a, s = actor_seq(raw)
        if not known.has(a, s):
            found += 1
            if found == BEHIND:
                break
    return time.perf_counter() - t0, read, found


def measure(d, whole_segment):
    from agent.node import Node
    from agent.vector import Known
    with Node(d) as node:
        known = Known.from_runs({node.actor: [[1, node.seq - BEHIND]]})
        first, read, found = _one(node, known, whole_segment)
        warm = [_one(node, known, whole_segment)[0] for _ in range(50)]
        segs = len(node.log.segments)
        log_bytes = node.log.size()
    assert found == BEHIND, found
    return {"first_ms": first * 1e3, "warm_ms": median(warm) * 1e3, "entries_read": read,
            "segments": segs, "log_bytes": log_bytes}


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        phase, d = sys.argv[2], sys.argv[3]
        out = build(d, int(sys.argv[4])) if phase == "build" else \
            measure(d, phase == "segment")
        print(json.dumps(out))
        return
    args = parse_args(__doc__, 1_000_000, 100_000)
    sizes = (10_000, args.n)
    tmp = tempfile.mkdtemp(prefix=".bench-session-", dir=os.path.dirname(REPO))  # real disk
    raw, figs = {}, {}
    try:
        for n in sizes:
            d = os.path.join(tmp, "h%d" % n)
            b = run_json(["bench.session_start", "--phase", "build", d, str(n)])
            ever = run_json(["bench.session_start", "--phase", "blocks", d])     # builds .idx
            restart = run_json(["bench.session_start", "--phase", "blocks", d])
            seg = run_json(["bench.session_start", "--phase", "segment", d])
            raw[n] = {"build": b, "first_ever": ever, "after_restart": restart,
                      "segment_start": seg}
        lo, hi = raw[sizes[0]], raw[sizes[1]]
        out = []
        for case, key in (("first session ever", "first_ever"),
                          ("first session after a restart", "after_restart")):
            out.append(fig("%s, %s vs %s changes of history: ms" % (case, f"{sizes[1]:,}",
                                                                    f"{sizes[0]:,}"),
                           "ms", round(hi[key]["first_ms"], 2), round(lo[key]["first_ms"], 2),
                           "%s of history" % f"{sizes[0]:,}", ("ratio", 2.0)))
        out.append(fig("later sessions (warm), %s vs %s" % (f"{sizes[1]:,}", f"{sizes[0]:,}"),
                       "ms", round(hi["after_restart"]["warm_ms"], 3),
                       round(lo["after_restart"]["warm_ms"], 3), "%s of history" %
                       f"{sizes[0]:,}", ("ratio", 2.0)))
        out.append(fig("entries read before the 10 lacking ones, %s of history" %
                       f"{sizes[1]:,}", "entries", hi["after_restart"]["entries_read"],
                       hi["segment_start"]["entries_read"], "from the segment start"))
        out.append(fig("later sessions (warm), %s of history: ms" % f"{sizes[1]:,}", "ms",
                       round(hi["after_restart"]["warm_ms"], 3),
                       round(hi["segment_start"]["warm_ms"], 3), "from the segment start"))
        figs = out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(args, {"benchmark": "session_start", "n": args.n, "figures": figs, "raw": raw})


if __name__ == "__main__":
    main()
