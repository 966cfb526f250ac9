"""Tests of the headless-Chromium test driver (tests/observe/browser.py) against
tiny pages served from 127.0.0.1 by http.server in a thread."""
import http.server
import os
import signal
import struct
import threading
import time

import pytest

from tests.observe.browser import Browser, BrowserError, JSError, require_browser

ICON = '<link rel="icon" href="data:,">'   # stops Chromium asking for /favicon.ico
PAGES = {
    "/clean.html": "<!doctype html>%s<title>clean</title><p>nothing wrong</p>" % ICON,
    "/late.html": """<!doctype html>%s<div id="out">waiting</div><script>
        setTimeout(() => { document.getElementById('out').textContent = 'ready'; }, 300);
        </script>""" % ICON,
    "/console.html": """<!doctype html>%s<script>
        console.error('bad thing', 42);</script>""" % ICON,
    "/throws.html": """<!doctype html>%s<script>
        throw new Error('kaboom');</script>""" % ICON,
    "/missing-img.html": """<!doctype html>%s<img src="/no-such.png">""" % ICON,
    "/no-icon.html": "<!doctype html><p>no icon declared</p>",
    "/tall.html": """<!doctype html>%s<div style="height:3000px;background:#4a8"></div>"""
                  % ICON,
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = PAGES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):   # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with Browser() as b:
        yield b


@pytest.fixture
def page(browser):
    p = browser.new_page()
    yield p
    browser.send("Target.closeTarget", {"targetId": p.target_id})


def test_evaluate_returns_values_and_raises_on_throw(page, server):
    page.goto(server + "/clean.html")
    assert page.evaluate("document.title") == "clean"
    assert page.evaluate("Promise.resolve(6 * 7)") == 42
    assert page.evaluate("({a: [1, 'b']})") == {"a": [1, "b"]}
    with pytest.raises(JSError, match="nope is not defined"):
        page.evaluate("nope()")


def test_wait_for_sees_late_dom_change(page, server):
    page.goto(server + "/late.html")
    assert page.evaluate("document.getElementById('out').textContent") == "waiting"
    waited = page.wait_for("document.getElementById('out').textContent === 'ready'",
                           timeout=5)
    assert page.evaluate("document.getElementById('out').textContent") == "ready"
    assert 0.1 < waited < 5   # it really waited for the 300 ms timer


def test_wait_for_times_out_with_last_value(page, server):
    page.goto(server + "/clean.html")
    with pytest.raises(TimeoutError, match="still 0"):
        page.wait_for("document.querySelectorAll('#never').length", timeout=0.3)


def test_clean_page_has_no_console_errors(page, server):
    page.goto(server + "/clean.html")
    assert page.console_errors() == []


def test_console_error_is_reported(page, server):
    page.goto(server + "/console.html")
    errors = page.console_errors()
    assert len(errors) == 1 and "bad thing 42" in errors[0], errors


def test_uncaught_exception_is_reported(page, server):
    page.goto(server + "/throws.html")
    errors = page.console_errors()
    assert any("kaboom" in e for e in errors), errors


def test_missing_image_404_is_reported(page, server):
    page.goto(server + "/missing-img.html")
    errors = page.console_errors()
    assert any("404" in e and "/no-such.png" in e for e in errors), errors


def test_favicon_404_is_reported_not_filtered(page, server):
    # Without an icon link Chromium fetches /favicon.ico, shortly after the load event.
    page.goto(server + "/no-icon.html")
    deadline = time.monotonic() + 5
    while not page.console_errors() and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = page.console_errors()
    assert any("404" in e and "/favicon.ico" in e for e in errors), errors


def test_screenshot_writes_full_page_png(page, server, tmp_path):
    page.goto(server + "/tall.html")
    path = tmp_path / "shot.png"
    page.screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280
    assert height >= 3000   # the whole page, not just the viewport


def test_dead_browser_raises_clear_error():
    require_browser()
    b = Browser()
    try:
        os.killpg(b._proc.pid, signal.SIGKILL)   # Chromium and its helpers
        with pytest.raises(BrowserError, match="Chromium exited"):
            b.send("Browser.getVersion", timeout=10)
    finally:
        b.close()
        b.close()   # closing twice is harmless
