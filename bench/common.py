"""Shared helpers for the benchmarks: the record set, percentiles, memory,
and the JSON each benchmark hands back to bench/run.py."""
import argparse
import json
import math
import os
import random
import resource
import sys

SITES = ["site-%02d" % i for i in range(50)]
FIELDS = ("name", "score", "visits", "site", "active")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows(n, seed=42):
    """n plain rows (key, name, score, visits, site, active), deterministic."""
    rng = random.Random(seed)
    for i in range(n):
        name = "user-%06d" % i
        yield name, name, rng.random() * 1000.0, 1, rng.choice(SITES), rng.random() < 0.5


def records(n, seed=42):
    """The same rows as Mycelium records: (key, fields) with visits an Inc."""
    from agent.values import Inc
    for key, name, score, visits, site, active in rows(n, seed):
        yield key, {"name": name, "score": score, "visits": Inc(visits),
                    "site": site, "active": active}


def rss() -> int:
    """Resident set size of this whole process, bytes. Read from /proc where
    it exists, so the measuring does not load psutil into what it measures."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil
        return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """Peak RSS so far, bytes: ru_maxrss (KiB on Linux), never below the current RSS."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(rss(), r if sys.platform == "darwin" else r * 1024)


def pct(samples, p):
    """Nearest-rank percentile of a list of numbers (p in 0..100)."""
    s = sorted(samples)
    if not s:
        return None
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(samples):
    s = sorted(samples)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def fig(metric, unit, ours, peer=None, peer_name=None, goal=None, note=None):
    """One reported figure. goal: None, ("ratio", max) meaning ours/peer <= max,
    ("abs", max) meaning ours <= max, or ("min", least) meaning ours >= least
    (absolute goals are reported, never fail the run)."""
    return {"metric": metric, "unit": unit, "ours": ours, "peer": peer,
            "peer_name": peer_name, "goal": list(goal) if goal else None, "note": note}


def parse_args(doc, full_n, quick_n, **extra):
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true", help="CI size (%d records)" % quick_n)
    ap.add_argument("--n", type=int, help="records (default %d, quick %d)" % (full_n, quick_n))
    ap.add_argument("--out", help="write the result JSON here (default: stdout)")
    for name, (typ, help_) in extra.items():
        ap.add_argument("--" + name.replace("_", "-"), type=typ, help=help_)
    a = ap.parse_args()
    if a.n is None:
        a.n = quick_n if a.quick else full_n
    return a


def emit(args, result):
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)


def run_json(argv):
    """Run a phase in a fresh interpreter; it prints one JSON object."""
    import subprocess
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-m"] + argv, cwd=REPO, env=env,
                         check=True, stdout=subprocess.PIPE).stdout
    return json.loads(out)


def peer(fn, *a):
    """Run a peer's measurement: (times, update bytes), or a message saying
    why the peer was skipped (its package is a bench-only dependency)."""
    try:
        return fn(*a)
    except ImportError as e:
        return "%s skipped: %s (pip install -r bench/requirements.txt)" % (fn.__name__[:-5], e)
