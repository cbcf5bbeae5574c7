"""The FastAPI twin of leaky_flask.py, for bench/heap_servers.py --server uvicorn.

/leak keeps ~316 KiB per request (a 256 KiB bytearray and 1,000 small strings in a module-level
list); /json builds and drops a 1.1 MB JSON string; /floats a 200k-float list; /spin only
computes. These four handlers are plain `def`s (run in the thread pool, as most FastAPI apps'
blocking handlers are). With LEAK=0 in the environment /leak keeps nothing (the no-leak control).
/async_spin (computes as /spin does) and /async_rows (builds and drops 20,000 dicts) are
`async def`s: they run in the event loop, each request in its own task (for `pmt-sample
--async`, tests/servers.rs). /pid answers the serving worker's pid (tests/servers.rs waits until
every worker has answered).
"""
import json
import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
KEEP = []
LEAK = os.environ.get("LEAK", "1") == "1"


def remember(request_id):
    KEEP.append(bytearray(256 * 1024))
    KEEP.append(["request %d item %d" % (request_id, i) for i in range(1000)])


@app.get("/leak", response_class=PlainTextResponse)
def leak():
    if LEAK:
        remember(len(KEEP))
    return "ok"


@app.get("/json", response_class=PlainTextResponse)
def big_json():
    text = json.dumps([{"id": i, "name": "n%d" % i} for i in range(40000)])
    return str(len(text))


@app.get("/floats", response_class=PlainTextResponse)
def floats():
    values = [float(i) * 1.5 for i in range(200000)]
    return str(sum(values))


@app.get("/spin", response_class=PlainTextResponse)
def spin():
    x = 0
    for i in range(200000):
        x = (x * 31 + i) % 1000003
    return str(x)


@app.get("/async_spin", response_class=PlainTextResponse)
async def async_spin():
    x = 0
    for i in range(200000):
        x = (x * 31 + i) % 1000003
    return str(x)


@app.get("/async_rows", response_class=PlainTextResponse)
async def async_rows():
    rows = [{"id": i, "name": "n%d" % i} for i in range(20000)]
    return str(len(rows))


@app.get("/pid", response_class=PlainTextResponse)
async def pid():
    return str(os.getpid())
