"""Device colours (agent/observe/colours.py): the palette's figures, the id-to-colour
rule, the fleet assignment and the terminal output.

CIEDE2000, CIELAB and the colour-blindness simulations come from
scripts/palette.py, the generator of the palette; they are checked here against
published figures before the palette is held to its own.
"""
import ast
import hashlib
import importlib.util
import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.observe.colours import (PALETTE, badge, colour_of, contrast, fleet_colours,
                                   slot_of, use_colour)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("palette_generator", ROOT / "scripts" / "palette.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

# What scripts/palette.py achieved (8.396, 8.045, 8.051, 8.072), a little below:
# a colour replaced by a near-duplicate of another, or by any colour closer
# than this to one, fails.
MIN_DELTA_E = {"normal": 8.35, "protan": 8.0, "deutan": 8.0, "tritan": 8.05}

# Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula:
# implementation notes, supplementary test data, and mathematical
# observations", Table 1: L1 a1 b1, L2 a2 b2, dE00
SHARMA_2005 = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, 3.1571, -77.2803), (50.0000, 0.0000, -82.7485), 2.8615),
    ((50.0000, 2.8361, -74.0200), (50.0000, 0.0000, -82.7485), 3.4412),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -1.1848, -84.8006), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, -0.9009, -85.5211), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, -1.0000, 2.0000), (50.0000, 0.0000, 0.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0010), 7.1792),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0011), 7.2195),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0012), 7.2195),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0009, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0010, -2.4900), 4.8045),
    ((50.0000, -0.0010, 2.4900), (50.0000, 0.0011, -2.4900), 4.7461),
    ((50.0000, 2.5000, 0.0000), (50.0000, 0.0000, -2.5000), 4.3065),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((50.0000, 2.5000, 0.0000), (61.0000, -5.0000, 29.0000), 22.8977),
    ((50.0000, 2.5000, 0.0000), (56.0000, -27.0000, -3.0000), 31.9030),
    ((50.0000, 2.5000, 0.0000), (58.0000, 24.0000, 15.0000), 19.4535),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.1736, 0.5854), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2972, 0.0000), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 1.8634, 0.5757), 1.0000),
    ((50.0000, 2.5000, 0.0000), (50.0000, 3.2592, 0.3350), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((61.2901, 3.7196, -5.3901), (61.4292, 2.2480, -4.9620), 1.8731),
    ((35.0831, -44.1164, 3.7933), (35.0232, -40.0716, 1.5901), 1.8645),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((36.4612, 47.8580, 18.3852), (36.2715, 50.5065, 21.2231), 1.4146),
    ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381),
    ((6.7747, -0.2908, -2.4247), (5.8714, -0.0985, -2.2286), 0.6377),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def device_id(rng):
    """A Syncthing-style display id: 7 groups of 7 base32 characters and a check."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "-".join("".join(rng.choice(alphabet) for _ in range(7)) for _ in range(7)) + "-2"


def ids_with_slots(slots, prefix="dev"):
    """For each wanted slot, a fresh id whose preferred slot it is, in order."""
    out, n = [], 0
    for want in slots:
        while True:
            n += 1
            candidate = "%s-%d" % (prefix, n)
            if slot_of(candidate) == want:
                out.append(candidate)
                break
    return out


# --- contrast -------------------------------------------------------------------


def test_contrast_matches_known_wcag_values():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0, abs=1e-9)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.005)   # just fails AA
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.005)   # just passes
    assert contrast("#ffffff", "#767676") == contrast("#767676", "#ffffff")
    assert contrast("#3d69ff", "#3d69ff") == 1.0
    # channel weights: pure green is far lighter than pure blue
    assert contrast("#00ff00", "#000000") == pytest.approx(15.3, abs=0.05)
    assert contrast("#0000ff", "#000000") == pytest.approx(2.44, abs=0.005)


def test_palette_is_32_distinct_rrggbb_colours():
    assert len(PALETTE) == 32
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in PALETTE)
    assert len(set(PALETTE)) == 32


def test_every_colour_meets_4_5_contrast_on_white():
    # on the white page, and so white text on the colour (the CLI badge) too
    for c in PALETTE:
        assert contrast(c, "#ffffff") >= 4.5, c


# --- colour science, then the palette's figures ---------------------------------


def test_ciede2000_matches_sharma_2005_test_data():
    for lab1, lab2, expected in SHARMA_2005:
        assert gen.ciede2000(lab1, lab2) == pytest.approx(expected, abs=1e-4), (lab1, lab2)
        assert gen.ciede2000(lab2, lab1) == pytest.approx(expected, abs=1e-4), (lab2, lab1)


def test_cielab_matches_reference_values():
    # sRGB -> CIELAB (D65), as published for these colours
    for hex_colour, expected in [("#ffffff", (100.0, 0.0, 0.0)), ("#000000", (0.0, 0.0, 0.0)),
                                 ("#ff0000", (53.2408, 80.0925, 67.2032)),
                                 ("#0000ff", (32.2970, 79.1875, -107.8602)),
                                 ("#808080", (53.5850, 0.0, 0.0))]:
        assert gen.lab(hex_colour) == pytest.approx(expected, abs=2e-3), hex_colour


def test_dichromacy_simulation_is_machado_in_linear_rgb():
    # Machado 2009 deuteranopia of pure red, applied in linear RGB, is #a39000
    # (in gamma-encoded RGB it would be #5e4700)
    assert gen.ciede2000(gen.lab("#ff0000", "deutan"), gen.lab("#a39000")) < 0.5
    # each row sums to 1: greys, white and black are seen unchanged
    for vision in ("protan", "deutan", "tritan"):
        for grey in ("#ffffff", "#808080", "#000000"):
            assert gen.lab(grey, vision) == pytest.approx(gen.lab(grey), abs=1e-3)
    # and each changes the colours it confuses: red for protan and deutan, blue for tritan
    for vision, confused in (("protan", "#ff0000"), ("deutan", "#ff0000"), ("tritan", "#0000ff")):
        assert gen.ciede2000(gen.lab(confused, vision), gen.lab(confused)) > 10


@pytest.mark.parametrize("vision", ["normal", "protan", "deutan", "tritan"])
def test_palette_colours_stay_apart_for_each_vision(vision):
    d, pair = gen.min_pairwise(list(PALETTE), vision)
    assert d >= MIN_DELTA_E[vision], (vision, d, pair)


def test_palette_is_in_farthest_point_order():
    # each colour is the farthest (smallest CIEDE2000 over the four visions) from
    # those before it; the first two are the farthest pair
    space = gen.Space()
    rgb = [gen.rgb(c) for c in PALETTE]
    dist = space.dist
    far = max(dist(a, b) for i, a in enumerate(rgb) for b in rgb[i + 1:])
    assert dist(rgb[0], rgb[1]) == pytest.approx(far)
    for k in range(2, len(rgb)):
        best = max(space.nearest(c, rgb[:k]) for c in rgb[k:])
        assert space.nearest(rgb[k], rgb[:k]) == pytest.approx(best), PALETTE[k]


# --- which colour ---------------------------------------------------------------


def test_colour_of_is_the_sha256_slot():
    rng = random.Random(1)
    for d in ["5JBYOJE-CVQRGOM-5QPRHQG-47RFBVX-2", "", "laptop", "ünïcode"] + \
            [device_id(rng) for _ in range(200)]:
        slot = int.from_bytes(hashlib.sha256(d.encode("utf-8")).digest()[:8], "big") % 32
        assert slot_of(d) == slot
        assert colour_of(d) == PALETTE[slot]
    # pinned, so that another client (the dashboard's) can be checked against it
    assert slot_of("5JBYOJE-CVQRGOM-5QPRHQG-47RFBVX-2") == 20


def test_colour_of_is_the_same_in_another_process():
    rng = random.Random(2)
    ids = [device_id(rng) for _ in range(50)]
    code = ("import sys; from agent.observe.colours import colour_of; "
            "print(' '.join(colour_of(d) for d in sys.argv[1:]))")
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code, *ids], cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=seed))
        assert out.stdout.split() == [colour_of(d) for d in ids]


def test_fleet_of_32_gets_32_distinct_colours():
    rng = random.Random(3)
    for _ in range(20):
        ids = [device_id(rng) for _ in range(32)]
        got = fleet_colours(ids)
        assert sorted(got) == sorted(ids)
        assert set(got.values()) == set(PALETTE)


def test_fleet_colours_do_not_depend_on_input_order():
    rng = random.Random(4)
    ids = [device_id(rng) for _ in range(40)] + ids_with_slots([5, 5, 5, 31, 31, 0])
    want = fleet_colours(ids)
    for _ in range(20):
        rng.shuffle(ids)
        assert fleet_colours(ids) == want
        assert fleet_colours(iter(ids + ids[:7])) == want      # any iterable; duplicates once


def test_a_device_alone_gets_its_own_colour():
    rng = random.Random(5)
    for d in [device_id(rng) for _ in range(50)]:
        assert fleet_colours([d]) == {d: colour_of(d)}


def test_devices_on_distinct_slots_keep_their_own_colours():
    ids = ids_with_slots([0, 3, 7, 30, 31])
    assert fleet_colours(ids) == {d: colour_of(d) for d in ids}


def test_a_collision_takes_the_next_free_slot_wrapping():
    a, b, c = ids_with_slots([31, 31, 31])
    d, = ids_with_slots([0], prefix="other")
    # sorted by (slot, id): the smallest id of slot 31 keeps it, the others move on
    # past 31 to 0 and 1 -- except that d, sorted first with slot 0, holds 0
    first, second, third = sorted([a, b, c])
    assert fleet_colours([a, b, c]) == {first: PALETTE[31], second: PALETTE[0],
                                        third: PALETTE[1]}
    assert fleet_colours([a, b, c, d]) == {d: PALETTE[0], first: PALETTE[31],
                                           second: PALETTE[1], third: PALETTE[2]}


def test_33_devices_use_every_colour_and_repeat_one():
    rng = random.Random(6)
    for _ in range(20):
        got = fleet_colours([device_id(rng) for _ in range(33)])
        values = list(got.values())
        assert len(values) == 33
        assert set(values) == set(PALETTE)
        assert len(values) - len(set(values)) == 1


def test_fleet_colours_refuses_a_single_id_string():
    with pytest.raises(TypeError):
        fleet_colours("5JBYOJE-CVQRGOM-5QPRHQG-47RFBVX-2")


def test_module_imports_only_the_standard_library():
    tree = ast.parse((ROOT / "agent" / "observe" / "colours.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names, name


# --- terminals ------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")   # as a real file does
        return True


@pytest.fixture
def env(monkeypatch):
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLORTERM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


def test_a_tty_gets_colour(env):
    assert use_colour(Tty()) is True


def test_no_color_disables_colour(env):
    env.setenv("NO_COLOR", "1")
    assert use_colour(Tty()) is False
    env.setenv("FORCE_COLOR", "1")                   # the user's NO_COLOR wins
    assert use_colour(Tty()) is False
    env.setenv("NO_COLOR", "")                       # empty means unset (no-color.org)
    env.delenv("FORCE_COLOR")
    assert use_colour(Tty()) is True


def test_a_stream_that_is_not_a_tty_gets_no_colour(env):
    assert use_colour(io.StringIO()) is False
    assert use_colour(object()) is False              # no isatty at all
    closed = Tty()
    closed.close()
    assert use_colour(closed) is False


def test_term_dumb_disables_colour(env):
    env.setenv("TERM", "dumb")
    assert use_colour(Tty()) is False


def test_force_color_enables_colour(env):
    env.setenv("FORCE_COLOR", "1")
    assert use_colour(io.StringIO()) is True
    env.setenv("TERM", "dumb")
    assert use_colour(io.StringIO()) is True
    env.setenv("FORCE_COLOR", "0")
    assert use_colour(io.StringIO()) is False


def test_badge_is_the_plain_text_without_colour(env):
    assert badge("laptop", PALETTE[0], io.StringIO()) == "laptop"
    env.setenv("NO_COLOR", "1")
    assert badge("laptop", PALETTE[0], Tty()) == "laptop"


def test_badge_defaults_to_stdout_at_call_time(env):
    env.setattr(sys, "stdout", Tty())
    assert badge("x", "#0301ee") != "x"
    env.setattr(sys, "stdout", io.StringIO())
    assert badge("x", "#0301ee") == "x"


def test_badge_in_truecolor_is_white_on_the_exact_colour(env):
    for value in ("truecolor", "24bit"):
        env.setenv("COLORTERM", value)
        assert badge("laptop", "#d24706", Tty()) == \
            "\x1b[48;2;210;71;6m\x1b[38;2;255;255;255m laptop \x1b[0m"


def _xterm_rgb(n):
    """xterm's 256-colour palette, entries 16-255."""
    if n >= 232:
        return (8 + 10 * (n - 232),) * 3
    levels = (0, 95, 135, 175, 215, 255)
    n -= 16
    return levels[n // 36], levels[n // 6 % 6], levels[n % 6]


def test_badge_256_colour_fallback_keeps_white_text_at_4_5_contrast(env):
    passing = [n for n in range(16, 256)
               if contrast("#%02x%02x%02x" % _xterm_rgb(n), "#ffffff") >= 4.5]
    for c in PALETTE:
        out = badge("laptop", c, Tty())
        m = re.fullmatch(r"\x1b\[48;5;(\d+)m\x1b\[97m laptop \x1b\[0m", out)
        assert m, repr(out)
        n = int(m.group(1))
        assert 16 <= n <= 255
        assert contrast("#%02x%02x%02x" % _xterm_rgb(n), "#ffffff") >= 4.5, (c, n)
        # and the nearest such, by squared RGB distance
        r, g, b = gen.rgb(c)
        dist = [sum((x - y) ** 2 for x, y in zip(_xterm_rgb(k), (r, g, b))) for k in passing]
        assert sum((x - y) ** 2 for x, y in zip(_xterm_rgb(n), (r, g, b))) == min(dist), c
