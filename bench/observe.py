"""Observability: /metrics and /api/state with N records, the RSS that
`serve --http` adds, and the cost of a timeline event on a hot path.

  render  a store of N records (sensor:, user:, cfg: keys, one put each), a
          Daemon on it (not run) knowing 3 fake peers, a Dashboard: 1,000 of
          each of metrics.render(obs.state(), obs) and Dashboard.state_json()
          (what GET /metrics and /api/state run), and of render() alone of one
          state; one untimed call first. Peer: prometheus-client, a fresh
          CollectorRegistry with the same series (a Gauge per family, the same
          labels and values), generate_latest(). Also the Observer's start-up
          (its one pass over the keys), once.
  rss     two `serve` processes on copies of one N-record directory, with and
          without `--http`; the --http one answers /api/state, /metrics and /
          200 times each while an /api/stream is read for 6 s; then RSS
          (psutil), VmHWM, RssAnon and RssFile (/proc/PID/status) of both.
  events  100K timeline.emit() calls (10K in quick), perf_counter_ns around
          each (its own ~50 ns included), a flush() after every 1,000, timed
          apart. Peer: a stdlib logger, MemoryHandler (capacity 10**6) to a
          FileHandler, logger.info() timed alike.
Goals (reported, never fail the run): /metrics and /api/state p99 <= 5 ms,
RSS added by --http <= 5 MB (5,000,000 bytes), emit p99 <= 5 us.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from bench.common import REPO, emit, fig, parse_args, pct, records

clock = time.perf_counter_ns
RENDER_GOAL_MS, RSS_GOAL, EMIT_GOAL_US = 5.0, 5_000_000, 5.0
PREFIXES = ("sensor:",) * 6 + ("user:",) * 3 + ("cfg:",)   # 60%, 30%, 10% of the keys
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def build_store(d, n):
    """A closed data directory of n five-field records under a few prefixes
    (one relaxed put each), with its TLS identity."""
    from agent.node import Node, init_identity
    from agent.sync.identity import ensure_identity
    init_identity(d)
    ensure_identity(d)
    with Node(d) as node:
        for i, (_, fields) in enumerate(records(n)):
            node.put("%s%06d" % (PREFIXES[i % len(PREFIXES)], i), fields)


def fake_daemon(node, d):
    """A Daemon on node (never run) that knows 3 peers: one in step, one 100
    changes behind, one ahead by an actor we lack."""
    from agent.sync import peers as P
    from agent.sync.daemon import Daemon
    from agent.sync.identity import ensure_identity
    daemon = Daemon(node, d, ensure_identity(d), quiet=True)
    vv = dict(node.vv)
    for i, pvv in enumerate((vv, {a: max(0, s - 100) for a, s in vv.items()},
                             {**vv, 0x1234: 5})):
        pid = "".join(ALPHABET[(i * 7 + j * 13 + 3) % 32] for j in range(28))
        daemon.peers[pid] = {"name": "peer-%d" % (i + 1), "addr": "10.0.0.%d:7400" % (i + 1)}
        daemon.peer_state[pid] = {"vv": P.vv_hex(pvv), "last_sync": time.time() - 60 * i}
    return daemon


def time_n(fn, n):
    out = []
    for _ in range(n):
        t = clock()
        fn()
        out.append(clock() - t)
    return out


def prometheus_peer(text, iters):
    """Times of generate_latest() of a registry holding our exposition's series."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    reg = CollectorRegistry()
    for fam in text_string_to_metric_families(text):
        names = sorted({k for s in fam.samples for k in s.labels})
        g = Gauge(fam.samples[0].name, fam.documentation, names, registry=reg)
        for s in fam.samples:
            (g.labels(**s.labels) if names else g).set(s.value)
    series = sum(len(m.samples) for m in reg.collect())
    return time_n(lambda: generate_latest(reg), iters), series


