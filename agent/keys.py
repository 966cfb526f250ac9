"""Actor keys. Each actor id is derived from an Ed25519 public key, and the
device that writes as that actor holds the private key:

    actor id = u64 LE of blake2b(public key, digest_size=8, person="mycelium-actor")

so a change's actor names the one key that may vouch for it, and a key sent
beside a signature is checked against the actor id it claims (forging one
means finding a key whose hash matches: 2^64 work). Keys live in `actor.key`
in the data directory (JSON with a CRC, mode 0600): the current actor's and
those it wrote as before (a fork or an upgrade moves a device to a fresh
actor, agent/fork.py), so changes written under an old id can still be
signed when they are first sent.

What is signed is a head (agent/sync/signing.py): (actor, seq, hash) of one
change, which vouches, through the hash chain (agent/change.py), for every
change of that actor below it. PyNaCl (libsodium) is imported only here and
only when a key is made or used: by `init`, `serve` and `sync`, never on the
read or write path.
"""
import os
import struct

from . import fs
from .change import _blake
from .errors import StoreCorrupt

__all__ = ["KEY_FILE", "actor_of", "new_actor_key", "load_keys", "head_message"]

KEY_FILE = "actor.key"
_PERSON = b"mycelium-actor"
_u64 = struct.Struct("<Q")
FIX = ("Restore it from a backup of this data directory. Without it this device cannot "
       "sign its changes; moving it away makes `serve` give the device a fresh actor id")

def actor_of(pub: bytes) -> int:
    """The actor id of an Ed25519 public key (32 bytes)."""
    return _u64.unpack(_blake(pub, digest_size=8, person=_PERSON).digest())[0]


def head_message(actor: int, seq: int, h: bytes) -> bytes:
    """The bytes an actor signs to vouch for its change (actor, seq) of hash h."""
    return b"mycelium head v1\x00" + _u64.pack(actor) + _u64.pack(seq) + h


def _path(data_dir):
    return os.path.join(data_dir, KEY_FILE)


def load_keys(data_dir: str) -> dict:
    """{actor: 32-byte seed} of every key this device holds ({} if none)."""
    d = fs.read_json(_path(data_dir), "this device's signing keys", FIX, default=None,
                     legacy_ok=False)
    if d is None:
        return {}
    try:
        return {int(a, 16): bytes.fromhex(s) for a, s in d["keys"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise StoreCorrupt("%s holds no valid keys. %s" % (_path(data_dir), FIX)) from None


def new_actor_key(data_dir: str) -> int:
    """Make a key pair, store it beside the others (durably, before the
    caller uses the actor id) and return its actor id."""
    from nacl.signing import SigningKey
    while True:
        sk = SigningKey.generate()
        actor = actor_of(bytes(sk.verify_key))
        if actor:
            break
    keys = load_keys(data_dir)
    keys[actor] = bytes(sk)
    fs.write_json(_path(data_dir), {"version": 1, "keys": {"%016x" % a: s.hex()
                                                           for a, s in keys.items()}},
                  mode=0o600)
    return actor
