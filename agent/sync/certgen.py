"""This device's TLS key and certificate, made in pure Python (no `openssl`
command, no extra package): P-256 arithmetic, ECDSA-SHA256, a small DER
encoder and reader, and the PEM files identity.py writes.

- P-256 (secp256r1, SEC 2 section 2.4.2) with Python ints in Jacobian
  coordinates; scalar multiplication is plain double-and-add. It is not
  constant time (Python ints never are): it runs once, at `mycelium init`,
  on this machine, which gives nobody a timing oracle to query.
- A private scalar is uniform in [1, n-1], drawn with `secrets`.
- ECDSA-SHA256 signatures use RFC 6979 deterministic nonces (HMAC-SHA256
  DRBG, section 3.2), so signing needs no randomness and is checked against
  the RFC's own test vectors. The only key this module signs with is the
  carrier's, whose private key is public anyway (identity.py).
- The device's key is written as PKCS#8 "PRIVATE KEY" holding a SEC1
  ECPrivateKey with the public key, as `openssl req -newkey ec` writes it.
- The certificate is X.509 v3: subject O=Mycelium, CN=mycelium device;
  issuer the carrier certificate's subject, copied byte for byte from its
  DER; a random positive 128-bit serial; valid from a day ago (clock skew)
  for 36500 days (UTCTime before 2050, GeneralizedTime from 2050 on, as
  RFC 5280 says); a SubjectKeyIdentifier (SHA-1 of the public key) and an
  AuthorityKeyIdentifier equal to the carrier's SubjectKeyIdentifier, the
  extensions `openssl x509 -req` adds since OpenSSL 3.2; signed
  ecdsa-with-SHA256 by the carrier.
"""
import base64
import datetime
import hashlib
import hmac
import secrets

__all__ = ["P", "N", "G", "on_curve", "mul", "public_key", "new_private_key", "sign", "verify",
           "private_key_pem", "read_private_key", "read_certificate", "make_certificate",
           "new_identity"]

# -- the curve (SEC 2, section 2.4.2); a = -3

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)


def on_curve(pt) -> bool:
    """pt is an affine point of P-256 (None, the point at infinity, is not)."""
    if pt is None:
        return False
    x, y = pt
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def _double(pt):
    # Jacobian doubling for a = -3 ("dbl-2001-b")
    x, y, z = pt
    if not y or not z:
        return (1, 1, 0)
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) * (y + z) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return (x3, y3, z3)


def _add(p1, p2):
    # Jacobian addition ("add-2007-bl"), with the special cases
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if not z1:
        return p2
    if not z2:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    if u1 == u2:
        return _double(p1) if s1 == s2 else (1, 1, 0)
    h = (u2 - u1) % P
    i = 4 * h * h % P
    j = h * i % P
    r = 2 * (s2 - s1) % P
    v = u1 * i % P
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * s1 * j) % P
    z3 = ((z1 + z2) * (z1 + z2) - z1z1 - z2z2) * h % P
    return (x3, y3, z3)


def _affine(pt):
    x, y, z = pt
    if not z:
        return None
    zi = pow(z, -1, P)
    zi2 = zi * zi % P
    return (x * zi2 % P, y * zi2 * zi % P)


def _jmul(k, pt):
    acc = (1, 1, 0)
    base = (pt[0], pt[1], 1)
    for bit in bin(k)[2:]:
        acc = _double(acc)
        if bit == "1":
            acc = _add(acc, base)
    return acc


def mul(k: int, pt=G):
    """k·pt for an affine point pt (default the generator); None is infinity."""
    k %= N
    if not k or pt is None:
        return None
    return _affine(_jmul(k, pt))


def public_key(d: int):
    return mul(d, G)


def new_private_key() -> int:
    """A private scalar, uniform in [1, n-1]."""
    return 1 + secrets.randbelow(N - 1)


# -- ECDSA-SHA256 with RFC 6979 nonces