def measure_render(d, iters=1000):
    """Times (ns) of /metrics and /api/state on the store in d, and more."""
    from agent.node import Node
    from agent.observe import metrics
    from agent.observe.http import Dashboard
    from agent.observe.state import Observer
    node = Node(d)
    engine = node.engine.name        # load the engine before timing
    daemon = fake_daemon(node, d)
    t = clock()
    Observer(daemon).close()
    startup = clock() - t
    dash = Dashboard(daemon, "127.0.0.1", 0)
    obs = dash.obs
    st = obs.state()                 # warm up: the first call imports what it reads
    text = metrics.render(st, obs)
    out = {"engine": engine, "startup_ns": startup, "records": st["records"],
           "peers": len(st["peers"]), "metrics_bytes": len(text),
           "state_bytes": len(dash.state_json()),
           "series": sum(1 for ln in text.splitlines() if ln and not ln.startswith("#")),
           "metrics": time_n(lambda: metrics.render(obs.state(), obs), iters),
           "state_json": time_n(dash.state_json, iters),
           "state": time_n(obs.state, iters),
           "render_only": time_n(lambda: metrics.render(st, obs), iters)}
    try:
        out["prometheus"], out["prometheus_series"] = prometheus_peer(text, iters)
    except ImportError as e:
        out["prometheus"] = "prometheus-client skipped: %s (pip install prometheus-client)" % e
    dash.obs.close()
    node.close()
    return out


