"""cPyMemTrace: Profile and Trace logs of a function making strings of growing size, nested
tracers, messages, and (Python 3.13+) ReferenceTracing. The logs are written in the current
directory; their paths are printed."""
import sys

from pymemtrace import cPyMemTrace


def create_string(length: int) -> str:
    return ' ' * length


def make_strings(count: int, length: int) -> int:
    strings = [create_string(length) for _ in range(count)]
    return sum(len(s) for s in strings)


def example_profile() -> None:
    with cPyMemTrace.Profile(0, message='example_profile') as profiler:
        print(f'Profile logging to {profiler.log_file_path()}')
        make_strings(8, 1024 ** 2)
        profiler.write_message_to_log('Made 8 strings of 1 MiB')


def example_trace_nested() -> None:
    with cPyMemTrace.Trace(4096) as outer:
        print(f'Trace logging to {outer.log_file_path()}')
        make_strings(4, 512 * 1024)
        with cPyMemTrace.Trace(0) as inner:
            print(f'  nested Trace logging to {inner.log_file_path()}')
            make_strings(2, 256 * 1024)
        make_strings(4, 512 * 1024)


def example_reference_tracing() -> None:
    if sys.version_info < (3, 13):
        print('ReferenceTracing needs Python 3.13+')
        return
    with cPyMemTrace.ReferenceTracing(message='example_reference_tracing') as tracer:
        print(f'ReferenceTracing logging to {tracer.log_file_path()}')
        make_strings(4, 1024)


def main() -> int:
    example_profile()
    example_trace_nested()
    example_reference_tracing()
    print(f'RSS: {cPyMemTrace.rss():,d} peak RSS: {cPyMemTrace.rss_peak():,d}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
