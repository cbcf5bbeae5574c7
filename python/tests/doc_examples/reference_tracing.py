import random  # added:
import time  # added:

class BytesWrapper:
    def __init__(self, length: int):
        self.bytes = b' ' * length

from pymemtrace import cPyMemTrace

def make_bytes_wrappers() -> str:
    with cPyMemTrace.ReferenceTracing() as profiler:
        l = []
        for i in range(4):
            length = random.randint(512, 1024) + 1024 ** 2
            l.append(BytesWrapper(length))
            time.sleep(0.25)
        while len(l):
            p = l.pop()
            del p
            time.sleep(0.25)
        return profiler.log_file_path()

print(make_bytes_wrappers())  # added:

assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
with cPyMemTrace.ReferenceTracing('test_reference_trace_depth(): ref_trace_0') as ref_trace_0:
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 1
    with cPyMemTrace.ReferenceTracing('test_reference_trace_depth(): ref_trace_1') as ref_trace_1:
        assert cPyMemTrace.reference_tracing_wrapper_depth() == 2
        with cPyMemTrace.ReferenceTracing('test_reference_trace_depth(): ref_trace_2') as ref_trace_2:
            assert cPyMemTrace.reference_tracing_wrapper_depth() == 3
        assert cPyMemTrace.reference_tracing_wrapper_depth() == 2
    assert cPyMemTrace.reference_tracing_wrapper_depth() == 1
assert cPyMemTrace.reference_tracing_wrapper_depth() == 0
