#!/usr/bin/env bash
# Starts, if not already running: the Docker engine, a registry at 127.0.0.1:5000 and moto at
# http://localhost:5001. Waits until each answers. Logs go to .bake/services/.
set -euo pipefail
cd "$(dirname "$0")/.."
logs="$PWD/.bake/services"
mkdir -p "$logs"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

wait_for() { # name, seconds, command...
  local name=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "services: $name did not answer within ${secs}s; see $logs/$name.log" >&2
  return 1
}

docker_up() { curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping; }
registry_up() { curl -sf http://127.0.0.1:5000/v2/; }
moto_up() { curl -sf http://localhost:5001/moto-api/data.json; }

if ! docker_up >/dev/null 2>&1; then
  echo "services: starting dockerd"
  $SUDO sh -c "nohup dockerd >'$logs/dockerd.log' 2>&1 &"
  wait_for dockerd 60 docker_up
fi

if ! registry_up >/dev/null 2>&1; then
  echo "services: starting registry on 127.0.0.1:5000"
  mkdir -p "$logs/registry-data"
  cat > "$logs/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $logs/registry-data }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:5000
YML
  nohup docker-registry serve "$logs/registry.yml" >"$logs/registry.log" 2>&1 &
  wait_for registry 20 registry_up
fi

if ! moto_up >/dev/null 2>&1; then
  echo "services: starting moto on localhost:5001"
  nohup moto_server -H 127.0.0.1 -p 5001 >"$logs/moto.log" 2>&1 &
  wait_for moto 30 moto_up
fi
