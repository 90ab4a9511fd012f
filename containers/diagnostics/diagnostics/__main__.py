"""A small standard-library HTTP service: POST /reports stores a report, GET /summary counts them."""
import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = logging.getLogger("diagnostics")
REPORTS = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "diagnostics/" + os.environ.get("RELEASE", "dev")

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/healthz":
            self._send(200, {"status": "ok", "release": os.environ.get("RELEASE", "dev")})
        elif self.path == "/summary":
            with LOCK:
                by_kind = {}
                for r in REPORTS:
                    by_kind[r.get("kind", "unknown")] = by_kind.get(r.get("kind", "unknown"), 0) + 1
            self._send(200, {"reports": len(REPORTS), "by_kind": by_kind})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        if self.path != "/reports":
            self._send(404, {"error": "not found"})
            return
        token = os.environ.get("DIAGNOSTICS_TOKEN")
        if token and self.headers.get("Authorization") != "Bearer " + token:
            self._send(401, {"error": "unauthorized"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            report = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send(400, {"error": "body is not JSON"})
            return
        with LOCK:
            REPORTS.append(report)
        self._send(201, {"stored": len(REPORTS)})

    def log_message(self, fmt, *args):
        LOG.info("%s %s", self.address_string(), fmt % args)


def main():
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper(), format="%(asctime)s %(name)s %(message)s")
    port = int(os.environ.get("PORT", "8080"))
    LOG.info("listening on :%d", port)
    # As a container's first process SIGTERM is ignored unless handled: docker stop (a reboot, bake
    # up's end) would wait its 10 s and kill. Exit at once instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
