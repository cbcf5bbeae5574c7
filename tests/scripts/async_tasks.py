"""asyncio tasks in known places, for `pmt dump --async` tests.

Usage: python async_tasks.py [N]. The main thread's loop runs a task group, a gather, a task
awaiting a task through nested coroutines, an eager task (3.12+), a task of the pure-Python
fallback (3.11–3.13), and N more tasks named many-0 … many-N-1; a second thread
("loop-thread") runs its own loop with one task. Prints `ready` once every task is suspended
where the test expects it, then waits to be killed. Lines marked `# @name` are looked up by
the test.
"""
import asyncio
import sys
import threading

MANY = int(sys.argv[1]) if len(sys.argv) > 1 else 0
thread_ready = threading.Event()


async def leaf(event):
    await event.wait()  # @leaf-wait


async def deep(event):
    await leaf(event)  # @deep-await


async def inner_body(event):
    await deep(event)  # @inner-await


async def awaiter(event):
    inner = asyncio.create_task(inner_body(event), name="inner")
    await inner  # @awaiter-await


async def gathered(event):
    await leaf(event)  # @gathered-await


async def gatherer(event):
    await asyncio.gather(gathered(event), gathered(event))  # @gather


async def group_owner(event):
    async with asyncio.TaskGroup() as group:
        group.create_task(deep(event), name="group-child-1")
        group.create_task(deep(event), name="group-child-2")


async def thread_main():
    event = asyncio.Event()
    worker = asyncio.create_task(leaf(event), name="thread-worker")
    for _ in range(10):
        await asyncio.sleep(0)
    asyncio.get_running_loop().call_soon(thread_ready.set)
    await worker  # @thread-await


async def main():
    asyncio.current_task().set_name("main")
    event = asyncio.Event()
    tasks = [
        asyncio.create_task(awaiter(event), name="awaiter"),
        asyncio.create_task(gatherer(event), name="gatherer"),
        asyncio.create_task(group_owner(event), name="group-owner"),
    ]
    if hasattr(asyncio, "eager_task_factory"):  # 3.12+: runs to its first await at once
        loop = asyncio.get_running_loop()
        tasks.append(asyncio.eager_task_factory(loop, deep(event), name="eager"))
    if sys.version_info < (3, 14):  # 3.14+ lists C tasks only, as CPython's own tools do
        tasks.append(asyncio.tasks._PyTask(deep(event), name="python-task"))
    tasks += [asyncio.create_task(leaf(event), name=f"many-{i}") for i in range(MANY)]
    threading.Thread(target=asyncio.run, args=(thread_main(),), name="loop-thread").start()
    # Every task created runs to its first suspension within a few turns of the loop.
    for _ in range(10):
        await asyncio.sleep(0)
    while not thread_ready.is_set():
        await asyncio.sleep(0.01)
    asyncio.get_running_loop().call_soon(lambda: print("ready", flush=True))
    await event.wait()  # @main-wait


asyncio.run(main())
