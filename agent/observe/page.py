"""The dashboard: one HTML page with its style and script inline, no
external asset and no build step. It reads /api/stream (server-sent
events; /api/state polled every 2 s where EventSource is missing) and
builds the page with textContent only, so keys and names from peers are
never parsed as HTML. The Content-Security-Policy allows exactly this
page's own script and style, by hash."""
import base64
import hashlib

__all__ = ["render", "CSP"]

STYLE = """
:root { --fg:#1d2026; --muted:#5b6270; --line:#dde1e7; --bg:#ffffff; --panel:#f6f7f9;
        --ok:#17692f; --warn:#8a5a00; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:14px; padding:14px 24px;
         border-bottom:4px solid var(--me,#444); background:var(--panel); flex-wrap:wrap; }
header h1 { font-size:20px; margin:0; font-weight:650; }
.id { font:13px ui-monospace,SFMono-Regular,Menlo,monospace; color:var(--muted); }
.pill { display:inline-block; padding:2px 10px; border-radius:999px; font-size:13px;
        font-weight:600; color:#fff; }
.healthy,.connected,.this { background:var(--ok); }
.degraded,.behind,.held { background:var(--warn); }
.down,.forked,.quarantined { background:var(--bad); }
.offline,.never,.live { background:#5b6270; }
.badge { display:inline-block; padding:1px 8px; border-radius:4px; color:#fff;
         font-weight:600; font-size:13px; white-space:nowrap; }
main { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:18px;
       padding:18px 24px; }
section { border:1px solid var(--line); border-radius:8px; padding:12px 16px; min-width:0; }
section.wide { grid-column:1/-1; }
h2 { font-size:14px; text-transform:uppercase; letter-spacing:.05em; color:var(--muted);
     margin:0 0 8px; }
table { width:100%; border-collapse:collapse; }
th,td { text-align:left; padding:5px 8px 5px 0; border-bottom:1px solid var(--line);
        vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; }
td.n { text-align:right; font-variant-numeric:tabular-nums; }
.bar { height:8px; background:#3d5a80; border-radius:4px; min-width:2px; }
.reasons { color:var(--bad); margin:4px 0 0; padding-left:18px; }
.ev { display:grid; grid-template-columns:78px 150px 130px 1fr; gap:8px; padding:3px 0;
      border-bottom:1px solid var(--line); font-size:14px; }
.ev .badge { justify-self:start; } .ev .k { font-weight:600; } .ev .d { color:var(--muted); overflow-wrap:anywhere; }
.ev.bad .k { color:var(--bad); } .ev.warn .k { color:var(--warn); }
.muted { color:var(--muted); } .mono { font-family:ui-monospace,Menlo,monospace; }
#conn { margin-left:auto; font-size:13px; color:var(--muted); }
"""

