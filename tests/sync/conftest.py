import pytest

from . import helpers


@pytest.fixture(autouse=True)
def _close_nodes():
    """Close what helpers.make_node opened, so that a long run does not
    pile up file descriptors (test_crash.py selects on a pipe)."""
    yield
    made, helpers.MADE[:] = list(helpers.MADE), []
    for n in made:
        try:
            n.close()
        except Exception:  # noqa: BLE001 - a test may have damaged it on purpose
            pass
