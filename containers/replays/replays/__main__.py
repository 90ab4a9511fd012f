"""A small standard-library HTTP service: PUT /replays/<id> stores a replay, GET returns it."""
import json
import logging
import os
import re
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger("replays")
ID = re.compile(r"^/replays/([A-Za-z0-9_-]{1,64})$")


def replay_dir():
    path = os.environ.get("REPLAY_DIR", "/tmp/replays")
    os.makedirs(path, exist_ok=True)
    return path


class Handler(BaseHTTPRequestHandler):
    server_version = "replays/" + os.environ.get("RELEASE", "dev")

    def _send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            writable = os.access(replay_dir(), os.W_OK)
            self._send(200 if writable else 503, {"status": "ok" if writable else "replay dir not writable"})
            return
        match = ID.match(self.path)
        if not match:
            self._send(404, {"error": "not found"})
            return
        try:
            with open(os.path.join(replay_dir(), match.group(1)), "rb") as f:
                self._send(200, f.read(), "application/octet-stream")
        except FileNotFoundError:
            self._send(404, {"error": "no such replay"})

    def do_PUT(self):
        match = ID.match(self.path)
        if not match:
            self._send(404, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        with open(os.path.join(replay_dir(), match.group(1)), "wb") as f:
            f.write(self.rfile.read(length))
        self._send(201, {"id": match.group(1), "bytes": length})

    def log_message(self, fmt, *args):
        LOG.info("%s %s", self.address_string(), fmt % args)


def main():
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(), format="%(asctime)s %(name)s %(message)s")
    port = int(os.environ.get("PORT", "8081"))
    LOG.info("listening on :%d, replays in %s", port, replay_dir())
    # As a container's first process SIGTERM is ignored unless handled: docker stop (a reboot, bake
    # up's end) would wait its 10 s and kill. Exit at once instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