SCRIPT = r"""
"use strict";
const q = new URLSearchParams(location.search).get("token");
const tq = q ? "?token=" + encodeURIComponent(q) : "";
const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function size(n) {
  if (n === null || n === undefined) return "-";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function ago(t, now) {
  if (!t) return "never";
  const s = Math.max(0, now - t);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour12: false}); }
let S = null;
function name(dev) {
  if (!dev || dev === S.device_id) return "this device";
  const p = S.peers.find((x) => x.device_id === dev);
  return (p && p.name) || dev.slice(0, 7);
}
function badge(dev) {
  const b = el("span", "badge", name(dev));
  b.style.background = S.colours[dev || S.device_id] || "#444";
  b.title = dev || S.device_id;
  return b;
}
function rows(tbody, list) { tbody.replaceChildren(...list); }
function tr(cells) {
  const r = el("tr");
  for (const c of cells) {
    const td = el("td", c && c.cls);
    if (c && c.node) td.append(c.node); else td.textContent = c === null ? "-" : String(c.text ?? c);
    r.append(td);
  }
  return r;
}
function render(s) {
  S = s;
  document.documentElement.style.setProperty("--me", s.colours[s.device_id] || "#444");
  $("me").replaceChildren(badge(s.device_id));
  $("myid").textContent = s.device_id;
  $("ver").textContent = "mycelium " + s.version + " · " + s.engine + " engine" +
    (s.durable ? " · durable" : "");
  const h = $("health"); h.textContent = s.health; h.className = "pill " + s.health;
  rows($("reasons"), s.reasons.map((r) => el("li", null, r)));
  const devs = [tr([{node: badge(s.device_id)}, {node: el("span", "id", s.device_id)},
                    {node: el("span", "pill this", "this device")}, "-", "-",
                    s.records + " records"])];
  for (const p of s.peers) {
    const st = p.state.split(",")[0].replace("never synced", "never");
    let lag = "-";
    if (p.behind !== null) lag = p.behind + " behind, " + p.ahead + " ahead";
    devs.push(tr([{node: badge(p.device_id)}, {node: el("span", "id", p.device_id)},
                  {node: el("span", "pill " + st.split(" ")[0], p.state)}, lag,
                  ago(p.last_sync, s.time), p.last_error || (p.addr || "dials in")]));
  }
  rows($("devices"), devs);
  const c = s.convergence;
  $("conv").textContent = c.peers ? ("in step with " + c.in_step + " of " + c.peers +
    " peers (" + c.how + ")") : "no peers yet";
  const top = s.prefixes.length ? s.prefixes[0][1] : 1;
  rows($("prefixes"), s.prefixes.map(([p, n]) => {
    const bar = el("div", "bar"); bar.style.width = Math.max(1, 100 * n / top) + "%";
    return tr([{node: el("span", "mono", p)}, {text: n, cls: "n"}, {node: bar}]);
  }));
  $("pcount").textContent = s.prefix_count > s.prefixes.length ?
    "the " + s.prefixes.length + " largest of " + s.prefix_count : "";
  rows($("writes"), s.writes.map((w) => tr([clock(w.time),
    {node: el("span", "mono", w.key)}, w.live ? "written" : "deleted"])));
  const m = s.memory, st = s.store, pd = s.pending;
  const sys = [["memory (RSS)", size(m.rss) + (m.budget ? " of a " + size(m.budget) +
      " budget" : " (no budget set)")],
    ["disk free", s.disk ? size(s.disk.free) + " of " + size(s.disk.total) : "-"],
    ["store", size(st.data_bytes) + " in use, " + size(st.file_bytes) + " of files"],
    ["op log", size(st.log_bytes) + " in " + st.log_segments + " segment(s)"],
    ["last compaction", st.last_compaction ? ago(st.last_compaction.time || 0, s.time) +
      ", " + st.compacted_changes + " changes folded (" + size(st.snapshot_bytes) + ")" : "never"],
    ["held / quarantined", pd.held + " / " + pd.quarantined],
    ["forks", pd.forks], ["up since", ago(s.started, s.time)]];
  rows($("system"), sys.map(([k, v]) => tr([k, v])));
  rows($("events"), s.events.map((e) => {
    const kind = e.kind || "";
    const cls = /fork|quarantine|refused|error/.test(kind) ? "ev bad" :
      /held|warning/.test(kind) ? "ev warn" : "ev";
    const row = el("div", cls);
    const d = Object.entries(e).filter(([k]) => !["time", "kind", "device"].includes(k))
      .map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ");
    row.append(el("span", "muted", clock(e.time)), badge(e.device), el("span", "k", kind),
               el("span", "d", d));
    return row;
  }));
  $("updated").textContent = "updated " + clock(s.time);
}
function poll() {
  fetch("/api/state" + tq).then((r) => r.json()).then(render)
    .catch(() => { $("conn").textContent = "cannot reach serve; retrying"; })
    .finally(() => setTimeout(poll, 2000));
}
if (window.EventSource) {
  const es = new EventSource("/api/stream" + tq);
  es.onmessage = (e) => { $("conn").textContent = "live"; render(JSON.parse(e.data)); };
  es.onerror = () => { $("conn").textContent = "reconnecting..."; };
} else { poll(); }
"""

BODY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>mycelium</title>
<style>%s</style></head>
<body>
<header><h1>mycelium</h1><span id="me"></span><span class="id" id="myid"></span>
<span class="pill live" id="health">loading</span><span class="muted" id="ver"></span>
<span id="conn">connecting...</span></header>
<ul class="reasons" id="reasons"></ul>
<main>
<section class="wide"><h2>Devices</h2><p class="muted" id="conv"></p>
<table><thead><tr><th>device</th><th>id</th><th>state</th><th>lag (changes)</th>
<th>last sync</th><th>address / last error</th></tr></thead><tbody id="devices"></tbody></table>
</section>
<section><h2>Records per prefix</h2><p class="muted" id="pcount"></p>
<table><tbody id="prefixes"></tbody></table></section>
<section><h2>Recent writes</h2><table><tbody id="writes"></tbody></table></section>
<section><h2>This device</h2><table><tbody id="system"></tbody></table>
<p class="muted" id="updated"></p></section>
<section class="wide"><h2>Timeline</h2><div id="events"></div></section>
</main>
<script>%s</script>
</body></html>
"""


def _hash(text) -> str:
    return "'sha256-%s'" % base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


CSP = ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'" % (_hash(SCRIPT),
                                                                      _hash(STYLE)))


def render() -> bytes:
    return (BODY % (STYLE, SCRIPT)).encode("utf-8")
