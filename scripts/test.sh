#!/bin/sh
# One command: make .venv, install Mycelium with its test tools, run every test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh test
exec .venv/bin/python -m pytest "$@"
