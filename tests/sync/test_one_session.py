"""Two real serves that each dial the other end up with one session between
them, the same one on both sides, and it carries every write both ways."""
import time

import psutil

from agent.client import connect

from .procs import paired, wait_for


def _sessions(proc):
    """The serve's established TCP connections: each is a session with the
    only peer it has (the control socket is a Unix socket)."""
    return sum(1 for c in psutil.Process(proc.pid).net_connections(kind="tcp")
               if c.status == psutil.CONN_ESTABLISHED)


def test_devices_that_dial_each_other_keep_one_session(tmp_path):
    # both added at once, so that both dial before either has a session
    a, b, sa, sb = paired(tmp_path)
    try:
        expect = {}
        for i in range(5):
            for d, who in ((a, "a"), (b, "b")):
                with connect(d) as c:
                    c.put("%s:%d" % (who, i), {"v": i})
                expect["%s:%d" % (who, i)] = {"v": i}

        def has_all(d):
            with connect(d, readonly=True) as n:
                return all(n.get(k) == v for k, v in expect.items())
        assert wait_for(lambda: has_all(a) and has_all(b), timeout=20)
        samples = []
        for _ in range(40):          # 4 s: one session each, the whole time
            samples.append((_sessions(sa.p), _sessions(sb.p)))
            time.sleep(0.1)
        assert set(samples[5:]) == {(1, 1)}, samples
    finally:
        sa.stop()
        sb.stop()
