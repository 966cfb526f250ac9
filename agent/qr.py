"""A small QR code encoder (ISO/IEC 18004) for `mycelium invite`: byte and
alphanumeric mode, error correction level M, versions 1 to 10 (up to 311
alphanumeric characters), the mask chosen by the standard's penalty rules.

Written here rather than taken from a library: segno added 0.52 MB to the
packed x86 binary (16.24 -> 16.76 MB) and took the arm64 one past its 15 MB
budget (15.38 MB). tests/test_qr.py reads codes of every version and mask
back with zbarimg, a real decoder.
"""

__all__ = ["matrix", "fits"]

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
# level M, versions 1-10: (EC codewords per block, [(blocks, data codewords)])
_BLOCKS = {1: (10, [(1, 16)]), 2: (16, [(1, 28)]), 3: (26, [(1, 44)]), 4: (18, [(2, 32)]),
           5: (24, [(2, 43)]), 6: (16, [(4, 27)]), 7: (18, [(4, 31)]),
           8: (22, [(2, 38), (2, 39)]), 9: (22, [(3, 36), (2, 37)]),
           10: (26, [(4, 43), (1, 44)])}
_ALIGN = {1: [], 2: [6, 18], 3: [6, 22], 4: [6, 26], 5: [6, 30], 6: [6, 34],
          7: [6, 22, 38], 8: [6, 24, 42], 9: [6, 26, 46], 10: [6, 28, 50]}
_MASKS = [lambda x, y: (x + y) % 2 == 0, lambda x, y: y % 2 == 0,
          lambda x, y: x % 3 == 0, lambda x, y: (x + y) % 3 == 0,
          lambda x, y: (x // 3 + y // 2) % 2 == 0, lambda x, y: x * y % 2 + x * y % 3 == 0,
          lambda x, y: (x * y % 2 + x * y % 3) % 2 == 0,
          lambda x, y: ((x + y) % 2 + x * y % 3) % 2 == 0]


def _capacity(version):
    return sum(n * d for n, d in _BLOCKS[version][1])


def _segments(text, version):
    """The data bits of `text` in one segment, alphanumeric if it can be."""
    bits = []

    def put(value, n):
        bits.extend((value >> i) & 1 for i in range(n - 1, -1, -1))
    if all(ch in ALNUM for ch in text):
        put(0b0010, 4)
        put(len(text), 9 if version <= 9 else 11)
        for i in range(0, len(text) - 1, 2):
            put(ALNUM.index(text[i]) * 45 + ALNUM.index(text[i + 1]), 11)
        if len(text) % 2:
            put(ALNUM.index(text[-1]), 6)
    else:
        data = text.encode("utf-8")
        put(0b0100, 4)
        put(len(data), 8 if version <= 9 else 16)
        for b in data:
            put(b, 8)
    return bits


def fits(text):
    """The smallest version that holds `text`, or None."""
    for v in range(1, 11):
        if len(_segments(text, v)) <= _capacity(v) * 8:
            return v
    return None


def _mul(x, y):
    z = 0
    for i in range(7, -1, -1):
        z = (z << 1) ^ ((z >> 7) * 0x11D)
        z ^= ((y >> i) & 1) * x
    return z


def _ec(data, degree):
    """Reed-Solomon check codewords of `data` (generator roots 2^0..2^(degree-1))."""
    div = [0] * (degree - 1) + [1]
    root = 1
    for _ in range(degree):
        for j in range(degree):
            div[j] = _mul(div[j], root)
            if j + 1 < degree:
                div[j] ^= div[j + 1]
        root = _mul(root, 2)
    rem = [0] * degree
    for b in data:
        factor = b ^ rem.pop(0)
        rem.append(0)
        for i, coef in enumerate(div):
            rem[i] ^= _mul(coef, factor)
    return rem


def _codewords(text, version):
    cap = _capacity(version)
    bits = _segments(text, version)
    bits += [0] * min(4, cap * 8 - len(bits))
    bits += [0] * (-len(bits) % 8)
    data = [int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8)]
    pad = 0xEC
    while len(data) < cap:
        data.append(pad)
        pad ^= 0xEC ^ 0x11
    ec, groups = _BLOCKS[version]
    blocks, at = [], 0
    for n, d in groups:
        for _ in range(n):
            blocks.append(data[at:at + d])
            at += d
    checks = [_ec(b, ec) for b in blocks]
    out = []
    for i in range(max(len(b) for b in blocks)):
        out += [b[i] for b in blocks if i < len(b)]
    for i in range(ec):
        out += [c[i] for c in checks]
    return out


