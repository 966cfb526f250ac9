"""Real agent processes on 127.0.0.1 for the integration tests."""
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def cmd(data_dir, *args, check=0, timeout=60):
    p = subprocess.run([sys.executable, "-m", "agent", "--data-dir", data_dir,
                        *args], capture_output=True, text=True, env=ENV, timeout=timeout)
    if check is not None:
        assert p.returncode == check, (args, p.stdout, p.stderr)
    return p


def init(data_dir):
    """Make a data directory; its device id as `mycelium id` prints it."""
    from agent.node import init_identity
    from agent.sync.devid import display_id
    from agent.sync.identity import ensure_identity
    init_identity(data_dir)
    return display_id(ensure_identity(data_dir))


class Serve:
    def __init__(self, data_dir, log_path=None, args=()):
        """log_path: where serve's stderr goes (default beside the data dir);
        args: more of serve's flags (e.g. --http 127.0.0.1:0)."""
        self.data_dir = data_dir
        self.err = open(log_path or os.path.join(os.path.dirname(data_dir),
                                                 os.path.basename(data_dir) + ".serve.log"), "ab")
        self.p = subprocess.Popen(
            [sys.executable, "-m", "agent", "--data-dir", data_dir, "--json",
             "serve", "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE, stderr=self.err, env=ENV)
        line = self.p.stdout.readline()
        assert line, self.log()
        got = json.loads(line)
        self.addr = got["listening"]
        self.http = got.get("http")

    def log(self):
        with open(self.err.name) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()
        return self.p.returncode


def state_vv(data_dir):
    try:
        with open(os.path.join(data_dir, "sync", "state.json")) as f:
            return json.load(f).get("vv")
    except (FileNotFoundError, ValueError):
        return None


def wait_for(pred, timeout=30, step=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def snapshot(data_dir):
    from agent.node import Node
    with Node(data_dir) as n:
        entries = [(c.actor, c.seq) for c in map(__import__("agent.change", fromlist=["x"])
                                                  .parse_change, (r for _, r in n.log.read()))]
        return dict(n.scan("")), dict(n.vv), entries


def paired(tmp_path):
    """Two data directories a and b, a serve on each, each the other's peer
    with its address: (a, b, serve of a, serve of b)."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    sa, sb = Serve(a), Serve(b)
    cmd(a, "peer", "add", idb, sb.addr)
    cmd(b, "peer", "add", ida, sa.addr)
    return a, b, sa, sb
