"""Three real agents, each in its own network namespace on one bridge.
While a writer per device writes through its `serve` (a counter, an
add-wins set of ever-new elements and lww fields on one shared record),
links are cut and healed and `serve` processes are SIGKILLed and restarted
at random. After the final heal every device must hold the same state and
vector, the counter must equal the sum of the acknowledged increments, and
the set must hold every acknowledged element. Needs root (ip netns)."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .procs import ENV, cmd, init

NAMES = "abc"
NS = "mycp-%s"
BR = "mycp-br"
CHAOS_SECONDS = float(os.environ.get("MYCELIUM_PARTITION_SECONDS", "30"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (network namespaces)")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def _addr(i):
    return "10.77.0.%d" % (i + 1)


@pytest.fixture
def netns():
    for n in NAMES:
        sh("ip", "netns", "del", NS % n, check=False)
    sh("ip", "netns", "del", BR, check=False)
    sh("ip", "netns", "add", BR)
    sh("ip", "netns", "exec", BR, "ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "netns", "exec", BR, "ip", "link", "set", "br0", "up")
    for i, n in enumerate(NAMES):
        ns = NS % n
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "v-" + n, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", "v-" + n, "netns", BR)
        sh("ip", "netns", "exec", BR, "ip", "link", "set", "v-" + n, "master", "br0", "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", _addr(i) + "/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    yield
    for n in NAMES:
        sh("ip", "netns", "del", NS % n, check=False)
    sh("ip", "netns", "del", BR, check=False)


def link(n, up):
    sh("ip", "netns", "exec", BR, "ip", "link", "set", "v-" + n, "up" if up else "down")


class Agent:
    def __init__(self, i, data_dir, log_dir):
        self.i, self.name, self.dir = i, NAMES[i], data_dir
        self.log = open(os.path.join(log_dir, "%s.serve.log" % self.name), "ab")
        self.p = None

    def start(self):
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", NS % self.name, sys.executable, "-m", "agent",
             "--data-dir", self.dir, "serve", "--listen", "%s:7420" % _addr(self.i)],
            stdout=subprocess.DEVNULL, stderr=self.log, env=ENV)

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


WRITER = r'''
import os, sys, time, json
from agent.control import RemoteNode, socket_path
from agent.values import Inc, Add
data_dir, name, acks, stop = sys.argv[1:5]
sock = socket_path(data_dir)
out = open(acks, "a")
node = None
i = 0
while not os.path.exists(stop):
    i += 1
    fields = {"n": Inc(1), "tags": Add("%s-%d" % (name, i)), "v": "%s-%d" % (name, i),
              "last_" + name: i}
    while True:
        try:
            if node is None:
                node = RemoteNode(sock, timeout=30)
            node.put("shared", fields)
            break
        except Exception:
            # The ack was lost (serve was killed). An increment is not
            # idempotent: before writing again, learn from the restarted
            # serve whether this one landed, however long that takes.
            node = None
            landed = None
            deadline = time.monotonic() + 60
            while landed is None:
                try:
                    got = RemoteNode(sock, timeout=30).get("shared")
                    landed = bool(got) and got.get("last_" + name) == i
                except Exception:
                    if time.monotonic() > deadline:
                        sys.exit("serve did not come back within 60 s")
                    time.sleep(0.1)
            if landed:
                break
            if os.path.exists(stop):
                sys.exit(0)
    out.write("%d\n" % i)
    out.flush()
    time.sleep(0.02)
'''


def _acked(path):
    with open(path) as f:
        return [int(x) for x in f.read().split()]


def test_partitions_and_kills_converge_with_every_ack(tmp_path, netns):
    rng = random.Random(int(os.environ.get("MYCELIUM_PARTITION_SEED", "0")) or None)
    dirs = [str(tmp_path / n) for n in NAMES]
    ids = [init(d) for d in dirs]
    for i, d in enumerate(dirs):
        for j in range(3):
            if i != j:
                cmd(d, "peer", "add", ids[j], "%s:7420" % _addr(j))
    agents = [Agent(i, d, str(tmp_path)) for i, d in enumerate(dirs)]
    for a in agents:
        a.start()
    stop = str(tmp_path / "stop")
    acks = [str(tmp_path / ("%s.acks" % n)) for n in NAMES]
    time.sleep(2)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, d, n, acks[i], stop], env=ENV)
               for i, (d, n) in enumerate(zip(dirs, NAMES))]
    events = {"cut": 0, "kill": 0}
    down = set()
    try:
        end = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.5, 2.5))
            n = rng.choice(NAMES)
            if rng.random() < 0.6:
                up = n in down
                link(n, up)
                (down.discard if up else down.add)(n)
                events["cut"] += not up
            else:
                a = agents[NAMES.index(n)]
                a.kill()
                events["kill"] += 1
                time.sleep(rng.uniform(0, 1))
                a.start()
        open(stop, "w").close()
        for w in writers:
            assert w.wait(60) == 0
        for n in NAMES:
            link(n, True)
        healed = time.monotonic()

        def states():
            out = []
            for d in dirs:
                p = cmd(d, "--json", "get", "shared", check=None)
                st = cmd(d, "--json", "stats", check=None)
                if p.returncode or st.returncode:
                    return None
                out.append((json.loads(p.stdout)["fields"],
                            json.loads(open(os.path.join(d, "sync", "state.json")).read())
                            .get("vv")))
            return out

        got = None
        while time.monotonic() - healed < 60:
            got = states()
            if got and all(g == got[0] for g in got):
                break
            time.sleep(0.25)
        took = time.monotonic() - healed
    finally:
        open(stop, "w").close()
        for w in writers:
            if w.poll() is None:
                w.kill()
        codes = [a.stop() for a in agents]
    logs = "".join(open(os.path.join(str(tmp_path), "%s.serve.log" % n)).read()
                   for n in NAMES)
    acked = [_acked(p) for p in acks]
    total = sum(len(x) for x in acked)
    print("partitions: %d cuts, %d kills, %d acked writes; converged %.1f s after the final "
          "heal" % (events["cut"], events["kill"], total, took))
    assert "Traceback" not in logs, logs[-3000:]
    if got:
        for n, (r, vv) in zip(NAMES, got):
            print("  %s: n=%s tags=%d vv=%s" % (n, r.get("n"), len(r.get("tags", ())), vv))
    assert got and all(g == got[0] for g in got), logs[-3000:]
    rec = got[0][0]
    assert rec["n"] == total
    want = {"%s-%d" % (n, i) for n, xs in zip(NAMES, acked) for i in xs}
    assert set(rec["tags"]) == want
    for n, xs in zip(NAMES, acked):
        assert rec["last_" + n] == max(xs)
    assert codes == [0, 0, 0], logs[-3000:]
    assert took <= 30, took
