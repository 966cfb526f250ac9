"""Generate the device colour palette of agent/observe/colours.py (run by hand).

    python3 scripts/palette.py

Stdlib only; about 40 s on one core. It prints the palette as a tuple to
paste over PALETTE in agent/observe/colours.py, then its figures: the smallest
CIEDE2000 difference between two of its colours for normal vision and for each
simulated dichromacy, the smallest WCAG contrast against white, and the time.

The problem: 32 colours, each with contrast >= 4.5:1 against #ffffff (so white
text on it passes too), as far apart as possible for everyone. The distance of
two colours is the smallest CIEDE2000 difference (CIELAB, D65) of the two as
seen with normal vision and as simulated for protanopia, deuteranopia and
tritanopia (Machado, Oliveira & Fernandes 2009, severity 1.0, applied in
linear RGB and clipped to the gamut); the palette maximises the smallest
distance between two of its colours.

How:
1. candidates: every sRGB colour with channels in steps of 5 (0, 5, ..., 255)
   that meets the contrast, 51,111 of them;
2. greedy farthest-point selection: start from the candidate farthest from
   black, then add, 31 times, the candidate whose nearest chosen colour is
   farthest;
3. swaps: while one of the two colours of the closest pair can be replaced by
   a candidate farther from all the others than it is, replace it;
4. polish: hill-climb each colour off the grid in 8-bit moves of 16, 8, 4, 2,
   then 1 per channel (26 directions) while a move takes it farther from its
   nearest neighbour and keeps the contrast; 3 and 4 again while they gain
   (a second round gained nothing in the run that made the palette);
5. order: farthest-point order over the result (the farthest pair first, then
   each colour the farthest from those before it).

Nothing is random: the same run gives the same palette. tests/observe/
test_colours.py imports ciede2000, lab and VISIONS from here.
"""
import math
import sys
import time

SIZE = 32
MIN_CONTRAST = 4.5
STEP = 5                                   # candidate grid; 255 = 51 * 5
POLISH_STEPS = (16, 8, 4, 2, 1)
ROUNDS = 3

# Machado, Oliveira & Fernandes (2009), severity 1.0, rows act on linear RGB.
VISIONS = {
    "normal": None,
    "protan": ((0.152286, 1.052583, -0.204868),
               (0.114503, 0.786281, 0.099216),
               (-0.003882, -0.048116, 1.051998)),
    "deutan": ((0.367322, 0.860646, -0.227968),
               (0.280085, 0.672501, 0.047413),
               (-0.011820, 0.042940, 0.968881)),
    "tritan": ((1.255528, -0.076749, -0.178779),
               (-0.078411, 0.930809, 0.147602),
               (0.004733, 0.691367, 0.303900)),
}

# IEC 61966-2-1; for 8-bit values the 0.04045 threshold and WCAG 2.x's
# 0.03928 pick the same branch (10/255 < both < 11/255).
LINEAR = tuple((c / 12.92) if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
               for c in (i / 255 for i in range(256)))


def rgb(hex_colour):
    """'#rrggbb' -> (r, g, b) in 0..255."""
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def to_hex(c):
    return "#%02x%02x%02x" % tuple(c)


def luminance(c):
    """WCAG relative luminance of an 8-bit (r, g, b)."""
    return 0.2126 * LINEAR[c[0]] + 0.7152 * LINEAR[c[1]] + 0.0722 * LINEAR[c[2]]


def contrast_on_white(c):
    return 1.05 / (luminance(c) + 0.05)


def lab(c, vision="normal"):
    """CIELAB (D65) of an 8-bit (r, g, b) or '#rrggbb' as `vision` sees it."""
    if isinstance(c, str):
        c = rgb(c)
    r, g, b = LINEAR[c[0]], LINEAR[c[1]], LINEAR[c[2]]
    m = VISIONS[vision]
    if m is not None:
        r, g, b = (min(1.0, max(0.0, row[0] * r + row[1] * g + row[2] * b)) for row in m)
    x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b
    z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t):
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116
    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def ciede2000(lab1, lab2):
    """CIEDE2000 colour difference (kL = kC = kH = 1), per Sharma, Wu & Dalal 2005."""
    L1, a1, b1 = lab1
    L2, a2, b2 = lab2
    cm7 = ((math.hypot(a1, b1) + math.hypot(a2, b2)) / 2) ** 7
    G = 0.5 * (1 - math.sqrt(cm7 / (cm7 + 6103515625.0)))          # 25 ** 7
    a1p, a2p = a1 * (1 + G), a2 * (1 + G)
    C1p, C2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1 = math.degrees(math.atan2(b1, a1p)) % 360 if C1p else 0.0
    h2 = math.degrees(math.atan2(b2, a2p)) % 360 if C2p else 0.0
    dL, dC = L2 - L1, C2p - C1p
    if C1p * C2p == 0:
        dh = 0.0
        hm = h1 + h2
    else:
        dh = h2 - h1
        if dh > 180:
            dh -= 360
        elif dh < -180:
            dh += 360
        if abs(h1 - h2) <= 180:
            hm = (h1 + h2) / 2
        elif h1 + h2 < 360:
            hm = (h1 + h2 + 360) / 2
        else:
            hm = (h1 + h2 - 360) / 2
    dH = 2 * math.sqrt(C1p * C2p) * math.sin(math.radians(dh / 2))
    Lm, Cm = (L1 + L2) / 2, (C1p + C2p) / 2
    T = (1 - 0.17 * math.cos(math.radians(hm - 30)) + 0.24 * math.cos(math.radians(2 * hm))
         + 0.32 * math.cos(math.radians(3 * hm + 6)) - 0.20 * math.cos(math.radians(4 * hm - 63)))
    Lm50 = (Lm - 50) ** 2
    SL = 1 + 0.015 * Lm50 / math.sqrt(20 + Lm50)
    SC = 1 + 0.045 * Cm
    SH = 1 + 0.015 * Cm * T
    Cm7 = Cm ** 7
    RT = (-2 * math.sqrt(Cm7 / (Cm7 + 6103515625.0))
          * math.sin(math.radians(60 * math.exp(-(((hm - 275) / 25) ** 2)))))
    tL, tC, tH = dL / SL, dC / SC, dH / SH
    return math.sqrt(tL * tL + tC * tC + tH * tH + RT * tC * tH)


