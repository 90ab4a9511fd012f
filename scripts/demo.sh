#!/usr/bin/env bash
# The reference pipeline end to end on the local engine: plan, build the containers, bake the
# AMI on the local target. Called by `make demo` after set-up and services.
set -euo pipefail
cd "$(dirname "$0")/.."
bake() { node dist/src/bake.cjs "$@"; }

echo "== bake doctor"
bake doctor || true
echo
echo "== bake plan --target local"
bake plan --target local
echo
echo "== bake build"
bake build
echo
# pass_env values reach the services at run time only: bake up's containers and, for the boot
# test, the booted host's runtime environment file (as user-data writes it on EC2).
export DIAGNOSTICS_TOKEN="${DIAGNOSTICS_TOKEN:-demo-token}"

echo "== bake ami app-host --target local (a systemd host, boot-tested: its services answer)"
bake ami app-host --target local
echo
echo "== bake plan --target local (everything cached now)"
bake plan --target local
echo
echo "== bake up (the release services, with their runtime contract)"
bake up
echo
echo "They answer at the URLs above; bake ps, bake logs -f <service>, and bake down to stop them."
