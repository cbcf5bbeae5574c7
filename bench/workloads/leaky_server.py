"""A threaded stdlib HTTP server that leaks on one route, for attach tests and demos.

GET /leak keeps --leak-kb KiB per request in a module-level list (the leak); GET /ok answers
without keeping anything. Both look something up for --work-ms first (a stand-in for a
database call), so a request's thread lives a few sampling periods. Prints `listening PORT` once it serves (port 0 picks a free one).
Usage: python leaky_server.py [--port 0] [--leak-kb 256] [--work-ms 20]
"""

import argparse
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LEAKED = []
LEAK_BYTES = 256 * 1024
WORK_S = 0.02


def remember_request(size):
    LEAKED.append(bytearray(size))


def lookup(path):
    time.sleep(WORK_S)
    return b"ok " + path.encode() + b"\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/leak":
            remember_request(LEAK_BYTES)
        body = lookup(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    global LEAK_BYTES, WORK_S
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--leak-kb", type=int, default=256)
    parser.add_argument("--work-ms", type=float, default=20)
    args = parser.parse_args()
    LEAK_BYTES = args.leak_kb * 1024
    WORK_S = args.work_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("listening", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
