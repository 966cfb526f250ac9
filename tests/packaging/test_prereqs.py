"""`make dist` on a fresh machine (issue 14: it failed with "no patchelf",
and needed libzstd-dev and ccache that nothing installed or listed):
packaging/prereqs.sh finds what is missing, installs it as root with
apt-get, and otherwise names the packages and exits 2."""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "packaging", "prereqs.sh")


def _bare_path(tmp_path):
    """A PATH with a shell and nothing of the build's tools."""
    b = tmp_path / "bin"
    b.mkdir()
    for t in ("sh", "id"):
        os.symlink(shutil.which(t), b / t)
    return str(b)


def test_it_names_every_missing_tool(tmp_path):
    base = os.path.join(sys.base_prefix, "bin", "python3")
    env = dict(os.environ, PATH=_bare_path(tmp_path), PREREQS_DRY="1", BASE_PYTHON=base)
    p = subprocess.run(["sh", SCRIPT], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:5] == ["missing:", "gcc", "patchelf", "ccache", "libzstd-dev"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="needs root to run it as another user")
def test_without_root_it_says_what_to_install_and_exits_2(tmp_path):
    env = dict(os.environ, PATH=_bare_path(tmp_path) + ":/usr/bin:/bin")
    env.pop("PREREQS_DRY", None)
    p = subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", "sh", SCRIPT], capture_output=True,
                       text=True, env=dict(env, CC="no-such-cc"), timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "sudo apt-get install" in p.stderr and "gcc" in p.stderr
