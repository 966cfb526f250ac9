"""Kill a durable writer with SIGKILL at random moments; every acknowledged
write must be there after reopening, and every open must succeed.

Cycles: 200 by default; set MYCELIUM_CRASH_CYCLES for more."""
import os
import random
import select
import signal
import struct
import time

from agent import Node, Inc
from agent.node import init_identity

CYCLES = int(os.environ.get("MYCELIUM_CRASH_CYCLES", "200"))


def _child(data_dir, start, wfd):
    try:
        with Node(data_dir, durable=True) as n:
            i = start
            while True:
                n.put("k%07d" % i, {"v": i, "acks": Inc(1)})
                n.put("acks", {"n": Inc(1)})
                os.write(wfd, struct.pack("<I", i))  # the ack, after put returned
                i += 1
    finally:
        os._exit(0)


def test_no_acked_write_is_lost_across_random_sigkills(tmp_path):
    data_dir = str(tmp_path / "node")
    init_identity(data_dir)
    rnd = random.Random(int(os.environ.get("HYPOTHESIS_SEED", "0")) or None)
    acked = []
    failed_opens = 0
    lost = []
    for cycle in range(CYCLES):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _child(data_dir, len(acked) + cycle * 1000, w)
        os.close(w)
        data = b""
        if cycle % 2:
            # odd cycles: wait for the first ack, then kill mid-stream
            ready, _, _ = select.select([r], [], [], 10)
            if ready:
                data = os.read(r, 65536)
            time.sleep(rnd.uniform(0, 0.01))
        else:
            # even cycles: kill at any moment, open and recovery included
            time.sleep(rnd.uniform(0, 0.03))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        acked += [x for (x,) in struct.iter_unpack("<I", data[:len(data) // 4 * 4])]
        try:
            n = Node(data_dir, durable=True)
        except Exception as e:  # noqa: BLE001 - any failure to open counts
            failed_opens += 1
            raise AssertionError("open failed after cycle %d: %r" % (cycle, e))
        with n:
            for i in acked[-50:] if cycle % 20 else acked:
                rec = n.get("k%07d" % i)
                if rec is None or rec["v"] != i:
                    lost.append(i)
            total = n.get("acks")
            assert total is not None or not acked
            if acked:
                assert total["n"] >= len(acked)
    print("crash cycles: %d, acked writes: %d, lost: %d, failed opens: %d"
          % (CYCLES, len(acked), len(lost), failed_opens))
    assert lost == [] and failed_opens == 0
    assert len(acked) >= CYCLES // 2  # the child really was writing when killed
