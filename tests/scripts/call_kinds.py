"""Calls through every kind of call an interpreter makes without C code between caller and
callee (a plain call, a bound method, keywords, `*args`, a class's `__init__`,
`__getattribute__`, a property, a subscript, `yield from`, a `for` over a generator), runs
that chain until each call instruction is specialised, then sleeps at its innermost frame: a
stack that stays still, so every read of it must be whole. Every frame is on its line marked
`# @call`. With the argument `traced`, a tracer watches calls and lines while it runs
(sys.monitoring from 3.12, which instruments the instructions; sys.settrace before). Prints
READY, then sleeps until killed."""

import sys
import time

STILL = False


def leaf():
    if STILL:
        print("READY", flush=True)
        time.sleep(3600)  # @call leaf
    return 1


class Bound:
    def method(self):
        return leaf()  # @call method


BOUND = Bound().method
ARGS = (1,)


def by_star(n):
    return BOUND()  # @call by_star


def by_keyword(n):
    return by_star(*ARGS)  # @call by_keyword


class Made:
    def __init__(self):
        self.x = by_keyword(n=1)  # @call __init__


class Odd:
    def __getattribute__(self, name):
        return Made().x  # @call __getattribute__


class Prop:
    @property
    def value(self):
        return Odd().anything  # @call value


class Holder:
    def __getitem__(self, i):
        return Prop().value  # @call __getitem__


def sub():
    yield Holder()[0]  # @call sub


def gen():
    yield from sub()  # @call gen


def main():
    for _ in gen():  # @call main
        pass


if "traced" in sys.argv[1:]:
    if hasattr(sys, "monitoring"):
        mon = sys.monitoring
        mon.use_tool_id(mon.PROFILER_ID, "call_kinds")
        for event in (mon.events.CALL, mon.events.LINE):
            mon.register_callback(mon.PROFILER_ID, event, lambda *args: None)
        mon.set_events(mon.PROFILER_ID, mon.events.CALL | mon.events.LINE)
    else:
        def tracer(frame, event, arg):
            return tracer

        sys.settrace(tracer)

for _ in range(100):
    main()
STILL = True
main()  # @call <module>