def min_pairwise(palette, vision):
    """(smallest CIEDE2000 between two colours of `palette` under `vision`, the pair)."""
    labs = [lab(c, vision) for c in palette]
    return min((ciede2000(labs[i], labs[j]), (palette[i], palette[j]))
               for i in range(len(palette)) for j in range(i + 1, len(palette)))


class Space:
    """Colours with their Lab under every vision, cached; distance = min over visions."""

    def __init__(self):
        self.labs = {}

    def of(self, c):
        v = self.labs.get(c)
        if v is None:
            v = self.labs[c] = tuple(lab(c, name) for name in VISIONS)
        return v

    def dist(self, c, d):
        return min(map(ciede2000, self.of(c), self.of(d)))

    def nearest(self, c, others):
        return min(self.dist(c, o) for o in others)


def generate(log=lambda *a: None):
    space = Space()
    levels = range(0, 256, STEP)
    cands = [(r, g, b) for r in levels for g in levels for b in levels
             if contrast_on_white((r, g, b)) >= MIN_CONTRAST]
    for c in cands:
        space.of(c)
    log("candidates: %d" % len(cands))

    # 2. greedy farthest point; rows[k][n] = distance of cands[n] to chosen[k]
    def row(p):
        return [space.dist(c, p) for c in cands]
    black = row((0, 0, 0))
    first = cands[max(range(len(cands)), key=black.__getitem__)]
    chosen, rows = [first], [row(first)]
    near = rows[0][:]
    while len(chosen) < SIZE:
        n = max(range(len(cands)), key=near.__getitem__)
        chosen.append(cands[n])
        rows.append(row(cands[n]))
        near = list(map(min, near, rows[-1]))
    log("greedy: min distance %.3f" % pairwise_min(space, chosen)[0])

    # 3 and 4, while they gain
    best = pairwise_min(space, chosen)[0]
    for round_ in range(ROUNDS):
        swap(space, cands, chosen, rows, row)
        log("round %d swaps: min distance %.3f" % (round_, pairwise_min(space, chosen)[0]))
        polish(space, chosen)
        d = pairwise_min(space, chosen)[0]
        log("round %d polish: min distance %.3f" % (round_, d))
        if d <= best + 1e-6:
            break
        best = d
        rows[:] = [row(c) for c in chosen]

    # 5. farthest-point order
    _, (i, j) = max((space.dist(chosen[i], chosen[j]), (i, j))
                    for i in range(SIZE) for j in range(i + 1, SIZE))
    order = [chosen[i], chosen[j]]
    rest = [c for c in chosen if c not in order]
    while rest:
        c = max(rest, key=lambda c: space.nearest(c, order))
        order.append(c)
        rest.remove(c)
    return [to_hex(c) for c in order]


def swap(space, cands, chosen, rows, row):
    """Step 3: move a colour of the closest pair to the candidate farthest from the rest."""
    while True:
        d, (i, j) = pairwise_min(space, chosen)
        for k in (i, j):
            others = [rows[m] for m in range(SIZE) if m != k]
            best = list(map(min, *others))
            n = max(range(len(cands)), key=best.__getitem__)
            if best[n] > d + 1e-9:
                chosen[k], rows[k] = cands[n], row(cands[n])
                break
        else:
            return


DIRS = [(dr, dg, db) for dr in (-1, 0, 1) for dg in (-1, 0, 1) for db in (-1, 0, 1)
        if (dr, dg, db) != (0, 0, 0)]


def polish(space, chosen):
    """Step 4: hill-climb each colour away from its nearest neighbour, in 8-bit steps."""
    for step in POLISH_STEPS:
        improved = True
        while improved:
            improved = False
            for k in range(SIZE):
                others = chosen[:k] + chosen[k + 1:]
                here = space.nearest(chosen[k], others)
                for dv in DIRS:
                    c = tuple(v + step * d for v, d in zip(chosen[k], dv))
                    if min(c) < 0 or max(c) > 255 or contrast_on_white(c) < MIN_CONTRAST:
                        continue
                    there = space.nearest(c, others)
                    if there > here + 1e-9:
                        chosen[k], here, improved = c, there, True


def pairwise_min(space, chosen):
    return min((space.dist(chosen[i], chosen[j]), (i, j))
               for i in range(len(chosen)) for j in range(i + 1, len(chosen)))


def main():
    t0 = time.monotonic()
    palette = generate(log=lambda s: print(s, file=sys.stderr))
    took = time.monotonic() - t0
    print("PALETTE = (")
    for k in range(0, SIZE, 4):
        print("    " + " ".join('"%s",' % h for h in palette[k:k + 4]))
    print(")")
    for vision in VISIONS:
        d, pair = min_pairwise(palette, vision)
        print("min CIEDE2000 %-6s %6.3f  %s %s" % (vision, d, *pair))
    worst = min(palette, key=lambda h: contrast_on_white(rgb(h)))
    print("min contrast on #ffffff %.3f  %s" % (contrast_on_white(rgb(worst)), worst))
    print("generated in %.1f s" % took)


if __name__ == "__main__":
    main()
