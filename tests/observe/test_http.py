"""`serve --http`: /metrics (read back by prometheus-client's parser),
/healthz, /api/state and /api/stream of a real serve process, the token
off loopback, and what it refuses."""
import json
import os
import socket
import stat
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.sync.procs import Serve, cmd, init, wait_for


def _get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def _metrics(url):
    code, text, hdr = _get(url + "metrics")
    assert code == 200 and hdr["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out, text


@pytest.fixture
def served(tmp_path):
    d = str(tmp_path / "a")
    init(d)
    for i in range(3):
        cmd(d, "put", "sensor:%d" % i, "t:=%d" % i)
    s = Serve(d, args=("--http", "127.0.0.1:0"))
    yield d, s
    assert s.stop() == 0, s.log()


def test_metrics_parse_and_agree_with_the_store(served):
    d, s = served
    for i in range(3, 8):
        cmd(d, "put", "sensor:%d" % i, "t:=%d" % i)
    cmd(d, "put", "cfg:mode", "v=auto")
    cmd(d, "del", "sensor:0")
    m, text = _metrics(s.http)
    assert m[("mycelium_records", ())] == 8
    assert m[("mycelium_prefix_records", (("prefix", "sensor:"),))] == 7
    assert m[("mycelium_prefix_records", (("prefix", "cfg:"),))] == 1
    assert m[("mycelium_healthy", ())] == 1
    assert m[("mycelium_resident_memory_bytes", ())] > 1e6
    info = [k for k in m if k[0] == "mycelium_info"]
    assert dict(info[0][1])["version"] and m[info[0]] == 1
    assert wait_for(lambda: _metrics(s.http)[0].get(
        ("mycelium_events_total", (("kind", "serve.start"),))) == 1, 5)
    assert "# TYPE mycelium_events_total counter" in _metrics(s.http)[1]


def test_label_values_are_escaped_to_the_spec():
    from agent.observe.metrics import _Out
    o = _Out()
    o.family("x", "gauge", "help with \\ and\nnewline", [({"p": 'a"b\\c\nd'}, 1)])
    (fam,) = text_string_to_metric_families("\n".join(o.lines) + "\n")
    assert fam.samples[0].labels == {"p": 'a"b\\c\nd'}
    assert fam.documentation == "help with \\ and\nnewline"


def test_healthz_is_200_when_healthy_and_503_with_the_reasons(served):
    d, s = served
    code, body, _ = _get(s.http + "healthz")
    assert (code, body) == (200, "ok\n")
    cmd(d, "peer", "add", "K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H", "127.0.0.1:9", "--unchecked",
        "--name", "shed")
    assert wait_for(lambda: _get(s.http + "healthz")[0] == 503, 10)
    code, body, _ = _get(s.http + "healthz")
    assert "shed has never synced" in body
    m, _ = _metrics(s.http)
    assert m[("mycelium_healthy", ())] == 0


def test_state_counts_prefixes_as_a_full_scan_does(served):
    d, s = served
    for i in range(40):
        cmd(d, "put", "%s:%d" % ("ab"[i % 2], i % 7), "v=%d" % i)
    for k in ("a:0", "b:1", "sensor:2", "nope:1"):
        cmd(d, "del", k, check=None)
    code, body, _ = _get(s.http + "api/state")
    st = json.loads(body)
    keys = cmd(d, "scan", "--keys-only").stdout.split()
    want = {}
    for k in keys:
        p = k[:k.index(":") + 1]
        want[p] = want.get(p, 0) + 1
    assert dict(map(tuple, st["prefixes"])) == want
    assert st["records"] == len(keys)
    latest = {w["key"]: w["live"] for w in st["writes"]}
    assert latest["sensor:2"] is False and latest["b:6"] is True


def test_stream_pushes_a_change_at_once(served):
    d, s = served
    host, port = s.http.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as c:
        c.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        f = c.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 200")
        while not f.readline().startswith(b"data: "):
            pass
        cmd(d, "put", "pushed:1", "v=1")
        t0 = time.monotonic()       # from the ack (a CLI takes seconds under emulation)
        while True:
            line = f.readline()
            if line.startswith(b"data: ") and b"pushed:1" in line:
                break
        assert time.monotonic() - t0 < 3.0      # well before the 5 s refresh


def test_a_page_from_another_origin_cannot_read_it_by_dns_rebinding(served):
    _, s = served
    code, body, _ = _get(s.http + "api/state", {"Host": "evil.example:7421"})
    assert code == 403 and "loopback" in body
    assert _get(s.http + "api/state", {"Host": "localhost:7421"})[0] == 200


def test_what_it_refuses(served):
    _, s = served
    host, port = s.http.split("//")[1].rstrip("/").split(":")

    def raw(data):
        with socket.create_connection((host, int(port)), timeout=10) as c:
            c.sendall(data)
            return c.recv(200)
    assert raw(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw(b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    big = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431")
    assert raw(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    code, page, hdr = _get(s.http)
    assert code == 200 and "script-src 'sha256-" in hdr["Content-Security-Policy"]
    assert "<script" in page and "src=" not in page.split("<script", 1)[1].split(">", 1)[0]
    assert "http://" not in page and "https://" not in page     # no external asset
    assert _get(s.http + "healthz")[0] == 200                    # and it still serves


def test_off_loopback_it_needs_the_token(tmp_path):
    d = str(tmp_path / "a")
    init(d)
    s = Serve(d, args=("--http", "0.0.0.0:0"))
    try:
        url = s.http
        assert "?token=" in url and url.startswith("http://HOST:")
        token = url.split("?token=")[1]
        path = os.path.join(d, "http.token")
        assert open(path).read().strip() == token
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        base = "http://127.0.0.1:%s/" % url.split(":")[2].split("/")[0]
        assert _get(base + "api/state")[0] == 401
        assert _get(base + "api/state?token=wrong")[0] == 401
        assert _get(base + "api/state?token=" + token)[0] == 200
        assert _get(base + "metrics", {"Authorization": "Bearer " + token})[0] == 200
        assert token in s.log()       # serve logs the URL with it
    finally:
        assert s.stop() == 0
    s = Serve(d, args=("--http", "0.0.0.0:0"))     # the same token next time
    try:
        assert s.http.split("?token=")[1] == token
    finally:
        s.stop()


def test_the_config_file_turns_it_on(tmp_path):
    d = str(tmp_path / "a")
    init(d)
    with open(os.path.join(d, "mycelium.toml"), "w") as f:
        f.write('http = "127.0.0.1:0"\n')
    s = Serve(d)
    try:
        assert s.http and _get(s.http + "healthz")[0] == 200
    finally:
        s.stop()


def test_without_http_serve_does_not_import_the_dashboard():
    import subprocess
    import sys
    from tests.sync.procs import ENV
    code = ("import sys, agent.sync.commands, agent.sync.daemon\n"
            "print(sorted(m for m in sys.modules if m.startswith('agent.observe')))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
