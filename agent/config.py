"""The configuration file, `mycelium.toml`: in /etc/mycelium, and in the data
directory (which wins). The environment wins over both, and a flag over all.

    # /var/lib/mycelium/mycelium.toml
    listen = ":7420"
    durable = true
    max_skew = 600          # seconds
    memory_mb = 35

Each setting is also an environment variable (KEYS), which is how the rest
of the agent reads it: `apply` puts what the files say into the environment
of this process, where no variable is set already, before the command line
is parsed. A file that does not parse, an unknown key or a value of the
wrong type is a UsageError naming the file and the key; nothing runs.
`mycelium config show` prints every setting, its value and where it came from.
"""
import os
import sys

from .errors import UsageError

__all__ = ["KEYS", "ETC_PATH", "FILE_NAME", "apply", "load", "loads_text", "closed", "effective",
           "cmd_config_show"]

ETC_PATH = "/etc/mycelium/mycelium.toml"
FILE_NAME = "mycelium.toml"

# key: (environment variable, type, default, what it sets)
KEYS = {
    "data_dir": ("MYCELIUM_DATA_DIR", str, None,
                 "where the store and log live (only read from /etc/mycelium)"),
    "cache_dir": ("MYCELIUM_CACHE_DIR", str, None,
                  "where the compiled core is cached (else ~/.cache/mycelium)"),
    "listen": ("MYCELIUM_LISTEN", str, "0.0.0.0:7420", "where `serve` accepts peers"),
    "durable": ("MYCELIUM_DURABLE", bool, False,
                "fsync every write before it is acknowledged (else every 100 ms)"),
    "max_skew": ("MYCELIUM_MAX_SKEW", float, 300,
                 "hold peers' changes stamped more than this many seconds ahead"),
    "memory_mb": ("MYCELIUM_RSS_BUDGET_MB", float, None,
                  "trim the store's mapped pages past this resident size"),
    "http": ("MYCELIUM_HTTP", str, None,
             "where serve's dashboard, /metrics and /healthz listen (off when unset)"),
    "log_format": ("MYCELIUM_LOG_FORMAT", str, "text", "serve's log: text or json"),
    "accept_unsigned": ("MYCELIUM_ACCEPT_UNSIGNED", bool, False,
                        "take changes no signature vouches for (upgrades from 0.1)"),
    "compact_mb": ("MYCELIUM_COMPACT_MB", float, 8, "serve compacts past this much new log"),
    "retire_days": ("MYCELIUM_RETIRE_DAYS", float, 14,
                    "a peer silent this long stops holding history back"),
    "max_write_mb": ("MYCELIUM_MAX_WRITE_MB", float, 1, "the largest single write"),
    "group": ("MYCELIUM_GROUP", str, None, "a group that may read the data directory"),
    "power": ("MYCELIUM_POWER", str, "auto",
              "auto (the battery sensor, where there is one), battery or ac"),
    "battery_sync_s": ("MYCELIUM_BATTERY_SYNC_S", float, 300,
                       "on battery, sync with each peer this often instead of staying "
                       "connected (0: stay connected)"),
    "metered_sync_s": ("MYCELIUM_METERED_SYNC_S", float, 900,
                       "with a peer added --metered, sync this often (0: stay connected)"),
    "peers": ("MYCELIUM_PEERS", dict, None,
              "[peers.NAME] tables of id and addr, beside those `peer add` keeps"),
}
CHOICES = {"log_format": ("text", "json"), "power": ("auto", "battery", "ac")}
LATER = {"relay": "the NATS relay"}


def _fail(path, msg):
    return UsageError("%s: %s; fix the file or move it away (`mycelium config show` "
                      "shows what is in effect)" % (path, msg))


