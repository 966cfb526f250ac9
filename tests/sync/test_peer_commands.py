"""Peers as an operator manages them (issue 14): ids with a check
character, names, remove and rename, ambiguous prefixes, accept-only peers,
`--listen :PORT`, bracketed IPv6, bind errors with their own exit code, and
serve's log (one line per event with date, level and device; no duplicate;
repeated trouble rate-limited). Real processes."""
import io
import json
import os
import re
import socket
import subprocess
import sys
import time

from agent.logs import Logger
from agent.sync.devid import ALPHABET, check_char, display_id, normalize_id
from .procs import ENV, Serve, cmd, init, wait_for


def _other(ch):
    return "A" if ch != "A" else "B"


def test_every_one_character_typo_is_refused(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    init(a)
    idb = init(b)
    letters = [i for i, ch in enumerate(idb) if ch != "-"]
    for i in letters:                      # each position, a wrong character there
        typo = idb[:i] + _other(idb[i]) + idb[i + 1:]
        p = cmd(a, "peer", "add", typo, "127.0.0.1:9", check=2)
        assert "mistyped" in p.stderr or "no check" in p.stderr, p.stderr
    for i in letters[:-1]:                 # each swap of neighbours that changes it,
        j = letters[letters.index(i) + 1]  # but A<->7 (values 0 and 31), which Luhn mod 32
        if idb[i] != idb[j] and {idb[i], idb[j]} != {"A", "7"}:   # cannot see (devid.py)
            swap = list(idb)
            swap[i], swap[j] = swap[j], swap[i]
            cmd(a, "peer", "add", "".join(swap), "127.0.0.1:9", check=2)
    assert cmd(a, "--json", "peer", "list").stdout == ""   # nothing was added
    cmd(a, "peer", "add", idb.lower().replace("-", " "), "127.0.0.1:9", check=0)


def test_an_id_without_its_check_character_needs_unchecked(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    init(a)
    idb = init(b)
    bare = idb[:-2]                        # as a device before 0.5 prints it
    p = cmd(a, "peer", "add", bare, "127.0.0.1:9", check=2)
    assert "--unchecked" in p.stderr
    cmd(a, "peer", "add", bare, "127.0.0.1:9", "--unchecked", check=0)
    rows = [json.loads(x) for x in cmd(a, "--json", "peer", "list").stdout.splitlines()]
    assert [r["device_id"] for r in rows] == [idb]


def test_the_check_character_catches_every_substitution():
    body = "K3J5Q2MABCDEFGHIJKLMNOPQRSTU"
    good = check_char(body)
    for i in range(len(body)):
        for ch in ALPHABET:
            if ch != body[i]:
                assert check_char(body[:i] + ch + body[i + 1:]) != good
    assert normalize_id(display_id(body)) == normalize_id(body, unchecked=True)


def _fake_id(prefix):
    body = (prefix + "A" * 28)[:28]
    return display_id(body)


def test_names_rename_remove_and_ambiguous_prefixes(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    x, y = _fake_id("QQQQQQQX"), _fake_id("QQQQQQQY")
    cmd(a, "peer", "add", x, "192.168.1.20:7420", "--name", "garden-pi", check=0)
    cmd(a, "peer", "add", y, "[::1]:9", check=0)
    p = cmd(a, "peer", "add", y, "[::1]:9", "--name", "garden-pi", check=2)
    assert "already" in p.stderr
    p = cmd(a, "sync", "QQQQ", check=2)
    assert "ambiguous" in p.stderr and x in p.stderr and y in p.stderr and "garden-pi" in p.stderr
    p = cmd(a, "sync", "ZZZZ", check=2)
    assert "names no known peer" in p.stderr
    out = cmd(a, "peer", "list", check=0).stdout
    assert "[::1]:9" in out and "garden-pi" in out and x in out
    cmd(a, "peer", "rename", "QQQQQQQY", "shed-pi", check=0)
    # a name resolves for sync (it then fails to connect, which is a sync error, 7)
    p = cmd(a, "sync", "shed-pi", check=7, timeout=90)
    assert "[::1]:9" in p.stderr
    cmd(a, "peer", "remove", "garden-pi", check=0)
    rows = [json.loads(x) for x in cmd(a, "--json", "peer", "list").stdout.splitlines()]
    assert [(r["device_id"], r["name"]) for r in rows] == [(y, "shed-pi")]
    cmd(a, "peer", "remove", "garden-pi", check=2)


def test_unbracketed_ipv6_is_refused_with_the_form(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    p = cmd(a, "peer", "add", _fake_id("R"), "fd00::20:7420", check=2)
    assert "[fd00::20]:7420" in p.stderr


def test_a_removed_peer_is_disconnected_and_refused(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    cmd(a, "peer", "add", idb, check=0)              # accept-only: b dials a
    sa = Serve(a)
    try:
        cmd(b, "peer", "add", ida, sa.addr, check=0)
        sb = Serve(b)
        try:
            cmd(b, "put", "k", "v=1", check=0)
            assert wait_for(lambda: cmd(a, "get", "k", check=None).returncode == 0)
            cmd(a, "peer", "remove", idb[:7], check=0)
            assert wait_for(lambda: "was removed" in sa.log() and
                            "not a known peer" in sa.log(), timeout=30)
            cmd(b, "put", "k2", "v=1", check=0)
            time.sleep(3)
            assert cmd(a, "get", "k2", check=None).returncode == 1
        finally:
            sb.stop()
    finally:
        sa.stop()
    # a only accepts from b; it never dialled it
    assert "cannot reach" not in sa.log()


def _serve(d, *args):
    return subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, "serve", *args],
                          capture_output=True, text=True, env=ENV, timeout=60)


def test_bind_errors_have_their_own_exit_code_and_hints(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        used = _serve(a, "--listen", "127.0.0.1:%d" % port)
    assert used.returncode == 12, used.stderr
    assert "in use" in used.stderr
    foreign = _serve(a, "--listen", "192.0.2.7:7420")     # TEST-NET-1: not this machine's
    assert foreign.returncode == 12, foreign.stderr
    assert "not an address of this machine" in foreign.stderr
    assert "in use" not in foreign.stderr
    bad = _serve(a, "--listen", "7420")
    assert bad.returncode == 2 and ":7420 for every address" in bad.stderr


def test_listen_on_every_address_and_log_lines(tmp_path):
    """--listen :PORT, and what serve writes: stdout nothing without --json,
    stderr one line per event with date, level and device id."""
    a = str(tmp_path / "a")
    ida = init(a)
    cmd(a, "peer", "add", _fake_id("UNREACH"), "127.0.0.1:9", "--name", "gone", check=0)
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", a, "serve", "--listen",
                          ":%d" % port], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=ENV, text=True)
    try:
        ok = False
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                ok = True
                break
            except OSError:
                time.sleep(0.1)
        assert ok
        time.sleep(8)       # the dialer fails at 0.5, 1, 2 and 4 s
    finally:
        p.terminate()
        out, err = p.communicate(timeout=30)
    assert out == ""
    lines = err.splitlines()
    pat = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (info|warning|error) %s: \S"
                     % re.escape(ida[:7]))
    assert lines and all(pat.match(x) for x in lines), err
    assert sum("listening on" in x for x in lines) == 1
    assert ":%d" % port in err and ida in err
    unreach = [x for x in lines if "cannot reach gone" in x]
    assert len(unreach) == 1, err          # four failures, one line
    assert " warning " in unreach[0]


def test_json_log_format(tmp_path):
    a = str(tmp_path / "a")
    init(a)
    p = subprocess.Popen([sys.executable, "-m", "agent", "--data-dir", a, "--json", "serve",
                          "--listen", "127.0.0.1:0", "--log-format", "json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    try:
        json.loads(p.stdout.readline())
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    recs = [json.loads(x) for x in err.splitlines()]
    assert {r["level"] for r in recs} <= {"info", "warning", "error"}
    assert any(r["msg"].startswith("listening on") for r in recs)
    assert all(set(r) >= {"ts", "level", "device", "msg"} for r in recs)


def test_rate_limit_over_a_day_of_one_failure_every_30_s():
    now = [1_000_000.0]
    out = io.StringIO()
    log = Logger("K3J5Q2M", stream=out, clock=lambda: now[0])
    for _ in range(2880):
        log.warning("cannot reach gone", key=("unreachable", "X"))
        now[0] += 30
    lines = out.getvalue().splitlines()
    assert 20 <= len(lines) <= 35, len(lines)
    assert "more like this" in lines[-1]
    held = sum(int(re.search(r"\((\d+) more", x).group(1)) for x in lines[1:])
    assert held + len(lines) <= 2880 and held + len(lines) >= 2880 - 130
    assert log.clear(("unreachable", "X")) and not log.clear(("unreachable", "X"))
    log.warning("cannot reach gone", key=("unreachable", "X"))   # a new run: at once
    assert len(out.getvalue().splitlines()) == len(lines) + 1


def test_journald_gets_priorities(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as f:
        st = os.fstat(f.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (st.st_dev, st.st_ino))
        log = Logger("K3J5Q2M", stream=f)
        log.error("disk full")
        log.info("listening")
    assert path.read_text().splitlines() == ["<3>error K3J5Q2M: disk full",
                                             "<6>info K3J5Q2M: listening"]


def test_a_metered_peer_is_kept_shown_and_can_be_unmarked(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    init(a)
    idb = init(b)
    out = cmd(a, "peer", "add", idb, "127.0.0.1:9", "--metered").stdout
    assert "metered: synced every 900 s" in out, out
    with open(os.path.join(a, "sync", "peers.json")) as f:
        assert list(json.load(f)["peers"].values())[0]["metered"] is True
    row = json.loads(cmd(a, "--json", "peer", "list").stdout)
    assert row["metered"] is True
    cmd(a, "peer", "add", idb, "127.0.0.1:9", "--name", "phone")     # as it was
    assert json.loads(cmd(a, "--json", "peer", "list").stdout)["metered"] is True
    cmd(a, "peer", "add", idb, "127.0.0.1:9", "--unmetered")
    assert json.loads(cmd(a, "--json", "peer", "list").stdout)["metered"] is False
    p = cmd(a, "peer", "add", idb, "127.0.0.1:9", "--metered", "--unmetered", check=2)
    assert "not allowed with" in p.stderr
