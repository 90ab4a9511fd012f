#!/usr/bin/env bash
# Installs what bake's demo and tests need on a Debian 12 machine. Idempotent and quiet
# when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

debs=(docker.io docker-registry packer ansible python3-docker debootstrap busybox-static ansible-lint shellcheck yamllint curl
  qemu-system-x86 qemu-utils e2fsprogs openssh-client chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
  echo "setup: installing moto[server]"
  python3 -m pip install --quiet 'moto[server]>=5,<6' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
  hash -r
fi

# The SPDX project's own validator, which the tests run on every SPDX document bake writes.
if ! command -v pyspdxtools >/dev/null 2>&1; then
  echo "setup: installing spdx-tools (pyspdxtools)"
  python3 -m pip install --quiet 'spdx-tools>=0.8,<0.9' 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages 'spdx-tools>=0.8,<0.9'
  hash -r
fi

# goss (the tests of what was baked) from the Go module proxy, static, with its version built in.
# `go install …@version` asks the proxy for a version list it refuses here; a module that
# requires the version builds it.
GOSS_VERSION=v0.4.9
if [ "$(goss --version 2>/dev/null | awk '{print $3}')" != "$GOSS_VERSION" ]; then
  command -v go >/dev/null 2>&1 || { echo "setup: goss is built with Go (1.21 or newer), which is not on PATH" >&2; exit 1; }
  echo "setup: building goss $GOSS_VERSION"
  work=$(mktemp -d)
  printf 'module bake.local/goss\n\ngo 1.21\n\nrequire github.com/goss-org/goss %s\n' "$GOSS_VERSION" > "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/goss-org/goss/cmd/goss"\n' > "$work/tools.go"
  (cd "$work" && go mod tidy >/dev/null 2>&1 && CGO_ENABLED=0 go build -ldflags "-s -w -X github.com/goss-org/goss/util.Version=$GOSS_VERSION" -o goss github.com/goss-org/goss/cmd/goss)
  $SUDO install -m 0755 "$work/goss" /usr/local/bin/goss
  rm -rf "$work"
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.bake-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" > "$stamp"
fi

# Compile only when a source is newer than the last build.
if [ ! -f dist/bundle/cli.cjs ] || [ -n "$(find src test bench scripts/bundle.mjs tsconfig.json package-lock.json -newer dist/.built -print -quit 2>/dev/null)" ] || [ ! -f dist/.built ]; then
  npx tsc -p tsconfig.json
  node dist/src/config/write-validator.js
  node scripts/bundle.mjs
  touch dist/.built
fi

# `bake` on PATH: the npm global bin folder gets a link to this checkout's executable (as
# `npm link` would make, without reinstalling the dependencies). An install from the package
# (`npm pack`, then `npm install -g bake-*.tgz`) puts it in the same place.
bin="$(npm prefix -g)/bin"
if [ "$(readlink "$bin/bake" 2>/dev/null)" != "$PWD/dist/src/bake.cjs" ]; then
  $SUDO mkdir -p "$bin"
  $SUDO ln -sfn "$PWD/dist/src/bake.cjs" "$bin/bake"
  echo "setup: bake is on PATH at $bin/bake (this checkout)"
fi
