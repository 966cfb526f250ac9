import pytest

from .natsd import NatsServer


@pytest.fixture
def natsd(tmp_path):
    s = NatsServer(str(tmp_path / "nats-store"), str(tmp_path / "nats.log"))
    yield s
    s.stop()
