# From pymemtrace 0.4.0's pymemtrace/examples/ex_cPyMemTrace.py.
from pymemtrace import cPyMemTrace


def create_string(l: int) -> str:
    return ' ' * l


def example_profile_for_documentation():
    print(f'example_profile_for_documentation()')
    with cPyMemTrace.Profile(0, message="MESSAGE"):
        print(f'Logging to {cPyMemTrace.get_log_file_path_profile()}')
        l = []
        for i in range(8):
            l.append(create_string(1024**2))
        while len(l):
            l.pop()


example_profile_for_documentation()  # added:
