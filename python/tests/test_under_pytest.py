"""Tracers inside a pytest session of their own: decorated tests, failing asserts (pytest's
assertion rewriting and report formatting run while the tracer is active), no crash."""

import os
import subprocess
import sys
import textwrap

INNER_TESTS = textwrap.dedent(
    '''
    import sys
    import pytest
    from pymemtrace import cPyMemTrace, cpymemtrace_decs

    @cpymemtrace_decs.profile(0)
    def test_profiled_passes():
        assert sum(range(10)) == 45

    @cpymemtrace_decs.trace(0)
    def test_traced_fails():
        assert ["a", "b", "c"] == ["a", "b", "c", "d"]

    def test_profile_with_failing_assert():
        with cPyMemTrace.Profile(0):
            assert {"x": 1} == {"x": 2}

    @pytest.mark.skipif(sys.version_info < (3, 13), reason="ReferenceTracing is 3.13+")
    def test_reference_tracing_with_failing_assert():
        with cPyMemTrace.ReferenceTracing(include_builtins=True):
            assert ["a", "b", "c"] == ["a", "b", "c", "d"]
    '''
)


def test_pytest_session_with_tracers(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr  # test failures, not a crash
    failed = 3 if sys.version_info >= (3, 13) else 2
    assert f"{failed} failed, 1 passed" in out, out
    assert "AssertionError" in out or "assert" in out
    logs = [name for name in os.listdir(tmp_path) if name.endswith(".log")]
    assert len(logs) == failed + 1
    for name in logs:
        with open(tmp_path / name, encoding="utf-8") as file:
            assert file.read().endswith("EOF\n")
