"""Device ids as people type them: a check character, and lookup by name,
id or the start of an id.

A device id is 28 base32 characters of its certificate's hash (identity.py,
cert_id); that is what peers.json and state.json hold and what a connection
is pinned to. People see it with a check character appended, as a fifth
group:

    K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H

The check is Luhn's algorithm mod 32 over the base32 digits: every single
mistyped character is caught, and every swap of two neighbours but A<->7
(digit values 0 and 31, as 0<->9 for Luhn in decimal). An id
typed without its check character (as devices before 0.5 print it) is
refused unless the caller allows it (`peer add --unchecked`).
"""
from ..errors import UsageError

__all__ = ["ID_CHARS", "check_char", "display_id", "normalize_id", "stored_id", "resolve"]

ID_CHARS = 28
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}


def check_char(body: str) -> str:
    """Luhn mod 32 check character of a string of base32 digits."""
    factor, total, n = 2, 0, len(ALPHABET)
    for ch in reversed(body):
        addend = factor * _VALUE[ch]
        factor = 3 - factor
        total += addend // n + addend % n
    return ALPHABET[(n - total % n) % n]


def display_id(did: str) -> str:
    """The id as shown to people: grouped 7-7-7-7 and its check character."""
    body = did.replace("-", "")
    return "%s-%s" % (_group(body), check_char(body))


def _group(body):
    return "-".join(body[i:i + 7] for i in range(0, ID_CHARS, 7))


def _letters(text):
    return "".join(ch for ch in text.upper() if ch not in "- \t")


def normalize_id(text: str, unchecked: bool = False) -> str:
    """The stored form (28 characters, 7-7-7-7) of an id a person typed.
    With its check character it must match; without one, only if
    `unchecked`. A UsageError says which."""
    s = _letters(text)
    if not s or any(ch not in _VALUE for ch in s) or len(s) not in (ID_CHARS, ID_CHARS + 1):
        raise UsageError("%r is not a device id: an id is 29 letters and digits 2-7 in five "
                         "groups, as `mycelium id` prints it on that device" % text)
    body = s[:ID_CHARS]
    if len(s) == ID_CHARS + 1:
        if check_char(body) != s[-1]:
            raise UsageError("%r is mistyped: its last character (a check) does not match "
                             "the rest. Copy the id again from `mycelium id` on that device"
                             % text)
    elif not unchecked:
        raise UsageError("%r has no check character (the fifth group, as `mycelium id` prints "
                         "it from 0.5 on), so a typo could not be caught. Add it, or pass "
                         "--unchecked if that device runs an older version and you have "
                         "checked the id by eye" % text)
    return _group(body)


def stored_id(did: str) -> str:
    """An id as stored, from either form (a shown id loses its check group);
    anything else is returned as it is (tests name devices freely)."""
    if len(did) == 4 * 8 + 1 and did[-2] == "-":
        try:
            if check_char(did[:-2].replace("-", "")) == did[-1]:
                return did[:-2]
        except KeyError:    # not base32
            pass
    return did


def resolve(peers: dict, text: str):
    """The one known peer `text` names: its name, its id (with or without
    the check character) or at least 4 characters of its start.
    peers: {device_id: entry}. Returns the device id; UsageError if none
    or several match, naming them."""
    named = [d for d, e in peers.items() if e.get("name") == text]
    if len(named) == 1:
        return named[0]
    s = _letters(text)
    if len(s) == ID_CHARS + 1 and s[:ID_CHARS] in {d.replace("-", "") for d in peers}:
        s = s[:ID_CHARS]
    hits = [d for d in peers if d.replace("-", "").startswith(s)] if len(s) >= 4 else []
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UsageError("%r is ambiguous: it is the start of %d peers' ids (%s); give more "
                         "of the id, or the peer's name" % (
                             text, len(hits), ", ".join(_label(d, peers[d]) for d in sorted(hits))))
    if len(s) < 4 and not named:
        raise UsageError("%r names no known peer: give a peer's name, or at least 4 "
                         "characters of its id (see `mycelium peer list`)" % text)
    raise UsageError("%r names no known peer; see `mycelium peer list`" % text)


def _label(did, entry):
    name = entry.get("name")
    return "%s (%s)" % (display_id(did), name) if name else display_id(did)
