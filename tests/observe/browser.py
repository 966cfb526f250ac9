"""A small headless-Chromium driver for tests (a test helper, not product code).

It speaks the DevTools protocol over --remote-debugging-pipe with the stdlib
only: Chromium reads NUL-terminated JSON commands on its fd 3 and writes
NUL-terminated replies and events on its fd 4. Use: require_browser(); then
`with Browser() as b: page = b.new_page(); page.goto(url); page.evaluate(js)`.
"""
import base64
import fcntl
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT = 30.0   # Chromium start-up takes seconds on a small machine
CALL_TIMEOUT = 30.0
# Run as the child: move our pipe ends to fds 3 and 4, then become Chromium.
# (dash cannot redirect fds >= 10, and preexec_fn is unsafe with threads.)
TRAMPOLINE = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
              "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); "
              "os.execv(sys.argv[3], sys.argv[3:])")


class BrowserError(RuntimeError):
    """Chromium died, failed to start, or answered a command with an error."""


class JSError(RuntimeError):
    """An expression given to Page.evaluate threw."""


def find_chromium():
    return next(filter(None, map(shutil.which, NAMES)), None)


def available():
    return find_chromium() is not None


def require_browser():
    """Skip the calling test when no Chromium is found; fail if tools are required."""
    import pytest
    if available():
        return
    if os.environ.get("MYCELIUM_REQUIRE_TOOLS"):
        pytest.fail("no Chromium found (MYCELIUM_REQUIRE_TOOLS is set): "
                    "install the `chromium` package, e.g. apt-get install chromium")
    pytest.skip("no Chromium found (install the `chromium` package)")


@functools.lru_cache(maxsize=None)
def _headless_flag(exe):
    # --headless=new exists since Chromium 109; older builds only know --headless.
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
        return "--headless=new" if int(re.search(r"(\d+)\.\d+\.", out)[1]) >= 109 \
            else "--headless"
    except (OSError, subprocess.SubprocessError, TypeError, ValueError):
        return "--headless"


def _high_fd(fd):
    # Renumber fd to >= 10 so it cannot collide with the child's fds 3 and 4.
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return new


