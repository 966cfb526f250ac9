"""The dashboard in a real browser (headless Chromium) against three real
`serve` processes syncing over TLS on 127.0.0.1."""
import os
import time

from tests.sync.procs import Serve, cmd, init, wait_for

from .browser import Browser, require_browser


def _artifact(tmp_path, name):
    """Where a test keeps what a person should look at ($MYCELIUM_ARTIFACTS,
    else the test's tmp dir)."""
    d = os.environ.get("MYCELIUM_ARTIFACTS") or str(tmp_path)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


def _fleet(tmp_path, http_on=(0,)):
    dirs = [str(tmp_path / n) for n in ("garden", "shed", "porch")]
    ids = [init(d) for d in dirs]
    for i, d in enumerate(dirs):
        cmd(d, "put", "sensor:%s" % os.path.basename(d), "temp:=%d" % (20 + i))
    serves = [Serve(d, args=("--http", "127.0.0.1:0") if i in http_on else ())
              for i, d in enumerate(dirs)]
    names = ["garden", "shed", "porch"]
    for i, d in enumerate(dirs):
        for j in range(3):
            if i != j:
                cmd(d, "peer", "add", ids[j], serves[j].addr, "--name", names[j])
    return dirs, ids, serves


def test_dashboard_shows_three_devices_and_a_change_on_another_within_2s(tmp_path):
    require_browser()
    dirs, ids, serves = _fleet(tmp_path)
    try:
        url = serves[0].http
        assert url and url.startswith("http://127.0.0.1:"), serves[0].log()
        # the fleet has met: every device holds the three first records
        assert wait_for(lambda: all(
            cmd(d, "get", "sensor:%s" % os.path.basename(o), check=None).returncode == 0
            for d in dirs for o in dirs), 60), [s.log() for s in serves]
        with Browser() as b:
            page = b.new_page()
            page.goto(url)
            page.wait_for("document.querySelectorAll('#devices tr').length === 3 && "
                          "[...document.querySelectorAll('#devices tr')].every(r => "
                          "/connected|this device/.test(r.textContent))", 30)
            rows = page.evaluate("[...document.querySelectorAll('#devices tr')].map(r => "
                                 "r.children[1].textContent)")
            assert sorted(rows) == sorted(ids)
            colours = page.evaluate("[...document.querySelectorAll('#devices tr .badge')]"
                                    ".map(b => getComputedStyle(b).backgroundColor)")
            assert len(set(colours)) == 3, colours     # one colour per device
            assert page.evaluate("document.getElementById('health').textContent") == "healthy"
            # a change made on the porch device shows on the garden's page within 2 s
            key = "probe:%d" % time.time_ns()
            t0 = time.monotonic()        # from before the CLI starts: the ack is inside
            cmd(dirs[2], "put", key, "v=1")
            page.wait_for("[...document.querySelectorAll('#writes tr')].some(r => "
                          "r.textContent.includes(%r))" % key, 10)
            took = time.monotonic() - t0
            assert took <= 2.0, "the change took %.2f s to appear" % took
            page.wait_for("document.getElementById('events').textContent"
                          ".includes('sync.connected')", 10)
            shot = _artifact(tmp_path, "dashboard.png")
            page.screenshot(shot)
            print("dashboard screenshot: %s (change shown after %.2f s)" % (shot, took))
            assert page.console_errors() == []
    finally:
        codes = [s.stop() for s in serves]
    assert codes == [0, 0, 0], [s.log() for s in serves]


def test_every_dashboard_loads_without_console_errors_and_the_api_agrees(tmp_path):
    require_browser()
    dirs, ids, serves = _fleet(tmp_path, http_on=(0, 1, 2))
    try:
        hostile = "x:<img src=/nothing onerror=document.title='owned'>"
        cmd(dirs[0], "put", hostile, "v=<b>bold</b>")
        with Browser() as b:
            page = b.new_page()      # keys are shown as text, never parsed as HTML
            page.goto(serves[0].http)
            page.wait_for("document.getElementById('writes').textContent.includes(%r)"
                          % hostile, 20)
            assert page.evaluate("document.querySelectorAll('#writes img, main img').length") == 0
            assert page.evaluate("document.title") == "mycelium"
            for s, me in zip(serves, ids):
                page = b.new_page()
                page.goto(s.http)
                page.wait_for("document.getElementById('myid').textContent === %r" % me, 20)
                state = page.evaluate("fetch('/api/state').then(r => r.json())")
                assert state["device_id"] == me
                assert sorted(p["device_id"] for p in state["peers"]) == sorted(
                    set(ids) - {me})
                time.sleep(1.0)   # Chromium asks for /favicon.ico after the load event
                assert page.console_errors() == [], s.http
    finally:
        for s in serves:
            s.stop()
