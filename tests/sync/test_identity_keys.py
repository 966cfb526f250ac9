"""This device's TLS key and certificate, made in pure Python (certgen.py):
`init` needs no `openssl` command, the pair works in a real TLS handshake
with the project's own contexts, the certificate verifies against the
carrier, the arithmetic matches published test vectors, and an interrupted
init never leaves a key and certificate that do not belong together."""
import asyncio
import datetime
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import sys

import pytest

from agent import fs
from agent.node import init_identity
from agent.sync import certgen
from agent.sync.errors import IdentityError, PeerUnreachable
from agent.sync.identity import (CARRIER_CERT, CARRIER_KEY, cert_id, device_id, ensure_identity,
                                 identity_paths)
from agent.sync.transport import client_context, connect, peer_device_id, server_context

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ID_RE = re.compile(r"device id ([A-Z2-7]{7}(?:-[A-Z2-7]+)+)")


def fresh(tmp_path, name):
    d = str(tmp_path / name)
    init_identity(d)
    return d, ensure_identity(d)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def carrier():
    d, pub = certgen.read_private_key(CARRIER_KEY)
    return d, pub, certgen.read_certificate(ssl.PEM_cert_to_DER_cert(CARRIER_CERT))


def _cli(d, *args):
    return subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *args],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def plain(did):
    return did.replace("-", "")


# -- 1. no openssl command

def test_init_and_id_work_without_an_openssl_command(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    d = str(tmp_path / "data")
    env = dict(os.environ, PYTHONPATH=ROOT, PATH=str(empty))
    run = lambda *a: subprocess.run([sys.executable, "-m", "agent", "--data-dir", d, *a],  # noqa
                                    capture_output=True, text=True, env=env, timeout=60)
    p = run("init")
    assert p.returncode == 0, (p.stdout, p.stderr)
    m = ID_RE.search(p.stdout)
    assert m, p.stdout
    q = run("id")
    assert q.returncode == 0, (q.stdout, q.stderr)
    assert q.stdout.strip() == m.group(1)
    assert plain(q.stdout.strip()).startswith(plain(device_id(d)))
    assert sorted(os.listdir(os.path.join(d, "sync"))) == ["cert.pem", "key.pem"]


def test_ensure_identity_runs_no_command(tmp_path, monkeypatch):
    def no(*a, **k):
        raise AssertionError("ensure_identity ran a command: %r" % (a,))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    monkeypatch.setattr(subprocess, "run", no)
    monkeypatch.setattr(subprocess, "Popen", no)
    d, did = fresh(tmp_path, "a")
    assert did == device_id(d)


# -- 2. and 3. the pair works in TLS and verifies against the carrier

def test_key_and_cert_load_and_the_key_file_is_private(tmp_path):
    d, _ = fresh(tmp_path, "a")
    _, key, cert = identity_paths(d)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert read(key).startswith(b"-----BEGIN PRIVATE KEY-----\n")
    dk, pub = certgen.read_private_key(read(key))
    c = certgen.read_certificate(ssl.PEM_cert_to_DER_cert(read(cert).decode()))
    assert c["public_key"] == pub == certgen.mul(dk)


def _handshake(server_dir, client_dir, expect_id):
    """Serve server_dir's identity, connect with client_dir's, pinned to
    expect_id; returns (id the server saw, id the client saw, bytes read)."""
    async def go():
        seen = {}

        async def handle(reader, writer):
            seen["server"] = peer_device_id(writer)
            writer.write(b"ok")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                            ssl=server_context(server_dir))
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await connect("127.0.0.1", port, client_context(client_dir),
                                           expect_id, timeout=5)
            try:
                seen["client"] = peer_device_id(writer)
                seen["data"] = await asyncio.wait_for(reader.read(2), 5)
            finally:
                writer.close()
        return seen["server"], seen["client"], seen["data"]
    return asyncio.run(go())


def test_tls_handshake_between_two_fresh_identities(tmp_path):
    a, _ = fresh(tmp_path, "a")
    b, _ = fresh(tmp_path, "b")
    by_server, by_client, data = _handshake(a, b, device_id(a))
    assert data == b"ok"
    assert by_server == device_id(b)
    assert by_client == device_id(a)


