"""Every engine must reproduce the shared vectors byte for byte."""
import json
import os

import pytest

from agent import errors
from agent.core import available_engines, load_engine
from agent.core.batch import parse_apply_result, parse_merge_result
from agent.values import decode_record

VECTORS = json.load(open(os.path.join(os.path.dirname(__file__), "vectors", "core.json")))


@pytest.fixture(scope="module", params=[e.name for e in available_engines()])
def engine(request):
    e = load_engine(request.param)
    assert e.name == request.param
    yield e
    e.close()


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=lambda v: v["name"])
def test_engine_reproduces_shared_vector(engine, vec):
    data = bytes.fromhex(vec["batch"])
    fn = getattr(engine, vec["fn"])
    if "error" in vec:
        with pytest.raises(getattr(errors, vec["error"])):
            fn(data)
        return
    out = fn(data)
    assert out.hex() == vec["result"]
    parse = parse_apply_result if vec["fn"] == "apply" else parse_merge_result
    reads = [decode_record(b, VECTORS["fields"]) for b in parse(out)[1]]
    assert reads == vec["reads"]
