"""Device colours: one fixed colour per device, the same on every dashboard and CLI.

The palette: 32 colours made by scripts/palette.py (run by hand; it prints the
figures). Each has WCAG 2.x contrast >= 4.5:1 against the dashboard's white
page, so white text on it passes too: the CLI shows a device as a badge, white
text on its colour, which reads on dark and light terminals alike. Among such
colours the palette maximises the smallest difference between two of them,
taken as CIEDE2000 (CIELAB, D65) under normal vision and under simulated
protanopia, deuteranopia and tritanopia (Machado et al. 2009, severity 1.0),
whichever is smallest: smallest CIEDE2000 8.40 normal, 8.04 protan, 8.05
deutan, 8.07 tritan. 32 colours that dark are many for that, so some are
muted or very dark; a label next to the colour still names the device. The
order is farthest-point order (each colour the farthest from those before it).

Which colour: a device's slot is sha256 of its id string (UTF-8; the id's
display form, e.g. '5JBYOJE-CVQRGOM-5QPRHQG-47RFBVX-2'), first 8 bytes
big-endian, mod 32: stable across processes, machines and Python versions
(unlike hash()), and computable by any other client. colour_of() is that slot
alone; fleet_colours() gives the devices of one fleet distinct colours.

Terminals: colour unless NO_COLOR is set, the stream is not a tty or TERM is
dumb, with FORCE_COLOR to force it; 24-bit colour when COLORTERM says so, else
the nearest xterm-256 colour with which white text still passes 4.5:1.

Stdlib only and nothing computed at import: the dashboard and the CLI import it.
"""
import hashlib
import os
import sys

__all__ = ["PALETTE", "slot_of", "colour_of", "fleet_colours", "contrast",
           "use_colour", "badge", "xterm256"]

# scripts/palette.py; tests/observe/test_colours.py holds it to its figures
PALETTE: tuple[str, ...] = (
    "#d24706", "#0301ee", "#200d00", "#78776e",
    "#000057", "#4b4e55", "#3d69ff", "#9e060e",
    "#235e7e", "#000015", "#8b7350", "#667a80",
    "#282339", "#0776a8", "#ca1ea2", "#1c3d37",
    "#190091", "#aa067a", "#5c6665", "#19002d",
    "#6d6452", "#473c58", "#413725", "#03870c",
    "#3b5142", "#785d36", "#540d00", "#2151e5",
    "#1e2760", "#6402b7", "#112020", "#08560f",
)

MIN_CONTRAST = 4.5
_WHITE = "#ffffff"


def slot_of(device_id: str) -> int:
    """The palette slot a device prefers: sha256 of its id, first 8 bytes big-endian, mod 32."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % len(PALETTE)


def colour_of(device_id: str) -> str:
    """The device's own colour, '#rrggbb', from its id alone (see slot_of)."""
    return PALETTE[slot_of(device_id)]


def fleet_colours(device_ids) -> dict[str, str]:
    """Colours for the devices of one fleet: distinct for up to 32 devices.

    The ids are sorted by (preferred slot, id); each in turn takes its
    preferred slot or, if taken, the next free one (wrapping from 31 to 0).
    Past 32 devices colours repeat: once all 32 slots are taken a fresh round
    of slots starts. Duplicate ids count once.

    The mapping depends only on the set of ids, not their order, so it is
    stable as long as the fleet is the same; a device joining or leaving can
    move the devices that collided with it. Alone a device always gets its
    own hash slot, fleet_colours([d]) == {d: colour_of(d)}; in a fleet it
    keeps it unless a device sorted before it took it (one of the same slot,
    or one moved on to it by a collision).
    """
    if isinstance(device_ids, str):
        raise TypeError("fleet_colours takes a collection of ids, not one id")
    n = len(PALETTE)
    taken: set[int] = set()
    out: dict[str, str] = {}
    for device_id, slot in sorted(((d, slot_of(d)) for d in set(device_ids)),
                                  key=lambda e: (e[1], e[0])):
        if len(taken) == n:
            taken.clear()
        while slot in taken:
            slot = (slot + 1) % n
        taken.add(slot)
        out[device_id] = PALETTE[slot]
    return out


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour[1:] if hex_colour.startswith("#") else hex_colour
    if len(h) != 6:
        raise ValueError("not a #rrggbb colour: %r" % (hex_colour,))
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _luminance(rgb: tuple[int, int, int]) -> float:
    # WCAG 2.x relative luminance; for 8-bit channels its 0.03928 threshold and
    # sRGB's 0.04045 pick the same branch
    r, g, b = ((c / 12.92) if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
               for c in (v / 255 for v in rgb))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(hex_a: str, hex_b: str) -> float:
    """WCAG 2.x contrast ratio of two '#rrggbb' colours, 1.0 to 21.0."""
    la, lb = _luminance(_rgb(hex_a)), _luminance(_rgb(hex_b))
    if la < lb:
        la, lb = lb, la
    return (la + 0.05) / (lb + 0.05)


def _set(name: str) -> bool:
    return bool(os.environ.get(name))


def use_colour(stream) -> bool:
    """Whether to write colour to `stream`.

    No if NO_COLOR is set to anything non-empty (no-color.org); else yes if
    FORCE_COLOR is non-empty and not '0'; else no if TERM is 'dumb' or the
    stream is not a tty. The order of Python's own (3.13) colour choice.
    """
    if _set("NO_COLOR"):
        return False
    force = os.environ.get("FORCE_COLOR", "")
    if force and force != "0":
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):       # no isatty, or closed
        return False


_CUBE = (0, 95, 135, 175, 215, 255)


def _xterm_rgb(n: int) -> tuple[int, int, int]:
    if n >= 232:
        v = 8 + 10 * (n - 232)
        return v, v, v
    n -= 16
    return _CUBE[n // 36], _CUBE[n // 6 % 6], _CUBE[n % 6]


_xterm_cache: dict[str, int] = {}


def xterm256(hex_colour: str) -> int:
    """The xterm-256 colour (16-255: the 6x6x6 cube and the grey ramp) nearest
    `hex_colour` by squared RGB distance among those on which white text has
    contrast >= 4.5:1. 0-15 are left out: each terminal sets its own."""
    n = _xterm_cache.get(hex_colour)
    if n is None:
        r, g, b = _rgb(hex_colour)
        best = None
        for i in range(16, 256):
            c = _xterm_rgb(i)
            if contrast("#%02x%02x%02x" % c, _WHITE) < MIN_CONTRAST:
                continue
            d = (c[0] - r) ** 2 + (c[1] - g) ** 2 + (c[2] - b) ** 2
            if best is None or d < best[0]:
                best = (d, i)
        n = _xterm_cache[hex_colour] = best[1]
    return n


def badge(text: str, hex_colour: str, stream=None) -> str:
    """`text` as a badge: white on `hex_colour`, a space of padding each side,
    if use_colour(stream) (stream: sys.stdout at the time of the call by
    default); else `text` unchanged. 24-bit SGR when COLORTERM is 'truecolor'
    or '24bit', else xterm-256 (see xterm256) with bright white text."""
    if not use_colour(sys.stdout if stream is None else stream):
        return text
    if os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        r, g, b = _rgb(hex_colour)
        return "\x1b[48;2;%d;%d;%dm\x1b[38;2;255;255;255m %s \x1b[0m" % (r, g, b, text)
    return "\x1b[48;5;%dm\x1b[97m %s \x1b[0m" % (xterm256(hex_colour), text)
