"""The relay link's consume loop, driven by a stand-in for nats-py's pull
subscription: a fetch that finds nothing is not a lost link, whichever
TimeoutError nats-py raises for it."""
import asyncio

import nats.errors

from agent.relay.link import Relay


class Pull:
    """fetch() raises each of `script`'s exceptions in turn, then hands out
    one batch, then waits for good."""

    def __init__(self, script):
        self.script = list(script)
        self.given = False

    async def fetch(self, batch, timeout):
        if self.script:
            raise self.script.pop(0)
        if not self.given:
            self.given = True
            return ["msg"]
        await asyncio.Event().wait()


def _loop_takes(script):
    relay = Relay.__new__(Relay)      # only the consume loop: no daemon, no server
    taken = []

    async def take(msgs):
        taken.append(msgs)
    relay.take = take

    async def go():
        task = asyncio.ensure_future(relay._consume_loop(Pull(script)))
        for _ in range(100):
            await asyncio.sleep(0.001)
            if taken or task.done():
                break
        if task.done():
            return task.exception()
        task.cancel()
        return None
    err = asyncio.run(go())
    return err, taken


def test_a_fetch_that_times_out_in_nats_or_asyncio_is_not_a_lost_link():
    # nats-py raises a bare asyncio.TimeoutError when its deadline passed
    # while the loop was busy: the link used to drop and reconnect on it
    err, taken = _loop_takes([nats.errors.TimeoutError(), asyncio.TimeoutError(),
                              nats.js.errors.FetchTimeoutError()])
    assert err is None and taken == [["msg"]]


def test_other_errors_still_end_the_session():
    err, taken = _loop_takes([nats.errors.ConnectionClosedError()])
    assert isinstance(err, nats.errors.ConnectionClosedError) and taken == []