def load(path: str) -> dict:
    """The settings in one file ({} if there is none), checked."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except PermissionError:
        raise _fail(path, "cannot be read by this user") from None
    try:
        return loads_text(raw.decode("utf-8"), path)
    except UnicodeDecodeError as e:
        raise _fail(path, "not valid TOML (%s)" % e) from None


def loads_text(text: str, path: str) -> dict:
    """The settings in TOML text (from `path`, named in errors), checked."""
    import tomllib          # only when there is a file: no cost at start-up otherwise
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _fail(path, "not valid TOML (%s)" % e) from None
    out = {}
    for key, value in doc.items():
        if key in LATER:
            raise _fail(path, "[%s] (%s) is not in this version" % (key, LATER[key]))
        if key not in KEYS:
            raise _fail(path, "unknown setting %r; the settings are %s"
                        % (key, ", ".join(sorted(KEYS))))
        typ = KEYS[key][1]
        if typ is dict:
            out[key] = _peers(path, value)
            continue
        ok = (type(value) is bool if typ is bool else
              type(value) in (int, float) if typ is float else isinstance(value, str))
        if not ok:
            raise _fail(path, "%s must be %s, not %r" % (
                key, {bool: "true or false", float: "a number", str: "a string"}[typ], value))
        if key in CHOICES and value not in CHOICES[key]:
            raise _fail(path, "%s must be one of %s" % (key, ", ".join(CHOICES[key])))
        out[key] = value
    return out


def _peers(path, table) -> dict:
    """[peers.NAME] id = "...", addr = "HOST:PORT" (addr optional: it dials
    in), metered = true (optional) -> {NAME: {"id": ID as shown, "addr":
    HOST:PORT or None, "metered": bool}}, checked."""
    from .sync.devid import display_id, normalize_id
    from .sync.peers import check_name, format_addr, parse_addr
    if not isinstance(table, dict):
        raise _fail(path, "peers must be tables: [peers.garden-pi] with id = \"...\" and "
                    "addr = \"HOST:PORT\"")
    out, seen = {}, {}
    for name, entry in table.items():
        where = "[peers.%s]" % name
        if not isinstance(entry, dict) or set(entry) - {"id", "addr", "metered"} or \
                "id" not in entry or not isinstance(entry.get("metered", False), bool):
            raise _fail(path, "%s takes id = \"DEVICE ID\" and, unless it only dials in, "
                        "addr = \"HOST:PORT\" (and metered = true for a link that "
                        "costs by the byte)" % where)
        try:
            check_name({}, None, name)
            did = normalize_id(str(entry["id"]))
            addr = entry.get("addr")
            addr = None if addr is None else format_addr(*parse_addr(str(addr)))
        except UsageError as e:
            raise _fail(path, "%s: %s" % (where, e)) from None
        if did in seen:
            raise _fail(path, "%s and [peers.%s] have the same id" % (where, seen[did]))
        seen[did] = name
        out[name] = {"id": display_id(did), "addr": addr,
                     "metered": entry.get("metered", False)}
    return out


def closed(path: str) -> bool:
    """True if `path` exists but this user may not enter it (it, or a
    directory above it, has no search permission for this user)."""
    try:
        os.stat(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return os.path.isdir(path) and not os.access(path, os.X_OK)


def _env_text(value) -> str:
    if isinstance(value, dict):
        import json
        return json.dumps(value, sort_keys=True)
    if value is True or value is False:
        return "1" if value else "0"
    return str(value)


def _data_dir_flag(argv):
    for i, a in enumerate(argv):
        if a == "--data-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--data-dir="):
            return a.split("=", 1)[1]
    return None


def apply(argv, default_data_dir, etc_path: str = ETC_PATH) -> dict:
    """Read the files, set the environment from them where it is unset, and
    return {key: (value, source)} with source "flag", "env VAR", a path or
    "default"."""
    env = os.environ
    given = {k for k, (var, _, _, _) in KEYS.items() if env.get(var)}
    etc = load(etc_path)
    flag_dir = _data_dir_flag(argv)
    data_dir = flag_dir or env.get("MYCELIUM_DATA_DIR") or etc.get("data_dir") \
        or default_data_dir()
    local_path = os.path.join(data_dir, FILE_NAME)
    # the service's directory, seen by a user outside its group: nothing in
    # it can be opened, so its file is left out (config show says so) and a
    # command that opens the store says what to do
    local = {} if closed(data_dir) else load(local_path)
    if "data_dir" in local:
        raise _fail(local_path, "data_dir can only be set in %s (this file is found through "
                    "it)" % etc_path)
    sources = {}
    for key, (var, typ, default, _) in KEYS.items():
        if key == "data_dir" and flag_dir:
            sources[key] = (flag_dir, "flag")
        elif key in given:
            sources[key] = (env[var], "env " + var)
        elif key in local:
            sources[key] = (local[key], local_path)
            env[var] = _env_text(local[key])
        elif key in etc:
            sources[key] = (etc[key], etc_path)
            env[var] = _env_text(etc[key])
        else:
            sources[key] = (data_dir if key == "data_dir" else default, "default")
    return sources


def effective(sources, args) -> dict:
    """The sources, with this command's own global flags on top."""
    out = dict(sources)
    if "--durable" in getattr(args, "argv", ()):
        out["durable"] = (True, "flag")
    return out


def cmd_config_show(args):
    import json
    shown = effective(args.config_sources, args)
    if args.json:
        print(json.dumps({k: {"value": v, "source": s} for k, (v, s) in shown.items()}))
        return 0
    width = max(len(k) for k in shown)
    for key, (value, source) in shown.items():
        text = "(unset)" if value is None else \
            json.dumps(value) if isinstance(value, (str, dict)) else \
            str(value).lower() if isinstance(value, bool) else str(value)
        print("%-*s = %-24s # %s" % (width, key, text, source))
    data_dir = shown["data_dir"][0]
    if data_dir and closed(data_dir):
        print("mycelium: %s was not read: its directory is closed to this user (run the "
              "command as the directory's owner, or join its group)"
              % os.path.join(data_dir, FILE_NAME), file=sys.stderr)
    return 0
