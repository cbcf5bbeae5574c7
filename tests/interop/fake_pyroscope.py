"""Stands in for a Pyroscope server's ingest endpoint on 127.0.0.1: accepts `POST /ingest`
(multipart/form-data with a `profile` field, as Pyroscope documents for format=pprof),
decodes each profile with read_pprof.py, and appends one JSON line per request to LOG:
path, query parameters, content type, the `sample_type_config` field and the decoded
profile. Prints `port N` once listening; exits after --seconds (default 60) or on SIGTERM.

Usage: python fake_pyroscope.py LOG [--seconds S]"""

import email.parser
import email.policy
import json
import signal
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import read_pprof


def form_fields(content_type, body):
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = part.get_payload(decode=True)
    return fields


class Ingest(BaseHTTPRequestHandler):
    log_path = None

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        url = urllib.parse.urlsplit(self.path)
        record = {
            "path": url.path,
            "query": dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)),
            "content_type": self.headers.get("Content-Type", ""),
        }
        try:
            fields = form_fields(record["content_type"], body)
            record["fields"] = sorted(fields)
            if "sample_type_config" in fields:
                record["sample_type_config"] = json.loads(fields["sample_type_config"])
            record["profile"] = read_pprof.summarize(fields["profile"])
            status = 200
        except Exception as error:  # the test reads what went wrong from the log
            record["error"] = repr(error)
            status = 400
        with open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    Ingest.log_path = sys.argv[1]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--seconds" else 60.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingest)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    threading.Timer(seconds, server.shutdown).start()
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
