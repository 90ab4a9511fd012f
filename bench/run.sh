#!/usr/bin/env bash
# Runs every benchmark; each prints its ratio against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in dist/bench/keys.js dist/bench/build.js dist/bench/runners.js; do
  echo "== $b"
  node "$b"
done
