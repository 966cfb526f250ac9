"""Pairing in one step (issue 14): `mycelium invite` prints a one-time token
and its QR code; `mycelium join TOKEN` on another device makes each a peer
of the other, and their serves then sync. A token pairs once, a mistyped or
forged one is refused, and a hostile caller leaves the inviter's peers as
they were. Real processes over TLS on 127.0.0.1."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from agent.sync import invite as I
from agent.sync.devid import display_id
from .procs import Serve, cmd, init, wait_for


def _peers(d):
    return {r["device_id"]: r for r in map(json.loads,
                                           cmd(d, "--json", "peer", "list").stdout.splitlines())}


def _invite(d, *extra):
    return json.loads(cmd(d, "--json", "invite", *extra).stdout)["token"]


def test_a_token_survives_the_round_trip_and_every_typo_is_refused():
    did = "NW3QEBIWUU5KMI4KYBDAVCZLQAP6"
    token = I.make_token(did, ["192.168.1.20:7420", "[fd00::20]:7420"], "R22N5W2F3J54R2NK6AFS2LVY6T")
    assert set(token) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ.")   # QR alphanumeric
    assert I.parse_token(token) == (did, ["192.168.1.20:7420", "[fd00::20]:7420"],
                                    "R22N5W2F3J54R2NK6AFS2LVY6T")
    assert I.parse_token(" " + token.lower() + "\n")[0] == did      # pasted, lower-cased
    for i, ch in enumerate(token):
        for other in "A7.":
            if other != ch:
                with pytest.raises(I.BadToken):
                    I.parse_token(token[:i] + other + token[i + 1:])
    for bad in ("", "MYC1", "peer add X", token[:-1], token + "A"):
        with pytest.raises(I.BadToken):
            I.parse_token(bad)


def test_invite_then_join_pairs_both_devices_and_they_sync(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ida, idb = init(a), init(b)
    sa = Serve(a)
    try:
        token = _invite(a, "--addr", sa.addr, "--name", "phone")
        p = cmd(b, "join", token, "--name", "garden-pi")
        assert "paired with %s (garden-pi)" % ida in p.stdout
        pa, pb = _peers(a), _peers(b)
        assert list(pa) == [idb] and pa[idb]["name"] == "phone" and pa[idb]["addr"] is None
        assert list(pb) == [ida] and pb[ida]["addr"] == sa.addr
        assert "paired with %s (phone) through an invite" % idb in sa.log()
        sb = Serve(b)           # b dials a; nothing else was set up by hand
        try:
            cmd(a, "put", "sensor/1", "t:=21.5")
            assert wait_for(lambda: '"t": 21.5' in cmd(b, "--json", "get", "sensor/1",
                                                       check=None).stdout, 30), sb.log()
            cmd(b, "put", "sensor/2", "t:=3")
            assert wait_for(lambda: cmd(a, "get", "sensor/2", check=None).returncode == 0, 30)
        finally:
            sb.stop()
    finally:
        sa.stop()


def test_a_token_pairs_once_and_an_expired_or_forged_one_never(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    ida, idb, idc = init(a), init(b), init(c)
    sa = Serve(a)
    try:
        token = _invite(a, "--addr", sa.addr)
        cmd(b, "join", token)
        p = cmd(c, "join", token, check=2)              # the same token, another device
        assert "no open invite" in p.stderr, p.stderr
        assert idc not in _peers(a) and _peers(c) == {}
        # a token with a's id and address and a secret of the forger's own
        _, addrs, _ = I.parse_token(token)
        forged = I.make_token(ida, addrs, "A" * 26)
        cmd(a, "invite", "--addr", sa.addr, "--qr", "no")   # an invite is open, just not that one
        p = cmd(c, "join", forged, check=2)
        assert "no open invite" in p.stderr
        assert set(_peers(a)) == {idb}
        assert "refused to pair with %s" % idc in sa.log()
        # an invite past its time
        path = os.path.join(a, "sync", "invites.json")
        with open(path) as f:
            doc = json.load(f)
        assert len(doc["invites"]) == 1
        real = time.time
        try:
            time.time = lambda: real() + 16 * 60        # the default lifetime is 15 min
            assert I.open_invites(a) == 0
            assert I.take_invite(a, "X" * 26, idc, None, None) is None
        finally:
            time.time = real
    finally:
        sa.stop()


def test_a_hostile_caller_cannot_stop_pairing(tmp_path):
    """An unknown device that holds the TLS handshake and then sends garbage,
    a line too long or nothing at all gets nothing, and the real join that
    follows still works."""
    a, b, c = (str(tmp_path / n) for n in "abc")
    init(a)
    idb = init(b)
    init(c)
    sa = Serve(a)
    try:
        token = _invite(a, "--addr", sa.addr)
        from agent.sync.transport import client_context
        host, port = sa.addr.rsplit(":", 1)
        ctx = client_context(c)
        for payload in (b"garbage\n", b"{" * 5000 + b"\n", b'{"secret": 7}\n', b""):
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                with ctx.wrap_socket(raw) as s:
                    assert s.recv(len(I.MAGIC)) == I.MAGIC
                    if payload:
                        s.sendall(payload)
                    else:
                        s.shutdown(socket.SHUT_WR)
                    try:
                        assert b'"ok": true' not in s.recv(4096)
                    except (ssl.SSLError, OSError):
                        pass
        assert _peers(a) == {}
        cmd(b, "join", token)
        assert set(_peers(a)) == {idb}
    finally:
        sa.stop()


def test_join_refuses_a_token_for_a_device_that_presents_another_id(tmp_path):
    """The token pins the inviter's id: a device at that address with another
    certificate gets no secret."""
    a, b, m = (str(tmp_path / n) for n in "abm")
    for d in (a, b, m):
        init(d)
    sa = Serve(a)
    sm = Serve(m)
    try:
        token = _invite(a, "--addr", sa.addr)
        ida, _, secret = I.parse_token(token)
        redirected = I.make_token(ida, [sm.addr], secret)      # m sits at the address
        p = cmd(b, "join", redirected, check=None)
        assert p.returncode != 0 and "presented device id" in p.stderr, p.stderr
        assert "pair" not in sm.log()
        assert _peers(b) == {}
        cmd(b, "join", token)                                  # the secret was not spent
    finally:
        sm.stop()
        sa.stop()


def _pbm_of(text):
    """The terminal QR code as a PBM image, 8 pixels a module (blocks are light)."""
    top = {"\u2588": (0, 0), "\u2580": (0, 1), "\u2584": (1, 0), " ": (1, 1)}
    rows = []
    for line in text.splitlines():
        pairs = [top[ch] for ch in line]
        rows.append([p[0] for p in pairs])
        rows.append([p[1] for p in pairs])
    s = 8
    out = ["P1", "%d %d" % (len(rows[0]) * s, len(rows) * s)]
    for r in rows:
        line = " ".join(str(v) for v in r for _ in range(s))
        out.extend([line] * s)
    return "\n".join(out) + "\n"


@pytest.mark.skipif(not shutil.which("zbarimg") and not os.environ.get("MYCELIUM_REQUIRE_TOOLS"),
                    reason="no zbarimg (zbar-tools; scripts/bootstrap.sh test installs it as root)")
def test_the_qr_code_in_the_terminal_reads_back_as_the_token(tmp_path):
    assert shutil.which("zbarimg"), "scripts/bootstrap.sh test installs zbar-tools"
    a = str(tmp_path / "a")
    init(a)
    out = cmd(a, "invite", "--addr", "192.168.1.20:7420", "--addr", "[fd00::20]:7420",
              "--qr", "yes").stdout
    lines = out.splitlines()
    qr = "\n".join(l for l in lines if l and set(l) <= set("\u2588\u2580\u2584 "))
    token = next(l for l in lines if l.startswith("MYC1."))
    img = tmp_path / "qr.pbm"
    img.write_text(_pbm_of(qr))
    p = subprocess.run(["zbarimg", "--quiet", "--raw", str(img)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == token
    assert I.parse_token(p.stdout)[1] == ["192.168.1.20:7420", "[fd00::20]:7420"]
    assert display_id(I.parse_token(token)[0]) == cmd(a, "id").stdout.strip()


def test_a_damaged_invites_file_refuses_joins_and_says_so(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    init(a)
    init(b)
    sa = Serve(a)
    try:
        token = _invite(a, "--addr", sa.addr)
        with open(os.path.join(a, "sync", "invites.json"), "w") as f:
            f.write("{not json")
        p = cmd(b, "join", token, check=2)
        assert "no open invite" in p.stderr, p.stderr
        assert "cannot read the open invites" in sa.log()
        assert sa.p.poll() is None and _peers(b) == {}
    finally:
        sa.stop()
