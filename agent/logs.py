"""`serve`'s log: one line per event on stderr, with date, level and this
device's name; repeated trouble is rate-limited.

    2026-12-03T12:00:00.123Z info K3J5Q2M: connected to garden-pi (...)

Under systemd (JOURNAL_STREAM names stderr) each line starts with a syslog
priority, <6> for info, so journald files it at that level, and the date
is left to journald. `--log-format json` writes one JSON object per line:
{"ts", "level", "device", "msg"} and "key" for a rate-limited kind.

Rate limiting: a message given a key (e.g. ("unreachable", peer)) is
written the first time, then at most once per interval, which doubles from
1 min up to 1 h, with how many were held back; `clear(key)` ends the run
and the next message is written at once. An offline peer costs about 30
lines a day, not 2,880.
"""
import json
import os
import sys
import time

__all__ = ["Logger", "LEVELS"]

LEVELS = {"error": 3, "warning": 4, "info": 6}
FIRST_GAP, MAX_GAP = 60.0, 3600.0


def _journald(stream) -> bool:
    """Is stream the journal (systemd sets JOURNAL_STREAM=dev:inode)?"""
    want = os.environ.get("JOURNAL_STREAM")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == "%d:%d" % (st.st_dev, st.st_ino)


class Logger:
    def __init__(self, device: str, fmt: str = "text", stream=None, clock=time.time):
        if fmt not in ("text", "json"):
            raise ValueError("log format is text or json, not %r" % fmt)
        self.device = device
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.clock = clock
        self.journal = fmt == "text" and _journald(self.stream)
        self._runs = {}     # key -> [held back, next time allowed, gap]

    def info(self, msg, key=None):
        self.write("info", msg, key)

    def warning(self, msg, key=None):
        self.write("warning", msg, key)

    def error(self, msg, key=None):
        self.write("error", msg, key)

    def write(self, level, msg, key=None, emit=True):
        """Write msg unless its key's run holds it back; returns the line as
        written (with the count held back), or None if it was held back.
        emit=False: only the rate limiting (a quiet daemon still keeps it)."""
        now = self.clock()
        if key is not None:
            run = self._runs.get(key)
            if run is None:
                self._runs[key] = [0, now + FIRST_GAP, FIRST_GAP]
            elif now < run[1]:
                run[0] += 1
                return None
            else:
                if run[0]:
                    msg = "%s (%d more like this in the last %s)" % (msg, run[0], _span(run[2]))
                run[2] = min(MAX_GAP, run[2] * 2)
                run[0], run[1] = 0, now + run[2]
        if emit:
            self._emit(level, msg, now, key)
        return msg

    def clear(self, key) -> bool:
        """End a rate-limited run (the trouble is over); True if there was one."""
        return self._runs.pop(key, None) is not None

    def _emit(self, level, msg, now, key):
        if self.fmt == "json":
            rec = {"ts": _iso(now), "level": level, "device": self.device, "msg": msg}
            if key is not None:
                rec["key"] = key[0] if isinstance(key, tuple) else str(key)
            line = json.dumps(rec, ensure_ascii=False)
        elif self.journal:
            line = "<%d>%s %s: %s" % (LEVELS[level], level, self.device, msg)
        else:
            line = "%s %s %s: %s" % (_iso(now), level, self.device, msg)
        try:
            self.stream.write(line.replace("\n", " ") + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full stderr must not stop serve
            pass


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (t % 1 * 1000)


def _span(s):
    return "%d min" % (s // 60) if s < 3600 else "%d h" % (s // 3600)