def _bits2int(b: bytes) -> int:
    return int.from_bytes(b, "big")    # qlen = hlen = 256: no shift


def _nonces(d: int, h1: bytes):
    """RFC 6979 section 3.2 candidates k for key d and hash h1 (SHA-256)."""
    x = d.to_bytes(32, "big")
    h = (_bits2int(h1) % N).to_bytes(32, "big")
    v, k = b"\x01" * 32, b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + h, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        t = _bits2int(v)
        if 1 <= t < N:
            yield t
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def sign(d: int, msg: bytes):
    """ECDSA-SHA256 signature (r, s) of msg with private scalar d."""
    h1 = hashlib.sha256(msg).digest()
    e = _bits2int(h1)
    for k in _nonces(d, h1):
        r = mul(k)[0] % N
        if not r:
            continue
        s = pow(k, -1, N) * (e + r * d) % N
        if s:
            return r, s


def verify(pub, msg: bytes, r: int, s: int) -> bool:
    """Does (r, s) sign msg (ECDSA-SHA256) for the public point pub?"""
    if not on_curve(pub) or not (0 < r < N and 0 < s < N):
        return False
    e = _bits2int(hashlib.sha256(msg).digest())
    w = pow(s, -1, N)
    pt = _affine(_add(_jmul(e * w % N, G), _jmul(r * w % N, pub)))
    return pt is not None and pt[0] % N == r


# -- DER, the few types needed

def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        head = bytes((tag, n))
    else:
        ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes((tag, 0x80 | len(ln))) + ln
    return head + content


def der_int(v: int) -> bytes:
    if v < 0:
        raise ValueError("negative INTEGER")
    return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))  # a leading 0 if bit 7 set


def der_bits(b: bytes) -> bytes:
    return _tlv(0x03, b"\x00" + b)


def der_octets(b: bytes) -> bytes:
    return _tlv(0x04, b)


def der_oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray()
    for i, v in enumerate([40 * parts[0] + parts[1]] + parts[2:]):
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def der_seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def der_set(*items: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(items)))   # SET OF: DER sorts the encodings


def der_utf8(s: str) -> bytes:
    return _tlv(0x0C, s.encode("utf-8"))


