"""Cold start of the `mycelium` binary against `python3 -c pass`, same run.

A data directory of N five-field records (bench.common.records) is made
once; then, round after round, each of these runs as a fresh process (the
order shuffled in every round, the median of each kept):

  pass        python3 -c pass                            the peer
  first_read  BINARY --data-dir D get user-000500        goal: <= 3x pass
  core_ready  BINARY --data-dir D put user-000501 visits+=1
              (opens the store, loads the wasm core, applies one op and
              appends it to the op log)                  goal: <= 6x pass
  py_read, py_ready   the same two commands under `python -m agent`, for
              information (what the binary is compared with)

"Cold" means a fresh process each time with the data on disk (the page cache
is left alone: dropping it would disturb the other users of the machine).
The first run of each binary is discarded and reported on its own: for an
onefile-cached binary it is the one that unpacks.

  python -m bench.startup [--binary dist/mycelium] [--runs 21] [--quick]
  python -m bench.startup --binary A --binary B   (several packaging modes)
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"first_read": 3.0, "core_ready": 6.0}


def make_data(path, n):
    """A data dir with n records, closed (checkpointed) so opening it replays nothing."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys\nfrom bench.common import records\n"
            "from agent.node import Node, init_identity\n"
            "init_identity(sys.argv[1])\nnode = Node.open(sys.argv[1])\n"
            "for k, f in records(int(sys.argv[2])): node.put(k, f)\nnode.close()\n")
    subprocess.run([sys.executable, "-c", code, path, str(n)], env=env, check=True, cwd=REPO)


def real_python3():
    """The interpreter `python3` on PATH runs, not a wrapper script in front of it
    (a pyenv shim costs ~60 ms, which would flatter every ratio)."""
    exe = shutil.which("python3") or "/usr/bin/python3"
    out = subprocess.run([exe, "-c", "import sys; print(sys.executable)"],
                         capture_output=True, text=True).stdout.strip()
    return out or exe


def run(argv, env):
    """-> (seconds, peak RSS bytes of the largest process waited for)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode not in (0,):
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), p.returncode, err[-500:]))
    return dt, ru.ru_maxrss * 1024


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def measure(binaries, data, runs, python3, with_python=True):
    env = dict(os.environ)
    cmds = {"pass": [python3, "-c", "pass"]}
    for b in binaries:
        tag = os.path.basename(os.path.dirname(os.path.abspath(b))) or b
        cmds["%s:first_read" % tag] = [b, "--data-dir", data, "get", "user-000500"]
        cmds["%s:core_ready" % tag] = [b, "--data-dir", data, "put", "user-000501", "visits+=1"]
    if with_python:
        py = [sys.executable, "-m", "agent"]
        cmds["python:first_read"] = py + ["--data-dir", data, "get", "user-000500"]
        cmds["python:core_ready"] = py + ["--data-dir", data, "put", "user-000501", "visits+=1"]
    penv = dict(env, PYTHONPATH=REPO)
    first = {}
    for name, argv in cmds.items():  # warm-up (and, for onefile-cached, the unpack)
        first[name] = run(argv, penv if name.startswith("python:") else env)
    times = {k: [] for k in cmds}
    peaks = {k: 0 for k in cmds}
    names = list(cmds)
    for _ in range(runs):
        random.shuffle(names)
        for name in names:
            dt, peak = run(cmds[name], penv if name.startswith("python:") else env)
            times[name].append(dt)
            peaks[name] = max(peaks[name], peak)
    return {k: {"median_s": median(v), "min_s": min(v), "peak_rss": peaks[k],
                "first_run_s": first[k][0]} for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", action="append",
                    help="the mycelium binary (repeatable; default dist/mycelium)")
    ap.add_argument("--n", type=int, help="records on disk (default 100000, quick 10000)")
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--python3", default=None,
                    help="the peer interpreter for `python3 -c pass` (default: the real "
                         "executable behind `python3` on PATH, shims such as pyenv's resolved)")
    ap.add_argument("--no-python", action="store_true", help="skip the python -m agent rows")
    ap.add_argument("--out", help="write the result JSON here (default: stdout)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    a = ap.parse_args()
    if a.python3 is None:
        a.python3 = real_python3()
    n = a.n or (10_000 if a.quick else 100_000)
    runs = 7 if a.quick and a.runs == 21 else a.runs
    bins = a.binary or [os.path.join(REPO, "dist", "mycelium")]
    for b in bins:
        if not os.access(b, os.X_OK):
            sys.exit("no binary at %s: run `make dist` first" % b)
    tmp = tempfile.mkdtemp(prefix="myc-startup-")
    try:
        data = os.path.join(tmp, "data")
        make_data(data, n)
        res = measure(bins, data, runs, a.python3, not a.no_python)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = res["pass"]["median_s"]
    figures, missed = [], False
    for name, r in res.items():
        if name == "pass":
            continue
        what = name.split(":")[1]
        goal = GOALS[what] if not name.startswith("python:") else None
        ratio = r["median_s"] / base
        if goal and ratio > goal:
            missed = True
        figures.append({"metric": "cold start to %s (%s), %d records" % (
                            what.replace("_", " "), name.split(":")[0], n),
                        "unit": "s", "ours": r["median_s"], "peer": base,
                        "peer_name": "python3 -c pass", "goal": ["ratio", goal] if goal else None,
                        "note": "peak RSS %.1f MB; first run %.3f s" % (
                            r["peak_rss"] / 1e6, r["first_run_s"])})
    for f in figures:
        g = f["goal"]
        print("%-58s %7.1f ms  %5.2fx pass%s" % (
            f["metric"], f["ours"] * 1e3, f["ours"] / base,
            "" if not g else "  (goal <= %gx: %s)" % (g[1], "pass" if f["ours"] / base <= g[1]
                                                     else "MISS")), file=sys.stderr)
    print("%-58s %7.1f ms  (peak RSS %.1f MB)" % ("python3 -c pass", base * 1e3,
                                                  res["pass"]["peak_rss"] / 1e6), file=sys.stderr)
    out = {"benchmark": "startup", "n": n, "runs": runs, "python3": a.python3,
           "binaries": bins, "figures": figures, "raw": res}
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 1 if (a.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