class Browser:
    def __init__(self, exe=None):
        exe = exe or find_chromium()
        if not exe:
            raise BrowserError("no Chromium found: install the `chromium` package")
        self._dir = tempfile.mkdtemp(prefix="mycelium-chromium-")
        self._lock = threading.Condition()   # guards replies, events, ids, flags
        self._write_lock = threading.Lock()  # one command at a time on the pipe
        self._replies, self._events = {}, {}  # id -> reply; session ("" = browser) -> [event]
        self._next_id, self._dead, self._closed = 0, False, False
        cmd_r, self._cmd_w = map(_high_fd, os.pipe())   # commands, to Chromium
        self._ev_r, ev_w = map(_high_fd, os.pipe())     # replies and events, from it
        args = [exe, _headless_flag(exe), "--remote-debugging-pipe", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check",
                "--user-data-dir=" + os.path.join(self._dir, "profile"),
                "--window-size=1280,900", "--disable-dev-shm-usage"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")   # Chromium refuses to start as root otherwise
        self._stderr = open(os.path.join(self._dir, "stderr.log"), "wb")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", TRAMPOLINE, str(cmd_r), str(ev_w)]
                + args + ["about:blank"], pass_fds=(cmd_r, ev_w),
                stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                start_new_session=True)   # its own process group, killed in close()
        except BaseException:
            self._stderr.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        finally:
            os.close(cmd_r)
            os.close(ev_w)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.version = self.send("Browser.getVersion", timeout=START_TIMEOUT)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _read_loop(self):
        # Split the stream on NUL; file replies by id and events by session id.
        buf = b""
        while True:
            chunk = os.read(self._ev_r, 1 << 16)
            if not chunk:   # EOF: Chromium exited (or close() killed it)
                break
            *messages, buf = (buf + chunk).split(b"\0")
            with self._lock:
                for msg in map(json.loads, messages):
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self._events.setdefault(msg.get("sessionId", ""), []).append(msg)
                self._lock.notify_all()
        with self._lock:
            self._dead = True
            self._lock.notify_all()

    def _died(self):
        if self._closed:
            return BrowserError("the browser is closed")
        try:
            with open(os.path.join(self._dir, "stderr.log"), "rb") as f:
                tail = f.read()[-2000:].decode("utf-8", "replace")
        except OSError:
            tail = ""
        return BrowserError("Chromium exited (code %s); stderr tail:\n%s"
                            % (self._proc.poll(), tail))

    def wait_until(self, predicate, timeout):
        """Wait, holding the lock, until predicate() is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not (value := predicate()):
                if self._dead:
                    raise self._died()
                if time.monotonic() >= deadline:
                    raise TimeoutError("no answer from Chromium in %.1f s" % timeout)
                self._lock.wait(deadline - time.monotonic())
            return value

    def send(self, method, params=None, session_id=None, timeout=CALL_TIMEOUT):
        """Send one command, return its result; BrowserError on an error reply."""
        with self._lock:
            if self._dead or self._closed:
                raise self._died()
            self._next_id += 1
            msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        data = json.dumps(msg).encode() + b"\0"
        try:
            with self._write_lock:   # not self._lock: the reader never waits on a write
                while data:   # a pipe may take a large message in pieces
                    data = data[os.write(self._cmd_w, data):]
        except OSError:
            raise self._died() from None
        reply = self.wait_until(lambda: self._replies.pop(msg_id, None), timeout)
        if "error" in reply:
            raise BrowserError("%s failed: %s" % (method, reply["error"]))
        return reply.get("result", {})

    def events(self, session_id=""):
        """The live list of events received so far for a session."""
        with self._lock:
            return self._events.setdefault(session_id, [])

    def new_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(domain + ".enable", session_id=session)
        return Page(self, target, session)

    def close(self):
        """Kill Chromium's process group and remove its profile; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:   # SIGKILL at once: the profile is thrown away, nothing to save
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait(timeout=10)
        os.close(self._cmd_w)
        self._reader.join(timeout=5)   # EOF on the reply pipe ends the reader
        os.close(self._ev_r)
        self._stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class Page:
    def __init__(self, browser, target_id, session_id):
        self.browser, self.target_id, self.session_id = browser, target_id, session_id

    def send(self, method, params=None, timeout=CALL_TIMEOUT):
        return self.browser.send(method, params, self.session_id, timeout)

    def goto(self, url, timeout=15):
        """Navigate and wait for the load event."""
        events = self.browser.events(self.session_id)
        start = len(events)
        result = self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise BrowserError("cannot load %s: %s" % (url, result["errorText"]))
        self.browser.wait_until(lambda: any(
            e["method"] == "Page.loadEventFired" for e in events[start:]), timeout)

    def evaluate(self, expr, timeout=CALL_TIMEOUT):
        """The value of a JS expression (promises awaited); JSError if it throws."""
        result = self.send("Runtime.evaluate", {
            "expression": expr, "returnByValue": True, "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            raise JSError(_exception_text(result["exceptionDetails"]))
        return result["result"].get("value")

    def wait_for(self, expr, timeout=10, interval=0.05):
        """Poll expr until truthy; return the seconds waited. TimeoutError otherwise."""
        start = time.monotonic()
        while True:
            value = self.evaluate(expr)
            elapsed = time.monotonic() - start
            if value:
                return elapsed
            if elapsed > timeout:
                raise TimeoutError("%r still %r after %.1f s" % (expr, value, timeout))
            time.sleep(interval)

    def console_errors(self):
        """Console errors/asserts, uncaught exceptions and error log entries (such
        as failed resource loads), since the page was created."""
        out = []
        for e in list(self.browser.events(self.session_id)):
            method, p = e["method"], e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], " ".join(
                    str(a.get("value", a.get("description", a.get("type"))))
                    for a in p.get("args", []))))
            elif method == "Runtime.exceptionThrown":
                out.append("uncaught: " + _exception_text(p["exceptionDetails"]))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                entry = p["entry"]   # e.g. "network: Failed to load resource: ... 404"
                out.append("%s: %s %s" % (entry.get("source"), entry.get("text"),
                                          entry.get("url", "")))
        return out

    def screenshot(self, path):
        """Write a PNG of the whole page (beyond the viewport) to path."""
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        view = self.evaluate("[innerWidth, innerHeight]")
        clip = {"x": 0, "y": 0, "scale": 1,
                "width": max(size["width"], view[0]), "height": max(size["height"], view[1])}
        data = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def _exception_text(details):
    exc = details.get("exception") or {}
    return exc.get("description") or str(exc.get("value", "")) or details.get("text", "")
