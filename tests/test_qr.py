"""agent/qr.py, the QR encoder of `mycelium invite`: every version (1 to
10) and every mask reads back with zbarimg, a real decoder, in alphanumeric
and in byte mode; the smallest version that holds a text is used, and a text
too long for version 10 is refused."""
import os
import random
import shutil
import subprocess

import pytest

from agent import qr

pytestmark = pytest.mark.skipif(
    not shutil.which("zbarimg") and not os.environ.get("MYCELIUM_REQUIRE_TOOLS"),
    reason="no zbarimg (zbar-tools; scripts/bootstrap.sh test installs it as root)")


def _decode(tmp_path, m, scale=6, border=4):
    n = len(m) + 2 * border
    rows = [[0] * n] * border + [[0] * border + r + [0] * border for r in m] + [[0] * n] * border
    lines = ["P1", "%d %d" % (n * scale, n * scale)]
    for r in rows:
        lines += [" ".join(str(v) for v in r for _ in range(scale))] * scale
    path = tmp_path / "q.pbm"
    path.write_text("\n".join(lines) + "\n")
    p = subprocess.run(["zbarimg", "--quiet", "--raw", str(path)], capture_output=True,
                       text=True, timeout=60)
    return p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout


def _texts(version, rng):
    """An alphanumeric and a byte text as long as this version holds."""
    out = []
    for alphabet in (qr.ALNUM, "abcdefghijklmnopqrstuvwxyz{}~"):
        n = 1
        while qr.fits(alphabet[0] * (n + 1)) == version or qr.fits(alphabet[0] * n) < version:
            n += 1
        out.append("".join(rng.choice(alphabet) for _ in range(n)))
    return out


@pytest.mark.parametrize("version", range(1, 11))
def test_every_version_and_mask_reads_back(tmp_path, version):
    rng = random.Random(version)
    for text in _texts(version, rng):
        assert qr.fits(text) == version, (text, qr.fits(text))
        for mask in range(8):
            m = qr.matrix(text, mask=mask)
            assert len(m) == version * 4 + 17
            assert _decode(tmp_path, m) == text, (version, mask, text)


def test_the_chosen_mask_reads_back_and_the_invite_token_fits(tmp_path):
    from agent.sync.invite import make_token
    token = make_token("K3J5Q2MABCDEFGHIJKLMNOPQRSTU",
                       ["192.168.178.120:7420", "[fd00:1234::20]:7420", "10.0.0.7:7420"],
                       "R22N5W2F3J54R2NK6AFS2LVY6T")
    assert qr.fits(token) <= 10
    assert _decode(tmp_path, qr.matrix(token)) == token


def test_too_long_is_refused():
    with pytest.raises(ValueError):
        qr.matrix("A" * 312)
    assert qr.fits("A" * 311) == 10


def test_the_codewords_of_the_standard_worked_example():
    """"HELLO WORLD" at 1-M, as worked through in the standard's tutorials:
    the data codewords with their 0xEC 0x11 padding, then Reed-Solomon's ten
    (what a decoder cannot see: it reads the pad bytes as nothing)."""
    assert qr._codewords("HELLO WORLD", 1) == [
        32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17, 236, 17,
        196, 35, 39, 119, 235, 215, 231, 226, 93, 23]