def measure_events(d, n):
    """(emit, flush, logging emit, logging flush) times, ns."""
    import logging
    import logging.handlers
    from agent.events import Timeline
    tl = Timeline(d)
    emits, flushes = [], []
    for _ in range(n // 1000):
        for _ in range(1000):
            t = clock()
            tl.emit("sync.merged", "PEER", changes=1, new=1)
            emits.append(clock() - t)
        t = clock()
        tl.flush()
        flushes.append(clock() - t)
    fh = logging.FileHandler(os.path.join(d, "peer.log"))
    mh = logging.handlers.MemoryHandler(10 ** 6, logging.CRITICAL + 1, fh)
    log = logging.getLogger("bench.observe.peer")
    log.propagate, log.handlers = False, [mh]
    log.setLevel(logging.INFO)
    l_emits, l_flushes = [], []
    for _ in range(n // 1000):
        for _ in range(1000):
            t = clock()
            log.info("sync.merged PEER changes=%d new=%d", 1, 1)
            l_emits.append(clock() - t)
        t = clock()
        mh.flush()
        l_flushes.append(clock() - t)
    mh.close()
    fh.close()
    return emits, flushes, l_emits, l_flushes


def mem(pid):
    """RSS (psutil), and VmHWM, RssAnon and RssFile from /proc/PID/status."""
    import psutil
    out = {"rss": psutil.Process(pid).memory_info().rss}
    with open("/proc/%d/status" % pid) as f:
        for ln in f:
            k, _, v = ln.partition(":")
            if k in ("VmHWM", "RssAnon", "RssFile"):
                out[k.lower()] = int(v.split()[0]) * 1024
    return out


def read_stream(port, seconds, got):
    """Hold /api/stream open for `seconds`, counting the bytes pushed."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        s.settimeout(0.5)
        got["stream"], end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got["stream"] += len(s.recv(1 << 16))
            except socket.timeout:
                pass


def measure_rss(src, tmp, requests=200, stream_s=6.0):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    try:
        for name, extra in (("plain", []), ("http", ["--http", "127.0.0.1:0"])):
            d = os.path.join(tmp, name)
            shutil.copytree(src, d)
            p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", d, "--json",
                                  "serve", "--listen", "127.0.0.1:0"] + extra, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            procs.append((p, json.loads(p.stdout.readline())))   # up and listening
        time.sleep(1.0)
        out = {"idle": [mem(p.pid) for p, _ in procs], "bytes_read": {}}
        url = procs[1][1]["http"].rstrip("/")
        got = out["bytes_read"]
        th = threading.Thread(target=read_stream,
                              args=(urllib.request.urlsplit(url).port, stream_s, got))
        th.start()
        for path in ("/api/state", "/metrics", "/"):
            for _ in range(requests):
                with urllib.request.urlopen(url + path) as r:
                    got[path] = got.get(path, 0) + len(r.read())
        th.join()
        out["loaded"] = [mem(p.pid) for p, _ in procs]
        return out
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGTERM)
        for p, _ in procs:
            p.wait(20)


def main():
    args = parse_args(__doc__, 100_000, 10_000,
                      events=(int, "timeline events (default 100000, quick 10000)"))
    n, n_ev = args.n, args.events or (10_000 if args.quick else 100_000)
    tmp = tempfile.mkdtemp(prefix="mycelium-bench-observe-")
    try:
        src, work, ev = (os.path.join(tmp, x) for x in ("src", "work", "events"))
        build_store(src, n)
        shutil.copytree(src, work)
        r = measure_render(work)
        os.mkdir(ev)
        emits, flushes, l_emits, l_flushes = measure_events(ev, n_ev)
        m = measure_rss(src, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms = lambda s, p: pct(s, p) / 1e6
    us = lambda s, p: pct(s, p) / 1e3
    prom, notes = r["prometheus"], []
    if isinstance(prom, str):
        notes.append(prom)
        prom = None
    pn, sv, lg = "prometheus-client", "serve without --http", "logging MemoryHandler"
    (pi, hi), (pl, hl) = m["idle"], m["loaded"]
    figures = [
        fig("/metrics p50 (state + render)", "ms", ms(r["metrics"], 50),
            prom and ms(prom, 50), pn),
        fig("/metrics p99 (state + render)", "ms", ms(r["metrics"], 99),
            prom and ms(prom, 99), pn, goal=("abs", RENDER_GOAL_MS)),
        fig("/metrics render() alone p99", "ms", ms(r["render_only"], 99),
            prom and ms(prom, 99), pn),
        fig("/api/state JSON p50", "ms", ms(r["state_json"], 50)),
        fig("/api/state JSON p99", "ms", ms(r["state_json"], 99), goal=("abs", RENDER_GOAL_MS)),
        fig("Observer.state() p99", "ms", ms(r["state"], 99)),
        fig("Observer start-up (one pass)", "ms", r["startup_ns"] / 1e6),
        fig("serve RSS, idle", "bytes", hi["rss"], pi["rss"], sv),
        fig("serve RSS, after requests", "bytes", hl["rss"], pl["rss"], sv),
        fig("RSS added by --http", "bytes", hl["rss"] - pl["rss"], goal=("abs", RSS_GOAL)),
        fig("serve VmHWM", "bytes", hl["vmhwm"], pl["vmhwm"], sv),
        fig("VmHWM added by --http", "bytes", hl["vmhwm"] - pl["vmhwm"]),
        fig("RssAnon added by --http", "bytes", hl["rssanon"] - pl["rssanon"]),
        fig("RssFile added by --http", "bytes", hl["rssfile"] - pl["rssfile"]),
        fig("timeline emit p50", "us", us(emits, 50), us(l_emits, 50), lg),
        fig("timeline emit p99", "us", us(emits, 99), us(l_emits, 99), lg,
            goal=("abs", EMIT_GOAL_US)),
        fig("flush per 1,000 events (median)", "ms", ms(flushes, 50), ms(l_flushes, 50), lg),
    ]
    notes.append("%d records, %d peers; /metrics: %d series (%s in the peer's registry), %d "
                 "bytes; /api/state: %d bytes" % (
                     r["records"], r["peers"], r["series"], r.get("prometheus_series", "-"),
                     r["metrics_bytes"], r["state_bytes"]))
    raw = {k: {"n": len(s), "p50_us": us(s, 50), "p99_us": us(s, 99), "p999_us": us(s, 99.9),
               "max_us": max(s) / 1e3}
           for k, s in (("metrics", r["metrics"]), ("state_json", r["state_json"]),
                        ("state", r["state"]), ("render_only", r["render_only"]),
                        ("prometheus", prom), ("emit", emits), ("logging", l_emits),
                        ("flush", flushes), ("logging_flush", l_flushes)) if s}
    emit(args, {"benchmark": "observe", "n": n, "events": n_ev, "engine": r["engine"],
                "figures": figures, "notes": notes, "raw": raw, "rss": m})


if __name__ == "__main__":
    main()
