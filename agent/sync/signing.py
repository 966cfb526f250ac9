"""Signed heads: who may vouch for a change, and the check a receiver runs.

A head is (actor, seq, hash) of one change, signed with the actor's Ed25519
key (agent/keys.py) and sent with its public key:

    head := u64 actor, varint seq, 16 bytes hash, 32 bytes public key, 64 bytes signature
    signature over keys.head_message(actor, seq, hash)

Every change of version 3 carries the hash of its actor's previous change
(agent/change.py), so a valid head vouches for the change it names and,
link by link, for every change of that actor below it. A CHANGES batch
carries the heads its changes need (docs/SYNC.md, "Signed heads"): the
receiver walks each actor's changes from the highest down, and takes a
change only if a head or the prev link of a change it already took names
its exact (seq, hash). Everything else is refused, reported and not taken:
a pinned peer may relay other devices' changes but cannot forge them, not
even ones of the receiver's own actor.

Changes of versions 1 and 2 (written before chains existed) cannot be
vouched for; they are refused unless the operator allows unsigned changes
(`--accept-unsigned`, MYCELIUM_ACCEPT_UNSIGNED=1) while a fleet upgrades.
"""
import struct

from ..change import HASH_LEN
from ..codec import get_varint, put_varint
from ..keys import actor_of, head_message, load_keys
from .frame import ProtocolError

__all__ = ["Signer", "Head", "authenticate", "encode_heads", "decode_heads", "MAX_HEADS",
           "adopt_signed_actor"]

PUB_LEN, SIG_LEN = 32, 64
HEAD_MIN = 8 + 1 + HASH_LEN + PUB_LEN + SIG_LEN
MAX_HEADS = 1 << 16
_u64 = struct.Struct("<Q")


class Head:
    __slots__ = ("actor", "seq", "hash", "pub", "sig")

    def __init__(self, actor, seq, h, pub, sig):
        self.actor, self.seq, self.hash, self.pub, self.sig = actor, seq, h, pub, sig

    def __repr__(self):
        return "Head(%016x, %d, %s)" % (self.actor, self.seq, self.hash.hex()[:16])


def encode_heads(out: bytearray, heads) -> None:
    put_varint(out, len(heads))
    for h in heads:
        out += _u64.pack(h.actor)
        put_varint(out, h.seq)
        out += h.hash
        out += h.pub
        out += h.sig


def decode_heads(buf, p):
    n, p = get_varint(buf, p)
    if n > MAX_HEADS or n * HEAD_MIN > len(buf) - p:
        raise ProtocolError("CHANGES head list of %d entries runs past its message" % n)
    out = []
    for _ in range(n):
        actor = _u64.unpack_from(buf, p)[0]
        seq, p = get_varint(buf, p + 8)
        if p + HASH_LEN + PUB_LEN + SIG_LEN > len(buf):
            raise ProtocolError("CHANGES head list runs past its message")
        h = bytes(buf[p:p + HASH_LEN])
        p += HASH_LEN
        pub = bytes(buf[p:p + PUB_LEN])
        p += PUB_LEN
        sig = bytes(buf[p:p + SIG_LEN])
        p += SIG_LEN
        out.append(Head(actor, seq, h, pub, sig))
    return out, p


class Signer:
    """Signs heads for the actors whose keys this device holds."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self._keys = {}
        self._missing = set()
        self._load()

    def _load(self):
        from nacl.signing import SigningKey
        for a, seed in load_keys(self.data_dir).items():
            if a not in self._keys:
                sk = SigningKey(seed)
                self._keys[a] = (sk, bytes(sk.verify_key))

    def has(self, actor) -> bool:
        if actor in self._keys:
            return True
        if actor in self._missing:
            return False
        self._load()  # a fork may have moved this device to a fresh key since
        if actor in self._keys:
            return True
        self._missing.add(actor)
        return False

    def sign(self, actor, seq, h) -> Head:
        sk, pub = self._keys[actor]
        return Head(actor, seq, h, pub, sk.sign(head_message(actor, seq, h)).signature)


_verified = {}   # (actor, seq, hash, sig) -> True: a head checked once is not checked again


def _valid(head) -> bool:
    k = (head.actor, head.seq, head.hash, head.sig)
    if k in _verified:
        return True
    if actor_of(head.pub) != head.actor:
        return False
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey
    try:
        VerifyKey(head.pub).verify(head_message(head.actor, head.seq, head.hash), head.sig)
    except (BadSignatureError, ValueError):
        return False
    if len(_verified) > 4096:
        _verified.clear()
    _verified[k] = True
    return True


def authenticate(changes, heads, accept_unsigned=False):
    """Split parsed changes into (taken, refused, used): taken are vouched
    for by a valid head through the chain; refused is [(change, reason)];
    used is [(head, changes it vouches for, their bytes, lowest prev)] for
    the heads that vouched for something (the caller keeps them to relay
    those changes later)."""
    by_actor = {}
    for c in changes:
        by_actor.setdefault(c.actor, []).append(c)   # copies: `changes` keeps its order
    hs = {}
    for h in heads:
        hs.setdefault(h.actor, []).append(h)
    taken, refused, used = [], [], []
    for actor, cs in by_actor.items():
        anchors = {}      # seq -> (hash, head or None)
        bad = None
        for h in hs.get(actor, ()):
            if _valid(h):
                anchors[h.seq] = (h.hash, h)
            else:
                bad = ("a head of actor %016x carries a signature that its actor's key did "
                       "not make (a forged change?)" % actor)
        tally = {}        # head -> [count, bytes, lowest prev]
        cs.sort(key=lambda c: c.seq, reverse=True)
        for c in cs:
            if c.prev_hash is None:
                if accept_unsigned:
                    taken.append(c)
                else:
                    refused.append((c, "change %d of actor %016x is unsigned (change format "
                                       "%d, written before 0.2.0; take such changes with "
                                       "--accept-unsigned while the fleet upgrades)"
                                    % (c.seq, actor, c.raw[0])))
                continue
            a = anchors.get(c.seq)
            if a is None or a[0] != c.hash:
                refused.append((c, bad or "change %d of actor %016x is not signed by its actor "
                                          "(no signed head vouches for it: a forged change?)"
                                % (c.seq, actor)))
                continue
            taken.append(c)
            head = a[1]
            t = tally.setdefault(id(head), [head, 0, 0, c.prev])
            t[1] += 1
            t[2] += len(c.raw)
            t[3] = c.prev
            if c.prev and c.prev not in anchors:
                anchors[c.prev] = (c.prev_hash, head)
        used.extend(tuple(t) for t in tally.values())
    if len(taken) == len(changes):
        return list(changes), refused, used
    ok = {id(c) for c in taken}
    return [c for c in changes if id(c) in ok], refused, used  # in the order they came


def adopt_signed_actor(node, signer) -> str:
    """A data directory made before keys existed writes as a random actor id
    no key vouches for: move it to a fresh key's actor (its earlier changes
    stay unsigned). Returns a message for the log, or None."""
    if node.readonly or signer.has(node.actor):
        return None
    old = node.actor
    new = node._take_fresh_actor()
    signer.has(new)
    msg = ("this device now writes as actor %016x, made from its new signing key "
           "(actor.key); what it wrote as %016x is unsigned, and peers take it only with "
           "--accept-unsigned" % (new, old))
    node.events.append(msg)
    return msg