def der_time(t: datetime.datetime) -> bytes:
    """UTCTime for 1950-2049, GeneralizedTime otherwise (RFC 5280 4.1.2.5)."""
    t = t.astimezone(datetime.timezone.utc)
    if 1950 <= t.year < 2050:
        return _tlv(0x17, t.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return _tlv(0x18, ("%04d" % t.year + t.strftime("%m%d%H%M%SZ")).encode("ascii"))


def der_ctx(n: int, content: bytes, constructed=True) -> bytes:
    """[n] context-specific tag (explicit if constructed, else implicit)."""
    return _tlv((0xA0 if constructed else 0x80) | n, content)


def der_read(buf: bytes, pos: int = 0):
    """One TLV at pos: (tag, content start, end). ValueError if malformed."""
    if pos + 2 > len(buf):
        raise ValueError("truncated DER")
    tag, n = buf[pos], buf[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used here")
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 4 or pos + k > len(buf):
            raise ValueError("bad DER length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    if pos + n > len(buf):
        raise ValueError("truncated DER")
    return tag, pos, pos + n


def der_items(buf: bytes, start: int = 0, end: int = None):
    """The TLVs between start and end: [(tag, raw TLV bytes, content bytes)]."""
    end = len(buf) if end is None else end
    out = []
    while start < end:
        tag, cs, ce = der_read(buf, start)
        if ce > end:
            raise ValueError("DER item overruns its parent")
        out.append((tag, buf[start:ce], buf[cs:ce]))
        start = ce
    return out


def _one(buf: bytes, tag: int) -> bytes:
    """Content of buf, which must be exactly one TLV with this tag."""
    items = der_items(buf)
    if len(items) != 1 or items[0][0] != tag:
        raise ValueError("expected one DER item of tag 0x%02x" % tag)
    return items[0][2]


def _int(content: bytes) -> int:
    return int.from_bytes(content, "big")


# -- PEM

def pem(der: bytes, label: str) -> bytes:
    b = base64.b64encode(der).decode("ascii")
    body = "\n".join(b[i:i + 64] for i in range(0, len(b), 64))
    return ("-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label, body, label)).encode("ascii")


def unpem(text, label: str) -> bytes:
    if isinstance(text, bytes):
        text = text.decode("ascii")
    begin, end = "-----BEGIN %s-----" % label, "-----END %s-----" % label
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError("no %s PEM block" % label)
    return base64.b64decode("".join(text[i + len(begin):j].split()), validate=True)


# -- keys and certificates

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_PRIME256V1 = "1.2.840.10045.3.1.7"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
OID_SKI = "2.5.29.14"
OID_AKI = "2.5.29.35"
OID_O = "2.5.4.10"
OID_CN = "2.5.4.3"

_EC_ALG = der_seq(der_oid(OID_EC_PUBLIC_KEY), der_oid(OID_PRIME256V1))
_SIG_ALG = der_seq(der_oid(OID_ECDSA_SHA256))


def _point_bytes(pt) -> bytes:
    return b"\x04" + pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")


def _point(b: bytes):
    if len(b) != 65 or b[0] != 4:
        raise ValueError("not an uncompressed P-256 point")
    pt = (_int(b[1:33]), _int(b[33:]))
    if not on_curve(pt):
        raise ValueError("point not on P-256")
    return pt


def _bitstring(content: bytes) -> bytes:
    if not content or content[0] != 0:
        raise ValueError("BIT STRING with unused bits")
    return content[1:]


def private_key_pem(d: int) -> bytes:
    """PKCS#8 PEM of private scalar d (the ECPrivateKey inside holds the
    public key too), as OpenSSL writes it."""
    ec = der_seq(der_int(1), der_octets(d.to_bytes(32, "big")),
                 der_ctx(1, der_bits(_point_bytes(public_key(d)))))
    return pem(der_seq(der_int(0), _EC_ALG, der_octets(ec)), "PRIVATE KEY")


def read_private_key(text):
    """(d, public point) from a PKCS#8 P-256 PEM; ValueError if it is not
    one, or if its public key is not d·G."""
    outer = der_items(_one(unpem(text, "PRIVATE KEY"), 0x30))
    if len(outer) < 3 or outer[0][1] != der_int(0) or outer[1][1] != _EC_ALG \
            or outer[2][0] != 0x04:
        raise ValueError("not a PKCS#8 P-256 key")
    ec = der_items(_one(outer[2][2], 0x30))
    if len(ec) < 2 or ec[0][1] != der_int(1) or ec[1][0] != 0x04 or len(ec[1][2]) != 32:
        raise ValueError("not a SEC1 P-256 private key")
    d = _int(ec[1][2])
    if not 1 <= d < N:
        raise ValueError("private scalar out of range")
    pub = public_key(d)
    for tag, _, content in ec[2:]:
        if tag == 0xA1 and _point(_bitstring(_one(content, 0x03))) != pub:
            raise ValueError("the key's public key is not its private scalar times G")
    return d, pub


def read_certificate(der: bytes) -> dict:
    """The parts of an X.509 certificate used here: tbs (DER), subject
    (its Name, DER), public_key (point), ski (bytes or None), signature (r, s)."""
    cert = der_items(_one(der, 0x30))
    if len(cert) != 3 or cert[0][0] != 0x30 or cert[2][0] != 0x03:
        raise ValueError("not an X.509 certificate")
    tbs = der_items(cert[0][2])
    if tbs and tbs[0][0] == 0xA0:     # [0] version
        tbs = tbs[1:]
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(tbs) < 6:
        raise ValueError("short TBSCertificate")
    spki = der_items(tbs[5][2])
    if len(spki) != 2 or spki[0][1] != _EC_ALG:
        raise ValueError("not a P-256 public key")
    ski = None
    for tag, _, content in tbs[6:]:
        if tag != 0xA3:
            continue
        for _, _, ext in der_items(_one(content, 0x30)):
            parts = der_items(ext)
            if parts[0][1] == der_oid(OID_SKI):
                ski = _one(parts[-1][2], 0x04)
    sig = der_items(_one(_bitstring(cert[2][2]), 0x30))
    return {"tbs": cert[0][1], "issuer": tbs[2][1], "subject": tbs[4][1],
            "public_key": _point(_bitstring(spki[1][2])), "ski": ski,
            "sig_alg": cert[1][1], "signature": (_int(sig[0][2]), _int(sig[1][2]))}


def _name(*rdns) -> bytes:
    """A Name of single-valued RDNs [(oid, text)], as UTF8Strings (what
    `openssl req -subj` writes)."""
    return der_seq(*(der_set(der_seq(der_oid(oid), der_utf8(v))) for oid, v in rdns))


def make_certificate(pub, issuer_der: bytes, issuer_key: int, issuer_ski: bytes = None,
                     serial: int = None, now: datetime.datetime = None,
                     days: int = 36500) -> bytes:
    """DER of the device certificate for public point pub, issued by the
    Name issuer_der (DER, copied as is) and signed with issuer_key."""
    serial = serial if serial is not None else (secrets.randbits(128) or 1)
    now = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    spki_bits = _point_bytes(pub)
    exts = [der_seq(der_oid(OID_SKI), der_octets(der_octets(
        hashlib.sha1(spki_bits, usedforsecurity=False).digest())))]
    if issuer_ski is not None:
        exts.append(der_seq(der_oid(OID_AKI), der_octets(der_seq(
            der_ctx(0, issuer_ski, constructed=False)))))
    tbs = der_seq(
        der_ctx(0, der_int(2)),                 # v3
        der_int(serial),
        _SIG_ALG,
        issuer_der,
        der_seq(der_time(now - datetime.timedelta(days=1)),
                der_time(now + datetime.timedelta(days=days))),
        _name((OID_O, "Mycelium"), (OID_CN, "mycelium device")),
        der_seq(_EC_ALG, der_bits(spki_bits)),
        der_ctx(3, der_seq(*exts)))
    r, s = sign(issuer_key, tbs)
    return der_seq(tbs, _SIG_ALG, der_bits(der_seq(der_int(r), der_int(s))))


_CARRIERS = {}


def _carrier(key_pem: str, cert_pem: str):
    """(d, subject DER, SKI) of the carrier, checked once: its key is d·G and
    is the key in its certificate."""
    got = _CARRIERS.get((key_pem, cert_pem))
    if got is None:
        d, pub = read_private_key(key_pem)
        c = read_certificate(unpem(cert_pem, "CERTIFICATE"))
        if c["public_key"] != pub:
            raise ValueError("the carrier key does not belong to the carrier certificate")
        got = _CARRIERS[(key_pem, cert_pem)] = (d, c["subject"], c["ski"], pub)
    return got


def new_identity(carrier_key_pem: str, carrier_cert_pem: str, now=None):
    """A fresh device key pair and its certificate from the carrier:
    (key PEM, certificate PEM, certificate DER)."""
    cd, subject, ski, cpub = _carrier(carrier_key_pem, carrier_cert_pem)
    d = new_private_key()
    der = make_certificate(public_key(d), subject, cd, ski, now=now)
    c = read_certificate(der)          # self-check: it parses and the carrier's signature holds
    if not verify(cpub, c["tbs"], *c["signature"]):
        raise ValueError("the new certificate does not verify (arithmetic fault)")
    return private_key_pem(d), pem(der, "CERTIFICATE"), der
