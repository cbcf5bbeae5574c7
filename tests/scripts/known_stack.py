"""A process whose Python stacks are known, for the stack reader's tests.

Usage: python known_stack.py DIR, where DIR holds the module `модуль_ü.py` (the test writes
it, with its function below line 2**16). Prints READY once every thread is where the test
expects it, then waits to be killed. Lines marked `# @name` are looked up by the test.
"""
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
import модуль_ü  # noqa: E402

worker_ready = threading.Event()
spinner_ready = threading.Event()


def say_ready():
    worker_ready.wait()
    spinner_ready.wait()
    print("READY", flush=True)


async def leaf_coro():
    worker_ready.set()
    time.sleep(3600)  # @worker-sleep


async def task_coro():
    await leaf_coro()  # @task-await


def worker_main():
    import asyncio
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_task(task_coro()))  # @worker-run


def spin():
    spinner_ready.set()
    while True: pass  # @spin


def gen():
    yield модуль_ü.функция(say_ready)  # @gen-yield


def recurse(n):
    if n == 0:
        return next(gen())  # @recurse-base
    return recurse(n - 1)  # @recurse-step


class K:
    def method(self):
        f = lambda: recurse(5)  # @lambda
        return f()  # @method


threading.Thread(target=worker_main, name="worker-名前", daemon=True).start()
threading.Thread(target=spin, name="spinner", daemon=True).start()
K().method()  # @module
