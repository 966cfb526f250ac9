"""The power-cut VM's guest program (qemu/powercut.sh boots it once per cut).

Each boot: open the data directory (durable mode), report what is there,
then write until the host kills the VM. The host is the judge: it keeps
every ACK line it saw on the console and, after the next boot, checks each
one against the HAVE lines that boot printed.

    python3 powercut.py DATA_DIR CYCLE

Lines (each on its own, flushed; the host ignores anything else):

    POWERCUT OPEN ok <seconds> | POWERCUT OPEN failed <error>
    POWERCUT HAVE <cycle> <n>      keys c<cycle>:0 .. c<cycle>:<n-1> all present
                                   with their values (one line per earlier cycle)
    POWERCUT BAD <cycle> <i> <why> a key present past the first gap, or a wrong value
    POWERCUT TOTAL <n>             the counter every acked put incremented
    POWERCUT READY <cycle>         writing starts
    POWERCUT ACK <cycle> <i>       put of c<cycle>:<i> returned (durable: on disk)

Record c<cycle>:<i> = {"c": cycle, "i": i, "pad": 40 bytes, "n": Inc(1),
"s": Add("x", "y")}; a second durable put removes "x" from its set (so a cut
can fall between an add and its removal, and a replay runs the removal over
a store that holds it); a third adds 1 to the counter "total" before the ACK
line, so after any cut TOTAL >= the number of ACK lines the host has seen.
Every record but the last of a cycle must read s == ["y"]; the last may
still read ["x", "y"] (its removal was not acked).
"""
import os
import sys
import time


def say(*parts):
    sys.stdout.write("POWERCUT %s\n" % " ".join(str(p) for p in parts))
    sys.stdout.flush()


def main(argv):
    data_dir, cycle = argv[1], int(argv[2])
    from agent import Node, Inc
    from agent.values import Add, Remove
    from agent.node import init_identity
    t0 = time.monotonic()
    try:
        # inside the try: an identity file the cut left unreadable is a failed open too
        init_identity(data_dir)
        # POWERCUT_DURABLE=0: a negative control (puts acked before they are on
        # disk), for which the host must find lost acks
        node = Node(data_dir, durable=os.environ.get("POWERCUT_DURABLE", "1") != "0")
    except Exception as e:  # noqa: BLE001 - the host counts every failed open
        say("OPEN", "failed", "%s: %s" % (type(e).__name__, str(e).replace("\n", " ")))
        return 1
    say("OPEN", "ok", "%.2f" % (time.monotonic() - t0))
    pad = "x" * 40
    for c in range(cycle):
        i = 0
        last_s = None
        while True:
            rec = node.get("c%d:%d" % (c, i))
            if rec is None:
                break
            if (rec.get("c") != c or rec.get("i") != i or rec.get("pad") != pad
                    or rec.get("n") != 1):  # n: an Inc(1) applied twice by a replay shows as 2
                say("BAD", c, i, "wrong-value")
            if last_s is not None and last_s != ["y"]:
                say("BAD", c, i - 1, "set-%s" % "+".join(last_s))  # an acked removal undone
            last_s = rec.get("s")
            i += 1
        if last_s is not None and last_s not in (["y"], ["x", "y"]):
            say("BAD", c, i - 1, "set-%s" % "+".join(last_s or ["none"]))
        say("HAVE", c, i)
        # anything present past the first gap would mean an out-of-order loss
        for j in range(i + 1, i + 64):
            if node.get("c%d:%d" % (c, j)) is not None:
                say("BAD", c, j, "present-after-gap")
    total = node.get("total")
    say("TOTAL", total["n"] if total else 0)
    # the engine loads on the first write: load it now, so that the cut falls
    # among the puts and not in the engine's load (seconds under emulation)
    t1 = time.monotonic()
    engine = node.engine.name
    # not a protocol line (the host ignores it): which engine runs
    sys.stderr.write("powercut: engine %s loaded in %.2f s\n" % (engine, time.monotonic() - t1))
    sys.stderr.flush()
    say("READY", cycle)
    i = 0
    while True:
        key = "c%d:%d" % (cycle, i)
        node.put(key, {"c": cycle, "i": i, "pad": pad, "n": Inc(1), "s": Add("x", "y")})
        node.put(key, {"s": Remove("x")})
        node.put("total", {"n": Inc(1)})
        say("ACK", cycle, i)
        i += 1


if __name__ == "__main__":
    sys.path.insert(0, os.environ.get("MYCELIUM_SRC", "/opt/mycelium/src"))
    sys.exit(main(sys.argv))