def test_certificate_is_signed_by_the_carrier(tmp_path):
    d, _ = fresh(tmp_path, "a")
    _, _, cert = identity_paths(d)
    der = ssl.PEM_cert_to_DER_cert(read(cert).decode())
    _, cpub, ccert = carrier()
    c = certgen.read_certificate(der)
    assert c["issuer"] == ccert["subject"]           # byte for byte
    assert c["sig_alg"] == certgen.der_seq(certgen.der_oid("1.2.840.10045.4.3.2"))
    assert certgen.verify(cpub, c["tbs"], *c["signature"])
    r, s = c["signature"]
    assert not certgen.verify(cpub, c["tbs"] + b"\0", r, s)
    assert not certgen.verify(cpub, c["tbs"], r, s ^ 1)
    assert not certgen.verify(c["public_key"], c["tbs"], r, s)


def test_tls_refuses_a_certificate_the_carrier_did_not_sign(tmp_path):
    """The contexts really verify against the carrier, so the handshake test
    above shows that OpenSSL accepts the chain."""
    a, _ = fresh(tmp_path, "a")
    _, _, ccert = carrier()
    forger = certgen.new_private_key()
    dk = certgen.new_private_key()
    der = certgen.make_certificate(certgen.mul(dk), ccert["subject"], forger, ccert["ski"])
    forged = str(tmp_path / "forged")
    sync_dir, key, cert = identity_paths(forged)
    os.makedirs(sync_dir)
    fs.atomic_write(key, certgen.private_key_pem(dk), 0o600)
    fs.atomic_write(cert, certgen.pem(der, "CERTIFICATE"))
    with pytest.raises(PeerUnreachable, match="certificate verify failed"):
        _handshake(forged, a, cert_id(der))


def test_certificate_fields(tmp_path):
    now = datetime.datetime(2049, 12, 31, 12, 0, 0, tzinfo=datetime.timezone.utc)
    _, _, der = certgen.new_identity(CARRIER_KEY, CARRIER_CERT, now=now)
    cert = certgen.der_items(certgen.der_items(der)[0][2])
    tbs = certgen.der_items(cert[0][2])
    assert tbs[0][1] == bytes.fromhex("a003020102")                       # v3
    serial = int.from_bytes(tbs[1][2], "big")
    assert tbs[1][0] == 0x02 and tbs[1][2][0] < 0x80 and 0 < serial < 1 << 128
    not_before, not_after = certgen.der_items(tbs[4][2])
    assert not_before[:3:2] == (0x17, b"491230120000Z")                    # UTCTime, a day early
    assert not_after[:3:2] == (0x18, b"21491207120000Z")                   # GeneralizedTime
    assert tbs[5][1] == certgen.der_seq(
        certgen.der_set(certgen.der_seq(certgen.der_oid("2.5.4.10"), certgen.der_utf8("Mycelium"))),
        certgen.der_set(certgen.der_seq(certgen.der_oid("2.5.4.3"),
                                        certgen.der_utf8("mycelium device"))))
    c = certgen.read_certificate(der)
    _, _, ccert = carrier()
    aki = certgen.der_seq(certgen.der_oid("2.5.29.35"), certgen.der_octets(
        certgen.der_seq(certgen.der_ctx(0, ccert["ski"], constructed=False))))
    assert aki in tbs[7][2]
    assert c["ski"] == hashlib.sha1(b"\x04" + c["public_key"][0].to_bytes(32, "big")
                                    + c["public_key"][1].to_bytes(32, "big")).digest()
    assert certgen.read_certificate(certgen.new_identity(CARRIER_KEY, CARRIER_CERT)[2])["tbs"] \
        != c["tbs"]                                                        # fresh serial and key


def test_times_switch_to_generalized_time_in_2050():
    utc = datetime.timezone.utc
    t = lambda *a: certgen.der_time(datetime.datetime(*a, tzinfo=utc))  # noqa
    assert t(2049, 12, 31, 23, 59, 59) == b"\x17\x0d" + b"491231235959Z"
    assert t(2050, 1, 1, 0, 0, 0) == b"\x18\x0f" + b"20500101000000Z"
    assert t(1950, 1, 1, 0, 0, 0) == b"\x17\x0d" + b"500101000000Z"
    assert t(1949, 12, 31, 0, 0, 0) == b"\x18\x0f" + b"19491231000000Z"


def test_the_carrier_key_is_checked():
    d, pub, ccert = carrier()
    assert certgen.mul(d) == pub == ccert["public_key"]
    other = certgen.private_key_pem(certgen.new_private_key())
    body = certgen.unpem(other, "PRIVATE KEY")
    i = body.index(b"\x04\x20") + 2         # the private scalar's OCTET STRING
    bad = body[:i] + d.to_bytes(32, "big") + body[i + 32:]
    with pytest.raises(ValueError, match="not its private scalar"):
        certgen.read_private_key(certgen.pem(bad, "PRIVATE KEY"))