def _function_modules(version):
    size = version * 4 + 17
    m = [[0] * size for _ in range(size)]
    fn = [[False] * size for _ in range(size)]

    def put(x, y, dark):
        m[y][x] = int(dark)
        fn[y][x] = True
    for i in range(size):
        put(6, i, i % 2 == 0)
        put(i, 6, i % 2 == 0)
    for cx, cy in ((3, 3), (size - 4, 3), (3, size - 4)):
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                if 0 <= cx + dx < size and 0 <= cy + dy < size:
                    put(cx + dx, cy + dy, max(abs(dx), abs(dy)) not in (2, 4))
    pos = _ALIGN[version]
    for i, ax in enumerate(pos):
        for j, ay in enumerate(pos):
            if (i, j) in ((0, 0), (0, len(pos) - 1), (len(pos) - 1, 0)):
                continue
            for dy in range(-2, 3):
                for dx in range(-2, 3):
                    put(ax + dx, ay + dy, max(abs(dx), abs(dy)) != 1)
    _format(put, size, 0)                  # reserved now, written with the mask
    if version >= 7:
        rem = version
        for _ in range(12):
            rem = (rem << 1) ^ ((rem >> 11) * 0x1F25)
        bits = version << 12 | rem
        for i in range(18):
            a, b = size - 11 + i % 3, i // 3
            put(a, b, (bits >> i) & 1)
            put(b, a, (bits >> i) & 1)
    return m, fn, size


def _format(put, size, mask):
    data = 0b00 << 3 | mask                # level M
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    bits = (data << 10 | rem) ^ 0x5412
    bit = [(bits >> i) & 1 for i in range(15)]
    for i in range(6):
        put(8, i, bit[i])
    put(8, 7, bit[6])
    put(8, 8, bit[7])
    put(7, 8, bit[8])
    for i in range(9, 15):
        put(14 - i, 8, bit[i])
    for i in range(8):
        put(size - 1 - i, 8, bit[i])
    for i in range(8, 15):
        put(8, size - 15 + i, bit[i])
    put(8, size - 8, 1)


def _penalty(m, size):
    score = 0
    lines = m + [list(col) for col in zip(*m)]
    for line in lines:
        run, prev = 0, None
        for v in line:
            run = run + 1 if v == prev else 1
            prev = v
            if run == 5:
                score += 3
            elif run > 5:
                score += 1
        s = "".join(map(str, line))
        score += 40 * sum(s.count(p) for p in ("10111010000", "00001011101"))
    for y in range(size - 1):
        for x in range(size - 1):
            if m[y][x] == m[y][x + 1] == m[y + 1][x] == m[y + 1][x + 1]:
                score += 3
    dark = sum(map(sum, m))
    score += 10 * (abs(dark * 20 - size * size * 10) // (size * size))
    return score


def matrix(text: str, mask: int = None, version: int = None) -> list:
    """The modules of the QR code of `text` (rows of 0 light / 1 dark): the
    smallest version that holds it (or `version`), with the mask the penalty
    rules pick (or `mask`). ValueError if it does not fit."""
    least = fits(text)
    if least is None or (version is not None and not least <= version <= 10):
        raise ValueError("%d characters do not fit a version %s QR code"
                         % (len(text), version or 10))
    version = version or least
    base, fn, size = _function_modules(version)
    data = _codewords(text, version)
    i = 0
    for right in range(size - 1, 0, -2):
        if right <= 6:
            right -= 1
        for vert in range(size):
            for j in range(2):
                x = right - j
                y = size - 1 - vert if ((right + 1) & 2) == 0 else vert
                if not fn[y][x] and i < len(data) * 8:
                    base[y][x] = (data[i >> 3] >> (7 - (i & 7))) & 1
                    i += 1
    best = None
    for k in ([mask] if mask is not None else range(8)):
        m = [row[:] for row in base]
        for y in range(size):
            for x in range(size):
                if not fn[y][x] and _MASKS[k](x, y):
                    m[y][x] ^= 1

        def put(x, y, dark, m=m):
            m[y][x] = int(dark)
        _format(put, size, k)
        p = _penalty(m, size) if mask is None else 0
        if best is None or p < best[0]:
            best = (p, m)
    return best[1]
