#!/usr/bin/env python3
"""The app the rollout tests deploy: one version of a web service behind marathon-lb.

`rollout_app.py --port PORT` (the task's $PORT0), with the environment variables
- VERSION: sent back in the `X-Version` header of every answer (default "v1");
- FAIL_RATE: the share of requests to `/` answered with 500 (default 0), spread evenly (every
  request whose running count crosses the next multiple of 1/FAIL_RATE), so the share is exact
  and not left to chance.
`/health` always answers 200 (the Marathon health check). On SIGTERM it keeps serving for
2 s (Marathon sends SIGTERM as the task turns TASK_KILLING, before the load balancer has reloaded
without it) and then exits 0. Standard library only.
"""

import argparse
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("VERSION", "v1")
FAIL_RATE = float(os.environ.get("FAIL_RATE", "0") or 0)
DRAIN_SECONDS = 2.0

_lock = threading.Lock()
_served = 0
_failed = 0


def should_fail():
    """True for FAIL_RATE of the requests, evenly spread."""
    global _served, _failed
    with _lock:
        _served += 1
        if _failed < int(_served * FAIL_RATE):
            _failed += 1
            return True
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("X-Version", VERSION)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        if self.path.split("?")[0] == "/health":
            self.answer(200, "ok\n")
        elif should_fail():
            self.answer(500, "failing on purpose (FAIL_RATE)\n")
        else:
            self.answer(200, "hello from %s\n" % VERSION)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def on_term(_signum, _frame):
        # Serve through the drain, then stop (shutdown must not run on the serving thread).
        threading.Timer(DRAIN_SECONDS, server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    print("%s listening on 127.0.0.1:%d" % (VERSION, args.port), flush=True)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
