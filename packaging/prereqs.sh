#!/bin/sh
# What `make dist` needs besides its venv (Debian, Raspberry Pi OS): a C
# compiler, patchelf, ccache, libzstd-dev (the packed launcher links it
# statically), python3-dev and python3-venv. Run as root, it installs what is
# missing with apt-get; otherwise it names the packages and the command, and
# exits 2. PREREQS_DRY=1 only prints what is missing.
set -eu
CC=${CC:-gcc}
BASE=${BASE_PYTHON:-/usr/bin/python3}
[ -x "$BASE" ] || BASE=python3
need=""
command -v "$CC" >/dev/null 2>&1 || need="$need gcc"
command -v patchelf >/dev/null 2>&1 || need="$need patchelf"
command -v ccache >/dev/null 2>&1 || need="$need ccache"
printf '#include <zstd.h>\n' | "$CC" -E - >/dev/null 2>&1 || need="$need libzstd-dev"
"$BASE" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  >/dev/null 2>&1 || need="$need python3-dev"
"$BASE" -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$need python3-venv"
[ -n "$need" ] || exit 0
if [ -n "${PREREQS_DRY:-}" ]; then
  echo "missing:$need"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "prereqs: installing$need with apt-get" >&2
  # shellcheck disable=SC2086
  apt-get update -qq && apt-get install -y -qq $need >/dev/null && exit 0
  echo "prereqs: apt-get could not install$need" >&2
  exit 2
fi
echo "make dist needs$need: sudo apt-get install$need" >&2
exit 2
