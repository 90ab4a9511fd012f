#!/usr/bin/env bash
# The reference pipeline end to end on the local engine. Called by `make demo` after set-up
# and services.
set -euo pipefail
cd "$(dirname "$0")/.."
bake() { node dist/src/cli.js "$@"; }

echo "== bake doctor"
bake doctor || true
echo
echo "== bake plan --target local"
bake plan --target local