# -- 4. known answers

# Multiples of the generator, from the P-256 "point multiplication" test
# vectors (http://point-at-infinity.org/ecc/nisttv).
NISTTV = [
    (1, "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"),
    (2, "7CF27B188D034F7E8A52380304B51AC3C08969E277F21B35A60B48FC47669978",
        "07775510DB8ED040293D9AC69F7430DBBA7DADE63CE982299E04B79D227873D1"),
    (3, "5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C",
        "8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032"),
    (112233445566778899,
        "339150844EC15234807FE862A86BE77977DBFB3AE3D96F4C22795513AEAAB82F",
        "B1C14DDFDC8EC1B2583F51E85A5EB3A155840F2034730E9B5ADA38B674336A21"),
    (0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632550,    # n - 1
        "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
        "B01CBD1C01E58065711814B583F061E9D431CCA994CEA1313449BF97C840AE0A"),
]

# RFC 6979 appendix A.2.5: ECDSA, P-256, SHA-256.
RFC_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC_U = (0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6,
         0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299)
RFC_SIGS = [
    (b"sample", 0xA6E3C57DD01ABE90086538398355DD4C3B17AA873382B0F24D6129493D8AAD60,
     0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
     0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8),
    (b"test", 0xD16B6AE827F17175E040871A1C7EC3500192C4C92677336EC2537ACAEE0008E0,
     0xF1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367,
     0x019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083),
]


@pytest.mark.parametrize("k,x,y", NISTTV, ids=["1", "2", "3", "112233445566778899", "n-1"])
def test_scalar_multiplication_known_answers(k, x, y):
    assert certgen.mul(k) == (int(x, 16), int(y, 16))


def test_group_order():
    assert certgen.mul(certgen.N) is None
    assert certgen.on_curve(certgen.G) and not certgen.on_curve((certgen.G[0], certgen.G[1] + 1))
    assert certgen.mul(5, certgen.mul(7)) == certgen.mul(35)


def test_rfc6979_public_key():
    assert certgen.public_key(RFC_X) == RFC_U


@pytest.mark.parametrize("msg,k,r,s", RFC_SIGS, ids=["sample", "test"])
def test_rfc6979_signatures(msg, k, r, s):
    assert next(certgen._nonces(RFC_X, hashlib.sha256(msg).digest())) == k
    assert certgen.sign(RFC_X, msg) == (r, s)
    assert certgen.verify(RFC_U, msg, r, s)
    assert not certgen.verify(RFC_U, msg + b"!", r, s)


def test_private_keys_are_in_range_and_differ():
    keys = {certgen.new_private_key() for _ in range(20)}
    assert len(keys) == 20 and all(1 <= k < certgen.N for k in keys)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command to cross-check")
def test_openssl_command_agrees(tmp_path):
    d, _ = fresh(tmp_path, "a")
    _, key, cert = identity_paths(d)
    carrier_pem = tmp_path / "carrier.pem"
    carrier_pem.write_text(CARRIER_CERT)
    ok = lambda *a: subprocess.run(["openssl", *a], capture_output=True, text=True)  # noqa
    p = ok("verify", "-CAfile", str(carrier_pem), cert)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr
    p = ok("pkey", "-in", key, "-check", "-noout")
    assert p.returncode == 0, p.stderr
    msg, sig = tmp_path / "msg", tmp_path / "sig"
    msg.write_bytes(b"mycelium")
    dk, _ = certgen.read_private_key(read(key))
    r, s = certgen.sign(dk, b"mycelium")
    sig.write_bytes(certgen.der_seq(certgen.der_int(r), certgen.der_int(s)))
    p = ok("dgst", "-sha256", "-prverify", key, "-signature", str(sig), str(msg))
    assert p.returncode == 0 and "Verified OK" in p.stdout, (p.stdout, p.stderr)


# -- 5. fresh, idempotent, and never a mismatched pair

def test_two_inits_make_different_keys(tmp_path):
    a, ida = fresh(tmp_path, "a")
    b, idb = fresh(tmp_path, "b")
    assert ida != idb
    assert read(identity_paths(a)[1]) != read(identity_paths(b)[1])


def test_ensure_identity_is_idempotent(tmp_path):
    d, did = fresh(tmp_path, "a")
    _, key, cert = identity_paths(d)
    before = read(key), read(cert)
    assert ensure_identity(d) == did == device_id(d)
    assert (read(key), read(cert)) == before


