"""Run inside the budget VM (qemu/guest/init.sh) with the guest's python3.

/opt/bench/mycelium is the arm64 binary; /opt/bench/data a data directory of
100K five-field records (made on the host by bench.startup.make_data: the
on-disk format is little-endian on both). Prints `RESULT name value` lines.

  peak_rss_core_mb  peak RSS of `put` (opens the 100K-record store, loads the
                    wasm core, applies one op, appends to the log): the budget
  peak_rss_read_mb  peak RSS of `get` (first read; no core)
  peak_rss_scan_mb  peak RSS of `scan --keys-only` over all 100K keys (info)
  *_tree_mb         the same, summed over the process tree (sampled every 2 ms):
                    an onefile binary is a small bootstrap plus its child
  first_read_ratio, core_ready_ratio   median time / median `python3 -c pass`
"""
import os
import subprocess
import sys
import threading
import time

BIN = "/opt/bench/mycelium"
DATA = "/opt/bench/data"  # on the ext4 root, like an SD card
RUNS = int(os.environ.get("RUNS", "7"))


def tree_rss(pid):
    """RSS in bytes of pid and its descendants, from /proc."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            kids.setdefault(int(parts[1]), []).append(int(name))
        except OSError:
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(kids.get(p, []))
        try:
            with open("/proc/%d/statm" % p) as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def run(argv):
    """-> (seconds, largest process's peak RSS, sampled tree peak), bytes."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(p.pid))
            time.sleep(0.002)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    done.set()
    t.join()
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        print("FAILED %s: %s" % (" ".join(argv), err[-800:]))
    return dt, ru.ru_maxrss * 1024, peak[0]


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def main():
    os.environ["XDG_CACHE_HOME"] = "/tmp/cache"
    cmds = {
        "pass": [sys.executable, "-c", "pass"],
        "read": [BIN, "--data-dir", DATA, "get", "user-000500"],
        "core": [BIN, "--data-dir", DATA, "put", "user-000501", "visits+=1"],
        "scan": [BIN, "--data-dir", DATA, "scan", "--keys-only"],
    }
    py = "/opt/venv/bin/python"
    if os.path.exists(py) and os.path.isdir("/opt/bench/src/agent"):
        # the same commands under plain python (the venv of the build root),
        # for information: what the binary adds or saves
        os.environ["PYTHONPATH"] = "/opt/bench/src"
        cmds["py_read"] = [py, "-m", "agent", "--data-dir", DATA, "get", "user-000500"]
        cmds["py_core"] = [py, "-m", "agent", "--data-dir", DATA, "put", "user-000501",
                           "visits+=1"]
    run(cmds.get("py_core", cmds["pass"]))  # compiles the .pyc files once
    first = run(cmds["core"])  # unpack (onefile-cached) and .cwasm cache fill
    print("RESULT first_run_s %.3f" % first[0])
    out = subprocess.run([BIN, "--data-dir", DATA, "--json", "stats"],
                         capture_output=True, text=True).stdout.strip()
    print("INFO stats %s" % out)
    times = {k: [] for k in cmds}
    peaks = {k: 0 for k in cmds}
    tpeaks = {k: 0 for k in cmds}
    for _ in range(RUNS):
        for k in cmds:
            if k == "scan" and times["scan"]:
                continue  # one scan is enough: it is there for its memory
            dt, pk, tp = run(cmds[k])
            times[k].append(dt)
            peaks[k] = max(peaks[k], pk)
            tpeaks[k] = max(tpeaks[k], tp)
    # the same, each run after dropping the guest's page cache (a start after
    # boot): file pages the kernel would otherwise map around each fault are
    # not there, so RSS is lower and time higher than in the warm runs above
    cold = {}
    for k in ("read", "core", "py_core"):
        if k not in cmds:
            continue
        ts, pk = [], 0
        for _ in range(3):
            os.system("sync")
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
            dt, p1, _ = run(cmds[k])
            ts.append(dt)
            pk = max(pk, p1)
        cold[k] = (median(ts), pk)
        print("RESULT cold_peak_rss_%s_mb %.1f" % (k, pk / 1e6))
        print("RESULT cold_%s_s %.3f" % (k, median(ts)))
    base = median(times["pass"])
    print("RESULT pass_s %.3f" % base)
    for k in [c for c in cmds if c != "pass"]:
        print("RESULT peak_rss_%s_mb %.1f" % (k, peaks[k] / 1e6))
        print("RESULT peak_rss_%s_tree_mb %.1f" % (k, tpeaks[k] / 1e6))
    print("RESULT first_read_s %.3f" % median(times["read"]))
    print("RESULT core_ready_s %.3f" % median(times["core"]))
    print("RESULT first_read_ratio %.2f" % (median(times["read"]) / base))
    print("RESULT core_ready_ratio %.2f" % (median(times["core"]) / base))
    if "py_core" in cmds:
        print("RESULT py_first_read_ratio %.2f" % (median(times["py_read"]) / base))
        print("RESULT py_core_ready_ratio %.2f" % (median(times["py_core"]) / base))


if __name__ == "__main__":
    main()
