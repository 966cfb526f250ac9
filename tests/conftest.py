import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pytest_configure(config):
    # Every property test runs from one seed, printed in the header so a
    # failure can be replayed with: pytest --hypothesis-seed=N
    if config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = int(os.environ.get("HYPOTHESIS_SEED") or
                                            random.randrange(1 << 32))


def pytest_report_header(config):
    return "hypothesis seed: %s (replay: pytest --hypothesis-seed=%s)" % (
        config.option.hypothesis_seed, config.option.hypothesis_seed)


@pytest.fixture
def data_dir(tmp_path):
    from agent.node import init_identity
    d = str(tmp_path / "node")
    init_identity(d)
    return d


@pytest.fixture
def d(tmp_path):
    """A data directory made by `mycelium init`, as a user makes one."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = str(tmp_path / "data")
    subprocess.run([sys.executable, "-m", "agent", "--data-dir", path, "init"], check=True,
                   capture_output=True, env=dict(os.environ, PYTHONPATH=root), timeout=60)
    return path


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line("hypothesis seed: %s (replay: pytest --hypothesis-seed=%s)"
                                % (config.option.hypothesis_seed, config.option.hypothesis_seed))
