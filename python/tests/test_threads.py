"""Tracers and threads: a Profile/Trace records only the thread that entered it."""

import threading

import pytest

from logparse import read_profile_log
from pymemtrace import cPyMemTrace


def worker_function():
    return sum(range(100))


@pytest.mark.parametrize("cls", [cPyMemTrace.Profile, cPyMemTrace.Trace])
def test_other_threads_are_not_recorded(cls, tmp_path):
    path = tmp_path / "main.log"
    with cls(0, filepath=str(path)):
        thread = threading.Thread(target=worker_function)
        thread.start()
        thread.join()
        worker_function.__name__  # a main-thread event after the join
    log = read_profile_log(path)
    assert not [e for e in log.events() if e.function == "worker_function"]


@pytest.mark.parametrize("cls", [cPyMemTrace.Profile, cPyMemTrace.Trace])
def test_each_thread_its_own_stack_and_file(cls, tmp_path):
    results = {}
    barrier = threading.Barrier(4)

    def run(index):
        path = tmp_path / f"thread{index}.log"
        with cls(0, filepath=str(path)) as tracer:
            barrier.wait()
            results[index] = (
                cPyMemTrace.profile_wrapper_depth() + cPyMemTrace.trace_wrapper_depth(),
                tracer.log_file_path(),
            )
            for _ in range(20):
                worker_function()
            tracer.write_message_to_log(f"thread {index}")
            barrier.wait()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cPyMemTrace.profile_wrapper_depth() == 0
    for index in range(4):
        depth, path = results[index]
        assert depth == 1
        assert path == str(tmp_path / f"thread{index}.log")
        log = read_profile_log(path)
        assert log.messages() == [f"thread {index}"]
        assert [e for e in log.events() if e.function == "worker_function"]


def test_exit_in_another_thread_is_refused(tmp_path):
    tracer = cPyMemTrace.Profile(filepath=str(tmp_path / "x.log"))
    tracer.__enter__()
    errors = []

    def exit_here():
        try:
            tracer.__exit__(None, None, None)
        except RuntimeError as err:
            errors.append(str(err))

    thread = threading.Thread(target=exit_here)
    thread.start()
    thread.join()
    assert errors and "another thread" in errors[0]
    tracer.__exit__(None, None, None)
    assert cPyMemTrace.profile_wrapper_depth() == 0
    read_profile_log(tmp_path / "x.log")


@pytest.mark.parametrize("cls", [cPyMemTrace.Profile, cPyMemTrace.Trace])
def test_fork_child_does_not_write_the_parents_log(cls, tmp_path):
    import os

    path = tmp_path / "fork.log"
    with cls(0, filepath=str(path)) as tracer:
        tracer.write_message_to_log("before fork")
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(50):
                    worker_function()
                with pytest.raises(OSError):
                    tracer.write_message_to_log("from the child")
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        tracer.write_message_to_log("after fork")
    log = read_profile_log(path)
    assert log.messages() == ["before fork", "after fork"]
    numbers = [e.event for e in log.events("NEXT:")]
    assert numbers == sorted(set(numbers)), "no line written twice"
    with open(path, encoding="utf-8") as file:
        assert file.read().count("SOF") == 1
