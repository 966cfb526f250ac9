"""`mycelium demo`: three devices' worth of records on this machine.

Writes records of every field kind, reads them back, watches a prefix, makes
two more devices write concurrently, then starts a real `mycelium serve` per
device on 127.0.0.1 (ephemeral ports, TLS, peered with each other by device
id), lets them sync and shows that all three agree. Uses its own data
directory (reset on each run), never yours, and stops its processes.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from .node import Node, init_identity
from .values import Inc, MV, Add, Remove


def demo_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "mycelium-demo")


def _show(title, rec):
    print("  %-28s %s" % (title, json.dumps(rec, ensure_ascii=False, sort_keys=True)))


def _agent_cmd():
    """How to run a mycelium command in a child process."""
    return [sys.executable, "-m", "agent"]


def _env():
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _state_vv(d):
    try:
        with open(os.path.join(d, "sync", "state.json")) as f:
            return json.load(f).get("vv")
    except (OSError, ValueError):
        return None


def sync_with_daemons(dirs, names, timeout=30.0):
    """Start one `serve` per directory, peer them all, wait until their
    version vectors agree, stop them. Returns (seconds, agreed)."""
    from .sync.devid import display_id
    from .sync.identity import ensure_identity
    from .sync.peers import add_peer
    base, env = _agent_cmd(), _env()
    ids = [ensure_identity(d) for d in dirs]
    procs, addrs = [], []
    t0 = time.monotonic()
    try:
        for d in dirs:
            p = subprocess.Popen(base + ["--data-dir", d, "--json", "serve", "--listen",
                                         "127.0.0.1:0"], stdout=subprocess.PIPE,
                                 stderr=open(os.path.join(d, "serve.log"), "ab"), env=env)
            procs.append(p)
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("serve did not start; see %s" % os.path.join(d, "serve.log"))
            addrs.append(json.loads(line)["listening"])
        for name, did, addr in zip(names, ids, addrs):
            print("  %-11s serve on %s  id %s" % (name, addr, display_id(did)))
        for i, d in enumerate(dirs):
            for j in range(len(dirs)):
                if i != j:
                    add_peer(d, ids[j], addrs[j])
        agreed = False
        while time.monotonic() - t0 < timeout:
            vvs = [_state_vv(d) for d in dirs]
            if None not in vvs and len(vvs[0]) == len(dirs) and all(v == vvs[0] for v in vvs):
                agreed = True
                break
            time.sleep(0.1)
        return time.monotonic() - t0, agreed
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()


def run(root=None) -> int:
    root = root or demo_dir()
    shutil.rmtree(root, ignore_errors=True)
    a_dir, b_dir = os.path.join(root, "kitchen-pi"), os.path.join(root, "phone")
    c_dir = os.path.join(root, "shop-till")
    init_identity(a_dir)
    init_identity(b_dir)
    init_identity(c_dir)
    print("Mycelium demo in %s\n" % root)
    with Node(a_dir) as a, Node(b_dir) as b, Node(c_dir) as c:
        events = []
        a.watch("sensor:", lambda key, rec: events.append(key))
        print("1. device A (kitchen-pi, actor %016x) writes every field kind" % a.actor)
        a.put("sensor:kitchen", {"site": "kitchen", "temp": 21.5, "readings": Inc(3),
                                 "status": MV("ok"), "tags": Add("indoor", "ground-floor")})
        a.put("sensor:kitchen", {"readings": Inc(2), "tags": Remove("ground-floor")})
        a.put("sensor:garden", {"site": "garden", "temp": 14.0, "readings": Inc(1)})
        a.put("note:1", {"text": "water the basil"})
        _show("sensor:kitchen", a.get("sensor:kitchen"))
        _show("scan 'sensor:' ->", [k for k, _ in a.scan("sensor:")])
        print("  watch 'sensor:' saw %d change(s): %s" % (len(events), ", ".join(events)))

        print("\n2. device B (phone, actor %016x) writes the same record while apart" % b.actor)
        b.put("sensor:kitchen", {"temp": 22.0, "readings": Inc(10), "status": MV("check filter"),
                                 "tags": Add("serviced")})
        _show("B sees", b.get("sensor:kitchen"))
        print("   device C (shop-till, actor %016x) counts garden readings, also apart" % c.actor)
        c.put("sensor:garden", {"readings": Inc(4), "tags": Add("outdoor")})
        _show("C sees", c.get("sensor:garden"))
        actors = {a.actor: "A", b.actor: "B", c.actor: "C"}
        for name, n in (("A", a), ("B", b), ("C", c)):
            print("  %s's version vector: %s" % (name, ", ".join(
                "%s:%d" % (actors.get(k, "?"), v) for k, v in sorted(n.vv.items()) if v)))

    print("\n3. each device runs `mycelium serve` (TLS 1.3, peers pinned by device id);")
    print("   version vectors say what each lacks, changes travel in zstd frames")
    secs, synced = sync_with_daemons([a_dir, b_dir, c_dir], ["kitchen-pi", "phone", "shop-till"])
    print("  %s in %.1f s; daemons stopped" % (
        "version vectors agree" if synced else "did NOT converge", secs))

    with Node(a_dir) as a, Node(b_dir) as b, Node(c_dir) as c:
        ra, rb = a.get("sensor:kitchen"), b.get("sensor:kitchen")
        _show("A now sees", ra)
        _show("B now sees", rb)
        _show("C sees sensor:garden", c.get("sensor:garden"))
        print("  counter summed (3+2+10), both status values kept (mv), set merged,")
        print("  temp decided by the later stamp (lww); garden readings 1+4 on every device")
        keys = [k for k, _ in a.scan("")]
        same = synced and all(a.get(k) == b.get(k) == c.get(k) for k in keys) \
            and a.count() == b.count() == c.count()
        print("\n4. the devices agree on all %d records: %s" % (a.count(), "yes" if same else "NO"))
        print("  watch 'sensor:' on A saw %d change(s) before the sync" % len(events))
        stats = a.stats()
        print("  engine: %s; A's store: %d data bytes, op log %d bytes"
              % (stats["engine"], stats["data_bytes"], stats["log_bytes"]))
    print("\nTry it yourself:  mycelium --data-dir %s get sensor:kitchen" % a_dir)
    return 0 if same else 1
