"""This device's TLS identity: a P-256 key pair and certificate made at
`mycelium init` in pure Python (certgen.py; no `openssl` command), and the
device id derived from it.

    device id = base32(sha256(certificate DER))[:28], grouped 7-7-7-7
                (140 bits), e.g. "K3J5Q2M-...", stored so; shown and typed with a
                check character (devid.py)

Peers authenticate each other by pinning: a connection is accepted only if
the certificate the peer presents hashes to a device id we were told about
(`mycelium peer add ID HOST:PORT`). Python's ssl module has no verify
callback, so it will not carry a bare self-signed client certificate; each
device's certificate is therefore issued by CARRIER below, whose private key
is public (it is in this file). The carrier is not a trust anchor: anyone
can mint certificates with it, and it only lets the TLS stack pass
certificates through. Authentication is the pin, checked right after the
handshake and before any sync message is read.

Files (directory `sync/` of the data dir): key.pem (0600), cert.pem. A new
pair is written key first, cert.pem last: cert.pem is the commit point, and
a directory with key.pem but no cert.pem (a crash in between) gets a fresh
pair at the next `mycelium init`; an old cert.pem is removed before a new
key.pem is written, so a crash never leaves a cert.pem beside a key that is
not its own.
"""
import base64
import hashlib
import os
import shutil
import ssl

from .errors import IdentityError

__all__ = ["ensure_identity", "device_id", "cert_id", "identity_paths",
           "carrier_pem"]

ID_CHARS = 28

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


def _damaged(cert):
    return IdentityError("%s is damaged; restore it (and key.pem) from a backup of this data "
                         "directory, or run `mycelium init --new-identity` to make a new "
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
    """Write the device id into identity.json (None: forget it); device_id()
    checks cert.pem against it from then on."""
    from .. import fs
    from ..identity import identity_path, read_identity
    ident = read_identity(data_dir)
    if ident.get("device_id") != did:
        if did is None:
            ident.pop("device_id", None)
        else:
            ident["device_id"] = did
        fs.write_json(identity_path(data_dir), ident)


def _lost(data_dir, recorded, missing):
    from .devid import display_id
    return IdentityError(
        "%s is missing, so this device's identity (id %s) is incomplete. Restore "
        "sync/key.pem and sync/cert.pem from a backup of this data directory; or, to give "
        "this device a new id (every peer must then add it), run `mycelium init "
        "--new-identity`" % (missing, display_id(recorded)))


def _sweep(d):
    """Remove `.identity-*` work directories an interrupted `init` of an
    older version (which ran the openssl command) may have left; they hold
    private keys."""
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(".identity-"):
            shutil.rmtree(os.path.join(d, name), ignore_errors=True)


def _usable(data_dir, key, cert):
    """The id of the existing pair, if key.pem is cert.pem's key (IdentityError if not)."""
    did = device_id(data_dir)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError, OSError):
        raise _damaged(cert) from None
    return did


def ensure_identity(data_dir: str, new: bool = False) -> str:
    """This device's id, making its key and certificate if it has none yet
    (idempotent). A finished identity (its id recorded in identity.json)
    with a file missing is an IdentityError that says what to do, unless
    `new` (`mycelium init --new-identity`) asks for a new pair. An
    unfinished one (a crash during the first init) is made afresh.

    Order: cert.pem removed, the recorded id forgotten, key.pem, cert.pem,
    the id recorded. A crash at any step leaves either the old identity's
    error, or no recorded id (the next call makes a pair), or a complete
    pair whose id is recorded on the next call; never a key beside a
    cert.pem that is not its own."""
    from .. import fs
    from ..identity import read_identity
    d, key, cert = identity_paths(data_dir)
    _sweep(d)
    recorded = read_identity(data_dir).get("device_id")
    have_key, have_cert = os.path.exists(key), os.path.exists(cert)
    if have_key and have_cert and not new:
        did = _usable(data_dir, key, cert)
        if recorded is None:
            _record(data_dir, did)
        return did
    if recorded is not None and not new:
        raise _lost(data_dir, recorded, cert if not have_cert else key)
    from .certgen import new_identity
    try:
        key_pem, cert_pem, der = new_identity(CARRIER_KEY, CARRIER_CERT)
    except ValueError as e:     # a fault in certgen.py or in CARRIER_*, not in the data dir
        raise IdentityError("cannot make this device's key: %s" % e) from None
    did = cert_id(der)
    fs.mkdir(d)
    try:
        fs.unlink(cert)     # never a cert.pem beside a key.pem that is not its key
        fs.fsync_dir(d)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise fs.error(e, "remove", cert) from None
    _record(data_dir, None)
    fs.atomic_write(key, key_pem, 0o600)
    fs.atomic_write(cert, cert_pem)
    _record(data_dir, did)
    return device_id(data_dir)
