"""/metrics: the Prometheus text exposition format (version 0.0.4), written
to the spec: `# HELP` and `# TYPE` once per family, label values escaped
(backslash, double quote, newline), counters ending in `_total`. The test
reads it back with prometheus-client's own parser."""
__all__ = ["render"]


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Out:
    def __init__(self):
        self.lines = []

    def family(self, name, typ, help_, samples):
        """samples: [(labels dict or None, value)]; a family with none is left out."""
        if not samples:
            return
        sname = name + "_total" if typ == "counter" else name
        self.lines.append("# HELP %s %s" % (sname, _help(help_)))
        self.lines.append("# TYPE %s %s" % (sname, typ))
        for labels, value in samples:
            if labels:
                lab = ",".join('%s="%s"' % (k, _esc(v)) for k, v in labels.items())
                self.lines.append("%s{%s} %s" % (sname, lab, _num(value)))
            else:
                self.lines.append("%s %s" % (sname, _num(value)))


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render(st: dict, obs=None) -> str:
    """The exposition of one Observer.state() (obs: for its counters)."""
    o = _Out()
    g = "gauge"
    o.family("mycelium_info", g, "This device: version, id and CRDT engine (always 1).",
             [({"version": st["version"], "device": st["device_id"], "engine": st["engine"]}, 1)])
    o.family("mycelium_healthy", g, "1 when nothing needs looking at (as /healthz answers 200).",
             [(None, not st["reasons"])])
    o.family("mycelium_start_time_seconds", g, "When serve started (Unix time).",
             [(None, st["started"])])
    o.family("mycelium_records", g, "Visible records in the store.", [(None, st["records"])])
    o.family("mycelium_prefix_records", g, "Visible records per key prefix (the 50 largest).",
             [({"prefix": p}, n) for p, n in st["prefixes"]])
    m, s = st["memory"], st["store"]
    o.family("mycelium_resident_memory_bytes", g, "serve's resident set size.",
             [(None, m["rss"])])
    o.family("mycelium_memory_budget_bytes", g, "The resident size past which the store's "
             "mapped pages are released.", [(None, m["budget"])])
    o.family("mycelium_store_data_bytes", g, "Bytes the store's records and index use.",
             [(None, s["data_bytes"])])
    o.family("mycelium_store_file_bytes", g, "Bytes of the store's files on disk.",
             [(None, s["file_bytes"])])
    o.family("mycelium_log_bytes", g, "Bytes of the op log on disk.", [(None, s["log_bytes"])])
    o.family("mycelium_snapshot_bytes", g, "Bytes of the compaction snapshot.",
             [(None, s["snapshot_bytes"])])
    o.family("mycelium_compacted_changes", g, "Changes folded into the snapshot and dropped "
             "from the log.", [(None, s["compacted_changes"])])
    if st["disk"]:
        o.family("mycelium_disk_free_bytes", g, "Free bytes on the data directory's filesystem.",
                 [(None, st["disk"]["free"])])
        o.family("mycelium_disk_size_bytes", g, "Size of the data directory's filesystem.",
                 [(None, st["disk"]["total"])])
    p = st["pending"]
    o.family("mycelium_held_changes", g, "Peers' changes held: stamped ahead of this clock.",
             [(None, p["held"])])
    o.family("mycelium_quarantined_changes", g, "Peers' changes this build cannot apply.",
             [(None, p["quarantined"])])
    o.family("mycelium_forks", g, "Forks found (two devices writing under one actor id).",
             [(None, p["forks"])])
    o.family("mycelium_missing_changes", g, "Changes known of but not held.",
             [(None, p["missing"])])
    peers = st["peers"]

    def per_peer(key, f=lambda v: v):
        return [({"peer": q["device_id"], "name": q["name"] or ""}, f(q[key]))
                for q in peers if q[key] is not None]
    o.family("mycelium_peer_connected", g, "1 while a session with the peer is open.",
             per_peer("connected"))
    o.family("mycelium_peer_behind_changes", g, "Changes this device has that the peer lacks.",
             per_peer("behind"))
    o.family("mycelium_peer_ahead_changes", g, "Changes the peer has that this device lacks.",
             per_peer("ahead"))
    o.family("mycelium_peer_last_sync_seconds", g, "When the peer last caught up (Unix time).",
             per_peer("last_sync"))
    t = st["totals"]
    for what, name, help_ in (
            ("received", "mycelium_changes_received", "Changes received from the peer."),
            ("new", "mycelium_changes_merged", "Received changes that were new here."),
            ("sent", "mycelium_changes_sent", "Changes sent to the peer."),
            ("sent_bytes", "mycelium_sent_bytes", "Bytes of changes sent, on the wire."),
            ("sessions", "mycelium_sync_sessions", "Sync sessions opened with the peer.")):
        o.family(name, "counter", help_ + " Since serve started.",
                 [({"peer": k}, v) for k, v in sorted(t.get(what, {}).items())])
    o.family("mycelium_events", "counter", "Timeline events by kind, since serve started.",
             [({"kind": k}, v) for k, v in sorted(st["kinds"].items())])
    o.family("mycelium_timeline_dropped_events", "counter", "Timeline events not written "
             "(buffer full or the disk refused them).", [(None, st["timeline"]["dropped"])])
    return "\n".join(o.lines) + "\n"