def _consistent(d, did):
    _, key, cert = identity_paths(d)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    assert device_id(d) == did == cert_id(ssl.PEM_cert_to_DER_cert(read(cert).decode()))


@pytest.mark.parametrize("lost", ["cert", "key"])
def test_a_lost_file_of_a_finished_identity_is_an_error_until_asked_for_a_new_one(tmp_path,
                                                                                  lost):
    """serve, sync and id call ensure_identity too: a file lost from the SD card
    must not silently give the device a new id that no peer knows."""
    d, did = fresh(tmp_path, "a")
    _, key, cert = identity_paths(d)
    os.unlink(cert if lost == "cert" else key)
    for _ in range(2):
        with pytest.raises(IdentityError, match="--new-identity"):
            ensure_identity(d)
    new = ensure_identity(d, new=True)
    assert new != did
    _consistent(d, new)
    assert ensure_identity(d) == new


def test_init_new_identity_from_the_command_line(tmp_path):
    d = str(tmp_path / "a")
    assert _cli(d, "init").returncode == 0
    old = _cli(d, "id").stdout.strip()
    os.unlink(identity_paths(d)[2])
    p = _cli(d, "id")
    assert p.returncode == 7 and "--new-identity" in p.stderr
    p = _cli(d, "init", "--new-identity")
    assert p.returncode == 0 and "new id" in p.stderr and old in p.stderr
    assert _cli(d, "id").stdout.strip() not in ("", old)


def _crash_on_cert(monkeypatch):
    real = fs.atomic_write

    def write(path, data, mode=None):
        if path.endswith("cert.pem"):
            raise OSError("simulated crash before cert.pem")
        real(path, data, mode)
    monkeypatch.setattr(fs, "atomic_write", write)


def test_crash_between_the_writes_of_a_first_init(tmp_path, monkeypatch):
    d = str(tmp_path / "a")
    init_identity(d)
    _, key, cert = identity_paths(d)
    with monkeypatch.context() as m:
        _crash_on_cert(m)
        with pytest.raises(OSError):
            ensure_identity(d)
    assert os.path.exists(key) and not os.path.exists(cert)
    with pytest.raises(IdentityError):
        device_id(d)
    did = ensure_identity(d)
    _consistent(d, did)


def test_crash_while_replacing_never_leaves_the_old_cert_beside_a_new_key(tmp_path, monkeypatch):
    d, did = fresh(tmp_path, "a")
    _, key, cert = identity_paths(d)
    os.unlink(key)
    with monkeypatch.context() as m:
        _crash_on_cert(m)
        with pytest.raises(OSError):
            ensure_identity(d, new=True)
    assert os.path.exists(key) and not os.path.exists(cert)
    new = ensure_identity(d)      # the replacement was asked for: it completes
    assert new != did
    _consistent(d, new)


def test_a_key_that_is_not_the_certs_is_refused(tmp_path):
    a, ida = fresh(tmp_path, "a")
    b, _ = fresh(tmp_path, "b")
    shutil.copyfile(identity_paths(b)[1], identity_paths(a)[1])
    with pytest.raises(IdentityError, match="damaged"):
        ensure_identity(a)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_an_identity_made_by_the_openssl_command_is_kept(tmp_path):
    """Devices initialised before certgen.py keep their key and id."""
    d = str(tmp_path / "a")
    init_identity(d)
    sync_dir, key, cert = identity_paths(d)
    os.makedirs(sync_dir)
    (tmp_path / "carrier.key").write_text(CARRIER_KEY)
    (tmp_path / "carrier.pem").write_text(CARRIER_CERT)
    for args in (["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", key, "-out", "req.csr",
                  "-subj", "/O=Mycelium/CN=mycelium device"],
                 ["x509", "-req", "-in", "req.csr", "-CA", "carrier.pem", "-CAkey", "carrier.key",
                  "-set_serial", "0x" + os.urandom(16).hex(), "-days", "36500", "-sha256",
                  "-out", cert]):
        p = subprocess.run(["openssl", *args], cwd=str(tmp_path), capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    before = read(key), read(cert)
    did = ensure_identity(d)
    assert did == cert_id(ssl.PEM_cert_to_DER_cert(before[1].decode()))
    assert (read(key), read(cert)) == before
    b, _ = fresh(tmp_path, "b")
    assert _handshake(d, b, did)[1] == did
