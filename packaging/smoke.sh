#!/bin/sh
# Smoke test of a built binary: init, put, get, del, scan, stats, and (when the
# binary has `serve` and `sync`) a sync over TLS between two data directories
# and an invite with its QR code.
#   packaging/smoke.sh [BINARY]        default dist/mycelium
# MYCELIUM_CORE is passed through (reference forces the pure-Python engine);
# EXPECT_ENGINE=wasm|reference makes the engine reported by stats a check.
set -eu
BIN=${1:-$(cd "$(dirname "$0")/.." && pwd)/dist/mycelium}
[ -x "$BIN" ] || { echo "smoke: no binary at $BIN (run make dist)" >&2; exit 2; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT INT TERM
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$T/cache}"
D=$T/a
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
step() { printf 'smoke: %s\n' "$*" >&2; }

step "init"
"$BIN" --data-dir "$D" init >/dev/null || fail "init"
step "put"
"$BIN" --data-dir "$D" put sensor:1 site=kitchen temp:=21.5 readings+=2 tags[]+=indoor \
  || fail "put"
"$BIN" --data-dir "$D" put sensor:1 readings+=1 mood\|=calm || fail "second put"
"$BIN" --data-dir "$D" put sensor:2 site=garden || fail "put sensor:2"
step "get"
out=$("$BIN" --data-dir "$D" --json get sensor:1) || fail "get"
echo "$out" | grep -q '"site": "kitchen"' || fail "get: site missing in $out"
echo "$out" | grep -q '"readings": 3' || fail "get: counter is not 3 in $out"
echo "$out" | grep -q '"indoor"' || fail "get: set member missing in $out"
rc=0; "$BIN" --data-dir "$D" get nothing:here 2>/dev/null || rc=$?
[ "$rc" = 1 ] || fail "get of an absent key exited $rc, not 1"
step "del"
"$BIN" --data-dir "$D" del sensor:2 >/dev/null || fail "del"
step "scan"
keys=$("$BIN" --data-dir "$D" scan sensor: --keys-only) || fail "scan"
[ "$keys" = "sensor:1" ] || fail "scan gave '$keys'"
step "stats"
st=$("$BIN" --data-dir "$D" --json stats) || fail "stats"
echo "$st" | grep -q '"records"' || fail "stats: $st"
engine=$(echo "$st" | sed -n 's/.*"engine": "\([a-z]*\)".*/\1/p')
step "engine: $engine"
if [ -n "${EXPECT_ENGINE:-}" ] && [ "$engine" != "$EXPECT_ENGINE" ]; then
  fail "engine is $engine, expected $EXPECT_ENGINE"
fi
# the engine really loads and applies (stats names it without loading it)
"$BIN" --data-dir "$D" put sensor:3 n+=1 || fail "put with the $engine engine"

if "$BIN" --help | grep -qE '^ +serve' && "$BIN" --help | grep -qE '^ +sync'; then
  step "sync: a second data directory serves, the first syncs with it over TLS"
  B=$T/b
  "$BIN" --data-dir "$B" init >/dev/null || fail "init b"
  "$BIN" --data-dir "$B" put other:1 x=1 || fail "put in b"
  ida=$("$BIN" --data-dir "$D" id) || fail "id a"
  idb=$("$BIN" --data-dir "$B" id) || fail "id b"
  # b pins a's id (a dials b, so the address given for a is never used)
  "$BIN" --data-dir "$B" peer add "$ida" 127.0.0.1:9 >/dev/null || fail "peer add on b"
  "$BIN" --data-dir "$B" --json serve --listen 127.0.0.1:0 >"$T/serve.out" 2>"$T/serve.err" &
  spid=$!
  i=0
  while ! grep -q listening "$T/serve.out" 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] || { kill "$spid" 2>/dev/null; fail "serve did not start: $(cat "$T/serve.err")"; }
    sleep 0.1
  done
  addr=$(sed -n 's/.*"listening": "\([^"]*\)".*/\1/p' "$T/serve.out" | head -1)
  "$BIN" --data-dir "$D" peer add "$idb" "$addr" >/dev/null || fail "peer add on a"
  timeout 120 "$BIN" --data-dir "$D" sync "$idb" >/dev/null 2>"$T/sync.err" ||
    { kill "$spid" 2>/dev/null; fail "sync: $(cat "$T/sync.err")"; }
  "$BIN" --data-dir "$D" get other:1 >/dev/null || { kill "$spid"; fail "a lacks b's record after sync"; }
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  "$BIN" --data-dir "$B" get sensor:1 >/dev/null || fail "b lacks a's record after sync"
  step "sync ok ($addr)"
  step "invite: its token and the QR code"
  inv=$("$BIN" --data-dir "$D" invite --addr 127.0.0.1:7420 --qr yes) || fail "invite"
  echo "$inv" | grep -q '^MYC1\.' || fail "invite printed no token: $inv"
  echo "$inv" | grep -q "$(printf '\342\226\210')" || fail "invite drew no QR code"
fi
step "ok ($BIN)"
