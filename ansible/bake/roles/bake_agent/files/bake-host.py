#!/usr/bin/env python3
"""bake's agent on a host, run by systemd at boot (and by the roles during a bake):

  bake-host preload          load the shipped archives (one per stage) unless every image is there under its key
  bake-host start NAME       (re)create and start a service from its runtime contract
  bake-host stop NAME        stop it

It speaks the Docker Engine API on the engine's socket, as `bake up` does, so a service runs from
the same create options on a host as on a laptop. pass_env values are read here, at boot, from
the runtime environment file the contract names (docker --env-file format: KEY=VALUE lines),
which the instance's user-data writes; they are never part of the machine image.
"""
import fcntl
import http.client
import json
import os
import socket
import sys
import urllib.parse

SOCKET = os.environ.get("BAKE_DOCKER_SOCKET", "/run/docker.sock")
PRELOAD_DIR = "/var/lib/bake/preload"
SERVICES_DIR = "/etc/bake/services"


class EngineConnection(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=900)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(SOCKET)


def engine(method, path, body=None, headers=None):
    """One API call: (status, parsed JSON or raw bytes)."""
    conn = EngineConnection()
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    try:
        return res.status, json.loads(data) if data.strip()[:1] in (b"{", b"[") else data
    except ValueError:
        return res.status, data


def fail(message):
    print(message, file=sys.stderr, flush=True)
    sys.exit(1)


def image_key(ref):
    status, body = engine("GET", "/images/%s/json" % urllib.parse.quote(ref, safe=""))
    if status != 200:
        return None
    return ((body.get("Config") or {}).get("Labels") or {}).get("bake.key")


def preload():
    # One archive per stage the machine image was baked in (images, then release): a stage's
    # archive leaves out the layers the one below holds, so they load bottom first.
    names = sorted(f[: -len(".json")] for f in os.listdir(PRELOAD_DIR) if f.endswith(".json"))
    everything = []
    for name in names:
        with open(os.path.join(PRELOAD_DIR, "%s.json" % name)) as f:
            images = json.load(f)
        everything += images
        missing = [i for i in images if image_key(i["ref"]) != i["key"]]
        if not missing:
            continue
        archive = os.path.join(PRELOAD_DIR, "%s.tar" % name)
        print("loading %s (%s missing)" % (archive, ", ".join(i["ref"] for i in missing)), flush=True)
        with open(archive, "rb") as body:
            size = os.fstat(body.fileno()).st_size
            status, answer = engine("POST", "/images/load?quiet=1", body, {"Content-Type": "application/x-tar", "Content-Length": str(size)})
        text = answer.decode(errors="replace") if isinstance(answer, bytes) else json.dumps(answer)
        if status != 200 or '"error"' in text:
            fail("loading %s failed (HTTP %d): %s" % (archive, status, text.strip()[-2000:]))
    wrong = [i["ref"] for i in everything if image_key(i["ref"]) != i["key"]]
    if wrong:
        fail("not present under their keys after loading: %s" % ", ".join(wrong))
    print("every shipped image is present under its key: %s" % ", ".join(i["ref"] for i in everything), flush=True)


def read_env_file(path):
    """docker --env-file format: KEY=VALUE per line, the value verbatim; # comments and blank lines skipped.

    Lines end at "\n" only (a "\r" before it, as user-data written on Windows has, is dropped): not
    splitlines(), which also splits on \r, \v, \f, \x1c-\x1e, \x85 and U+2028/2029 inside a value.
    """
    values = {}
    try:
        with open(path, newline="") as f:
            for line in (raw[:-1] if raw.endswith("\r") else raw for raw in f.read().split("\n")):
                if not line.strip() or line.lstrip().startswith("#") or "=" not in line:
                    continue
                key, value = line.split("=", 1)
                values[key.strip()] = value
    except FileNotFoundError:
        pass
    return values


def contract(name):
    with open(os.path.join(SERVICES_DIR, "%s.json" % name)) as f:
        spec = json.load(f)
    env = read_env_file(spec["runtime_env"])
    create = spec["create"]
    container = create.pop("name")
    # A namespace (the boot test's, or two hosts sharing one engine) prefixes every name.
    namespace = env.get("BAKE_NAMESPACE", "")
    if namespace:
        container = "%s-%s" % (namespace, container)
        create["HostConfig"]["NetworkMode"] = "%s-%s" % (namespace, create["HostConfig"]["NetworkMode"])
        create["Labels"]["bake.namespace"] = namespace
    if env.get("BAKE_PUBLISH") == "ephemeral":
        for bindings in create["HostConfig"]["PortBindings"].values():
            for b in bindings:
                b["HostPort"] = ""
    return spec, env, container, create


def start(name):
    # Services start side by side at boot: one at a time, so that they create their shared network once.
    with open("/run/bake-host.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start_locked(name)


def start_locked(name):
    spec, env, container, create = contract(name)
    missing = [k for k in spec["pass_env"] if k not in env]
    if missing:
        fail("%s: %s not set in %s (the instance's user-data writes it)" % (name, ", ".join(missing), spec["runtime_env"]))
    create["Env"] = create["Env"] + ["%s=%s" % (k, env[k]) for k in spec["pass_env"]]
    network = create["HostConfig"]["NetworkMode"]
    status, _ = engine("GET", "/networks/%s" % urllib.parse.quote(network, safe=""))
    if status == 404:
        labels = {k: v for k, v in create["Labels"].items() if k in ("bake.project", "bake.namespace")}
        status, body = engine("POST", "/networks/create", {"Name": network, "Labels": labels, "CheckDuplicate": True})
        if status not in (201, 409):
            fail("%s: creating network %s failed (HTTP %d): %s" % (name, network, status, body))
    engine("DELETE", "/containers/%s?force=1" % urllib.parse.quote(container, safe=""))
    status, body = engine("POST", "/containers/create?name=%s" % urllib.parse.quote(container, safe=""), create)
    if status != 201:
        fail("%s: creating container %s failed (HTTP %d): %s" % (name, container, status, body))
    status, body = engine("POST", "/containers/%s/start" % body["Id"])
    if status not in (204, 304):
        fail("%s: starting container %s failed (HTTP %d): %s" % (name, container, status, body))
    print("%s: started %s from %s" % (name, container, create["Image"]), flush=True)


def stop(name):
    _, _, container, _ = contract(name)
    status, body = engine("POST", "/containers/%s/stop?t=10" % urllib.parse.quote(container, safe=""))
    if status not in (204, 304, 404):
        fail("%s: stopping container %s failed (HTTP %d): %s" % (name, container, status, body))


if __name__ == "__main__":
    commands = {"preload": lambda: preload(), "start": lambda: start(sys.argv[2]), "stop": lambda: stop(sys.argv[2])}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or (sys.argv[1] != "preload" and len(sys.argv) != 3):
        fail("usage: bake-host preload | start NAME | stop NAME")
    commands[sys.argv[1]]()
