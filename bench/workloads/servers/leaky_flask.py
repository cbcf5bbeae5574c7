"""A Flask app with one leaking endpoint among churning ones, for bench/heap_servers.py.

/leak keeps ~316 KiB per request (a 256 KiB bytearray and 1,000 small strings in a module-level
list); /json builds and drops a 1.1 MB JSON string; /floats a 200k-float list; /spin only
computes. With LEAK=0 in the environment /leak keeps nothing (the no-leak control). /pid answers
the serving worker's pid (tests/servers.rs waits until every worker has answered).
"""
import json
import os

from flask import Flask

app = Flask(__name__)
KEEP = []
LEAK = os.environ.get("LEAK", "1") == "1"


def remember(request_id):
    KEEP.append(bytearray(256 * 1024))
    KEEP.append(["request %d item %d" % (request_id, i) for i in range(1000)])


@app.route("/leak")
def leak():
    if LEAK:
        remember(len(KEEP))
    return "ok"


@app.route("/json")
def big_json():
    text = json.dumps([{"id": i, "name": "n%d" % i} for i in range(40000)])
    return str(len(text))


@app.route("/floats")
def floats():
    values = [float(i) * 1.5 for i in range(200000)]
    return str(sum(values))


@app.route("/spin")
def spin():
    x = 0
    for i in range(200000):
        x = (x * 31 + i) % 1000003
    return str(x)


@app.route("/pid")
def pid():
    return str(os.getpid())
