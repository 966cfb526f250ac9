"""Run the benchmark suite: each benchmark in its own fresh interpreter,
then print one table and write bench/results.json.

    python -m bench.run            # full: 100K records
    python -m bench.run --quick    # CI: 10K records, fewer iterations

Benchmarks measure; they do not assert timings. In --quick mode the exit
status is 1 only when a ratio goal against a peer measured in this same
run misses; absolute goals (microseconds) are reported, never enforced.
A benchmark that crashes makes the exit status 2 in either mode.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ("store_size", "latency", "merge", "sync", "set_history", "history", "flash",
              "session_start", "observe", "check", "relay", "services")


def machine():
    freq = psutil.cpu_freq()
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpus": psutil.cpu_count(),
            "physical_cpus": psutil.cpu_count(logical=False),
            "cpu_mhz_max": freq.max if freq else None,
            "memory_bytes": psutil.virtual_memory().total,
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True).stdout.strip() or None
    except OSError:
        return None


def run_one(name, quick):
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "bench." + name, "--out", out] + (["--quick"] if quick else [])
    try:
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if p.returncode:
            return {"benchmark": name, "error": p.stderr.strip()[-2000:], "figures": []}
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def judge(f):
    """Add ratio and status (pass, miss, n/a, '') to a figure."""
    ours, peer, goal = f["ours"], f["peer"], f["goal"]
    f["ratio"] = ours / peer if ours is not None and peer else None
    if not goal:
        f["status"] = ""
    elif goal[0] == "ratio":
        f["status"] = "n/a" if f["ratio"] is None else ("pass" if f["ratio"] <= goal[1] else "miss")
    elif goal[0] == "min":
        f["status"] = "n/a" if ours is None else ("pass" if ours >= goal[1] else "miss")
    else:
        f["status"] = "n/a" if ours is None else ("pass" if ours <= goal[1] else "miss")
    return f


def show(v, unit):
    if v is None:
        return "-"
    if unit == "bytes":
        for div, suffix in ((1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(v) >= div:
                return "%.2f %s" % (v / div, suffix)
        return "%.0f B" % v
    return "%.2f %s" % (v, "µs" if unit == "us" else unit)


def goal_text(f):
    g = f["goal"]
    if not g:
        return ""
    if g[0] == "ratio":
        return "≤ %gx %s" % (g[1], f["peer_name"])
    if g[0] == "min":
        return "≥ " + show(g[1], f["unit"])
    return "≤ " + show(g[1], f["unit"])


def table(results):
    head = ("benchmark", "metric", "ours", "peer", "ratio", "goal", "result")
    lines = [head]
    for r in results:
        for f in r["figures"]:
            peer = show(f["peer"], f["unit"])
            if f["peer"] is not None:
                peer += " (%s)" % f["peer_name"]
            lines.append((r["benchmark"], f["metric"], show(f["ours"], f["unit"]), peer,
                          "%.2fx" % f["ratio"] if f["ratio"] is not None else "-",
                          goal_text(f), f["status"]))
    widths = [max(len(l[i]) for l in lines) for i in range(len(head))]
    fmt = lambda l: "  ".join(c.ljust(w) for c, w in zip(l, widths)).rstrip()
    return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines[1:]])


def print_profile(prof):
    print("\nput p99 missed its goal; cProfile of %d puts (%.1f µs/put under the profiler)"
          % (prof["puts"], prof["total_us_per_put"]))
    for order, title in (("top", "own time"), ("top_cum", "cumulative time")):
        print("top by %s:" % title)
        for t in prof[order]:
            print("  %7.2f µs own  %7.2f µs cum  %6.1f calls  %s" % (
                t["own_us_per_put"], t["cum_us_per_put"], t["calls_per_put"], t["func"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10K records, fewer iterations (CI)")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--engine", choices=("reference", "wasm"),
                    help="set MYCELIUM_CORE for the benchmarks")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results.json"))
    a = ap.parse_args()
    if a.engine:
        os.environ["MYCELIUM_CORE"] = a.engine
    names = a.only.split(",") if a.only else BENCHMARKS
    results = []
    for name in names:
        print("running %s ..." % name, file=sys.stderr, flush=True)
        results.append(run_one(name, a.quick))
    for r in results:
        for f in r["figures"]:
            judge(f)
    engines = sorted({r["engine"] for r in results if r.get("engine")})
    print("\nMycelium bench (%s), engine: %s, python %s, %s\n" % (
        "quick" if a.quick else "full", "/".join(engines) or "?",
        platform.python_version(), platform.platform()))
    print(table(results))
    for r in results:
        for note in r.get("notes", []):
            print("\nnote (%s): %s" % (r["benchmark"], note))
        if r.get("error"):
            print("\nERROR in %s:\n%s" % (r["benchmark"], r["error"]))
        if r.get("profile"):
            print_profile(r["profile"])
    doc = {"mode": "quick" if a.quick else "full",
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "git_commit": git_commit(), "machine": machine(),
           "python": {"version": platform.python_version(),
                      "implementation": platform.python_implementation(),
                      "executable": sys.executable},
           "engine": engines[0] if len(engines) == 1 else engines,
           "mycelium_core_env": os.environ.get("MYCELIUM_CORE"),
           "benchmarks": {r["benchmark"]: r for r in results}}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print("\nwrote %s" % os.path.relpath(a.out))
    if any(r.get("error") for r in results):
        sys.exit(2)
    misses = [f for r in results for f in r["figures"]
              if f["goal"] and f["goal"][0] == "ratio" and f["status"] == "miss"]
    if a.quick and misses:
        print("quick mode: %d ratio goal(s) missed against a peer measured in this run"
              % len(misses))
        sys.exit(1)


if __name__ == "__main__":
    main()
