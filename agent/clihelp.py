"""What `mycelium COMMAND --help` teaches: the examples of every command,
kept apart from the parser so that cli.py and sync/parser.py stay short.

`add_command` makes a subparser whose help ends with the command's
examples; every command has some (tests/test_cli.py walks the parser).
"""
import argparse

__all__ = ["add_command", "EXAMPLES", "KIND_SYNTAX", "FIELD_FORMS"]

# How the CLI writes each field kind, for error messages ({f}: the field).
KIND_SYNTAX = {
    "lww": "{f}=TEXT or {f}:=JSON",
    "counter": "{f}+=N or {f}-=N",
    "mv": "{f}|=TEXT",
    "set": "{f}[]+=X or {f}[]-=X",
}

FIELD_FORMS = ("name=TEXT, name:=JSON, name=@FILE (lww); n+=N, n-=N (counter); "
               "name|=TEXT (multi-value); tags[]+=X, tags[]-=X (set)")

EXAMPLES = {
    "init": """\
  mycelium init                          # ~/.local/share/mycelium
  mycelium --data-dir /srv/mycelium init # somewhere else (or MYCELIUM_DATA_DIR)
  mycelium init --new-identity           # sync/cert.pem lost: a new device id""",
    "put": """\
  mycelium put sensor:1 site=kitchen temp:=21.5 readings+=1 tags[]+=indoor
  mycelium put sensor:1 tags[]-=indoor
  mycelium --durable put order:17 paid:=true   # on disk before it returns""",
    "get": """\
  mycelium get sensor:1
  mycelium --json get sensor:1    # {"key":..., "fields":..., "kinds":...}; bytes as
                                  # {"$bytes": BASE64}, NaN/infinities as {"$float": "nan"}
exit 0 if the record exists, 1 if it does not (or is deleted).""",
    "del": """\
  mycelium del sensor:1           # exit 1 if there was nothing to delete
A deleted record stays a tombstone; a later put revives it.""",
    "scan": """\
  mycelium scan sensor:                   # every record whose key starts with sensor:
  mycelium scan sensor: --keys-only       # one key per line
  mycelium scan --limit 10                # the first 10 records, in key order
  mycelium --json scan sensor: --keys-only | wc -l""",
    "watch": """\
  mycelium watch sensor:                  # print each change under sensor: as it lands
  mycelium watch --count 1 --timeout 30   # wait for one change, at most 30 s
It follows the op log, so it sees local writes, `serve`'s and synced changes.""",
    "demo": """\
  mycelium demo                           # three devices, in a scratch directory""",
    "compact": """\
  mycelium compact                        # snapshot, then drop what every peer holds
  mycelium compact --keep-log             # the snapshot only""",
    "backup": """\
  mycelium backup /mnt/usb/garden-pi.snap        # also while serve runs
  sudo -u mycelium mycelium --data-dir /var/lib/mycelium backup /var/backups/m.snap""",
    "restore": """\
  mycelium --data-dir ~/restored restore /mnt/usb/garden-pi.snap
  mycelium --data-dir ~/restored id               # its new id: add it on the peers""",
    "stats": """\
  mycelium stats
  mycelium --json stats | python3 -m json.tool""",
    "status": """\
  mycelium status                         # exit 0 healthy, 1 degraded, 2 down
  mycelium status --stale 600             # a peer silent for 10 min is trouble
  mycelium --json status""",
    "events": """\
  mycelium events --since 1h              # the last hour
  mycelium events --kind fork,quarantine  # only what needs an operator
  mycelium events --follow --kind sync    # sync sessions as they happen
  mycelium --json events -n 100           # the last 100, one JSON object per line""",
    "check": """\
  mycelium check && echo healthy          # for cron or a monitoring probe
  mycelium --json check""",
    "repair": """\
  mycelium repair                         # stop `mycelium serve` first
  mycelium repair --rebuild               # rebuild the store whole from the op log""",
    "pending": """\
  mycelium pending                        # list held and quarantined changes
  mycelium pending --release 3f2a9c0d1e4b5a68   # apply one device's held changes now""",
    "serve": """\
  mycelium serve                          # on 0.0.0.0:7420, every known peer
  mycelium serve --listen :7450           # every address, port 7450
  mycelium serve --listen 127.0.0.1:0     # a free port, printed at start""",
    "sync": """\
  mycelium sync K3J5Q2M                   # the start of a known peer's id is enough
  mycelium sync K3J5Q2M --progress""",
    "config": """\
  mycelium config show                    # every setting, its value and its source
  echo 'durable = true' >> ~/.local/share/mycelium/mycelium.toml""",
    "config show": """\
  mycelium config show
  mycelium --json config show""",
    "peer": """\
  mycelium peer add K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H 192.168.1.20:7420 --name garden-pi
  mycelium peer list
  mycelium peer rename garden-pi shed-pi
  mycelium peer remove shed-pi""",
    "relay": """\
  mycelium relay add nats://relay.example.net:4222 --fleet greenhouse
  mycelium relay show
  mycelium relay remove""",
    "relay add": """\
  mycelium relay add nats://192.168.1.5:4222 --fleet greenhouse
  mycelium relay add tls://relay.example.net:4222 --fleet greenhouse --creds fleet.creds
Use the same fleet name on every device. The server needs JetStream on:
nats-server -js -sd /var/lib/nats (Debian's nats-server package).""",
    "relay show": """\
  mycelium relay show
  mycelium --json relay show""",
    "relay remove": """\
  mycelium relay remove""",
    "peer add": """\
  mycelium peer add K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H 192.168.1.20:7420
  mycelium peer add K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H [fd00::20]:7420 --name garden-pi
  mycelium peer add K3J5Q2M-ABCDEFG-HIJKLMN-OPQRSTU-H 10.8.0.5:7420 --metered   # mobile data
Run `mycelium id` on the other device to get its id; its last group is a check
character, so a mistyped id is refused. Add this device on the other one too.
A --metered peer is synced every metered_sync_s (900 s) instead of staying
connected; on battery every peer is synced every battery_sync_s (300 s).""",
    "peer list": """\
  mycelium peer list
  mycelium --json peer list               # one JSON object per line""",
    "peer remove": """\
  mycelium peer remove garden-pi          # by name, by id or by the start of its id""",
    "peer rename": """\
  mycelium peer rename K3J5Q2M garden-pi""",
    "invite": """\
  mycelium invite                         # on the Pi: a token and its QR code, for 15 min
  mycelium invite --name phone --ttl 1h --addr 192.168.1.20:7420
Then, on the other device: mycelium join TOKEN. Each device becomes a peer of
the other; a token pairs once. `serve` must be running here for the join.""",
    "join": """\
  mycelium join MYC1.K3J5Q2M...           # the token `mycelium invite` printed
  mycelium join MYC1.K3J5Q2M... --addr 192.168.1.31:7420 --name garden-pi
Without --addr the inviting device only accepts this one's calls (a phone on
changing networks dials in); with it, both dial.""",
    "id": """\
  mycelium id                             # give this to peers: mycelium peer add ID ADDR""",
}


def add_command(subparsers, name, help, description=None, key=None, **kw):
    """A subparser for `name` whose --help ends with its examples."""
    ex = EXAMPLES[key or name]
    return subparsers.add_parser(
        name, help=help, description=description or help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + ex, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
