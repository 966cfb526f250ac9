# shellcheck shell=sh
# Shared by checks.sh and checks-systemd.sh (sourced from beside them).
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# check WHAT COMMAND...: ok if COMMAND succeeds; else FAIL and its output
check() {
  d=$1; shift
  if "$@" > /tmp/check.out 2>&1; then ok "$d"; else bad "$d"; sed 's/^/     /' /tmp/check.out; fi
}
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
