# From pymemtrace 0.4.0's pymemtrace/examples/ex_cPyMemTrace.py, but naming the log with the
# tracer's log_file_path(): 0.4.0's module has no get_log_file_path_profile() (its example fails).
from pymemtrace import cPyMemTrace


def create_string(l: int) -> str:
    return ' ' * l


def example_profile_for_documentation():
    print(f'example_profile_for_documentation()')
    with cPyMemTrace.Profile(0, message="MESSAGE") as profiler:
        print(f'Logging to {profiler.log_file_path()}')
        l = []
        for i in range(8):
            l.append(create_string(1024**2))
        while len(l):
            l.pop()


example_profile_for_documentation()  # added:
