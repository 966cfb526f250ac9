#!/bin/sh
# One command: make .venv, install Mycelium, run the demo.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh
exec .venv/bin/mycelium demo "$@"
