"""This device's TLS identity: a P-256 key pair and certificate made with the
`openssl` command at `mycelium init`, and the device id derived from it.

    device id = base32(sha256(certificate DER))[:28], grouped 7-7-7-7
                (140 bits), e.g. "K3J5Q2M-..."; compare ids with normalize_id()

Peers authenticate each other by pinning: a connection is accepted only if
the certificate the peer presents hashes to a device id we were told about
(`mycelium peer add ID HOST:PORT`). Python's ssl module has no verify
callback, so it will not carry a bare self-signed client certificate; each
device's certificate is therefore issued by CARRIER below, whose private key
is public (it is in this file). The carrier is not a trust anchor: anyone
can mint certificates with it, and it only lets the TLS stack pass
certificates through. Authentication is the pin, checked right after the
handshake and before any sync message is read.

Files (directory `sync/` of the data dir): key.pem (0600), cert.pem.
"""
import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile

from .errors import IdentityError

__all__ = ["ensure_identity", "device_id", "cert_id", "normalize_id", "identity_paths",
           "carrier_pem", "OPENSSL_HINT"]

ID_CHARS = 28
OPENSSL_HINT = ("the `openssl` command is needed to make this device's key: install it "
                "(Debian/Raspberry Pi OS: `sudo apt-get install openssl`; Termux: "
                "`pkg install openssl-tool`)")

CARRIER_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRiDgvFCniVlbnz7d
k2wuU19SNq4Q+VYN3QWfBAKcdcuhRANCAARCRBf21bnCXOP5Xo8ECCPp8JQ2O+bO
aeO+FLIadfztKBUnDSU2OIpVwJ3ghhr++dZka/Q7p3pVY7j//4OXsZ/+
-----END PRIVATE KEY-----
"""
CARRIER_CERT = """-----BEGIN CERTIFICATE-----
MIIB7DCCAZOgAwIBAgIUE3vu2nrMlkkWnctIXa5rIoc0N9YwCgYIKoZIzj0EAwIw
SzERMA8GA1UECgwITXljZWxpdW0xNjA0BgNVBAMMLU15Y2VsaXVtIGlkZW50aXR5
IGNhcnJpZXIsIG5vdCBhIHRydXN0IGFuY2hvcjAgFw0yNjExMjkyMzAzMjRaGA8y
MTI2MTEwNTIzMDMyNFowSzERMA8GA1UECgwITXljZWxpdW0xNjA0BgNVBAMMLU15
Y2VsaXVtIGlkZW50aXR5IGNhcnJpZXIsIG5vdCBhIHRydXN0IGFuY2hvcjBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABEJEF/bVucJc4/lejwQII+nwlDY75s5p474U
shp1/O0oFScNJTY4ilXAneCGGv751mRr9DunelVjuP//g5exn/6jUzBRMB0GA1Ud
DgQWBBS7WoXTw86mdfVyZwuc8ozq6NU4kDAfBgNVHSMEGDAWgBS7WoXTw86mdfVy
Zwuc8ozq6NU4kDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIHvl
ySQIc57rr7uOuFhbIsf9CS+E/aWSgOKPmq+YV0VBAiBJgaVLv8pUc214D4r4ssbQ
ZHgKqWn7WdA9pCUAHg4V5Q==
-----END CERTIFICATE-----
"""


def carrier_pem() -> str:
    return CARRIER_CERT


def identity_paths(data_dir: str):
    d = os.path.join(data_dir, "sync")
    return d, os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")


def cert_id(der: bytes) -> str:
    """Device id of a certificate (DER bytes)."""
    b = base64.b32encode(hashlib.sha256(der).digest()).decode("ascii")[:ID_CHARS]
    return "-".join(b[i:i + 7] for i in range(0, ID_CHARS, 7))


def normalize_id(text: str) -> str:
    """Canonical form of a device id typed by a user (case, dashes, spaces)."""
    from ..errors import UsageError
    s = "".join(ch for ch in text.upper() if ch not in "- \t")
    if len(s) != ID_CHARS or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in s):
        raise UsageError("%r is not a device id (28 letters and digits 2-7, as "
                         "`mycelium id` prints on that device)" % text)
    return "-".join(s[i:i + 7] for i in range(0, ID_CHARS, 7))


def _damaged(cert):
    return IdentityError("%s is damaged; restore it (and key.pem) from a backup of this data "
                         "directory, or move both away and run `mycelium init` to make a new "
                         "identity (peers must then add the new id)" % cert)


def device_id(data_dir: str) -> str:
    """This device's id (IdentityError if it has none yet, or if cert.pem no
    longer gives the id recorded in identity.json when it was made)."""
    from ..identity import read_identity
    _, _, cert = identity_paths(data_dir)
    try:
        with open(cert) as f:
            pem = f.read()
        did = cert_id(ssl.PEM_cert_to_DER_cert(pem))
    except FileNotFoundError:
        raise IdentityError("%s has no device identity yet; run `mycelium init`" % data_dir) \
            from None
    except (ValueError, UnicodeDecodeError):
        raise _damaged(cert) from None
    want = read_identity(data_dir).get("device_id")
    if want is not None and want != did:
        raise _damaged(cert)
    return did


def _record(data_dir, did):
    """Write the new device id into identity.json (it checks cert.pem later)."""
    from .. import fs
    from ..identity import identity_path, read_identity
    ident = read_identity(data_dir)
    if ident.get("device_id") != did:
        ident["device_id"] = did
        fs.write_json(identity_path(data_dir), ident)


def _openssl(*args, cwd):
    exe = shutil.which("openssl")
    if exe is None:
        raise IdentityError(OPENSSL_HINT)
    p = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise IdentityError("openssl %s failed: %s" % (args[0], p.stderr.strip()[-500:]))


def ensure_identity(data_dir: str) -> str:
    """Make this device's key and certificate if missing (idempotent); return its id."""
    d, key, cert = identity_paths(data_dir)
    if os.path.exists(key) and os.path.exists(cert):
        return device_id(data_dir)
    from .. import fs
    fs.mkdir(d)
    tmp = tempfile.mkdtemp(prefix=".identity-", dir=d)
    try:
        with open(os.path.join(tmp, "carrier.key"), "w") as f:
            f.write(CARRIER_KEY)
        with open(os.path.join(tmp, "carrier.pem"), "w") as f:
            f.write(CARRIER_CERT)
        os.chmod(tmp, 0o700)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", "key.pem", "-out", "req.csr",
                 "-subj", "/O=Mycelium/CN=mycelium device", cwd=tmp)
        _openssl("x509", "-req", "-in", "req.csr", "-CA", "carrier.pem",
                 "-CAkey", "carrier.key", "-set_serial", "0x" + os.urandom(16).hex(),
                 "-days", "36500", "-sha256", "-out", "cert.pem", cwd=tmp)
        for name, dst in (("key.pem", key), ("cert.pem", cert)):
            with open(os.path.join(tmp, name), "rb") as f:  # the key stays 0600, whatever
                fs.atomic_write(dst, f.read(), 0o600 if name == "key.pem" else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    did = device_id(data_dir)
    _record(data_dir, did)
    return did
