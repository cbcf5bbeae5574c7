"""pymemtrace 0.4.0's documented cPyMemTrace examples run unchanged (see doc_examples/)."""

import os
import subprocess
import sys

import pytest

from logparse import parse_name, read_profile_log, read_ref_log

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "doc_examples")

EXAMPLES = [
    # (script, minimum Python, kinds of the log files it writes)
    ("rss_changes.py", (3, 8), ["P", "P"]),
    ("messages.py", (3, 8), ["P"]),
    ("temporary_file.py", (3, 8), []),
    ("stacked.py", (3, 8), ["P"] * 5),
    ("profile_trace_decorators.py", (3, 8), ["P", "T"]),
    ("shipped_example.py", (3, 8), ["P"]),
    ("reference_tracing.py", (3, 13), ["O"] * 4),
    ("reference_tracing_decorators.py", (3, 13), ["O"] * 8 + ["T"]),
]


@pytest.mark.parametrize("script,minimum,kinds", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs(script, minimum, kinds, tmp_path):
    if sys.version_info < minimum:
        pytest.skip(f"{script} needs Python {minimum[0]}.{minimum[1]}+")
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, script)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    logs = sorted(name for name in os.listdir(tmp_path) if name.endswith(".log"))
    assert sorted(parse_name(name)["kind"] for name in logs) == sorted(kinds)
    for name in logs:
        if parse_name(name)["kind"] == "O":
            read_ref_log(tmp_path / name)
        else:
            read_profile_log(tmp_path / name)
    if script == "temporary_file.py":
        assert "# Level 0 after populating list." in result.stdout
        assert result.stdout.count("NEXT:") > 10
    if script == "shipped_example.py":
        assert f"Logging to {tmp_path / logs[0]}" in result.stdout
    if script == "messages.py":
        log = read_profile_log(tmp_path / logs[0])
        assert log.opening == "Start message"
        before = [m for m in log.messages() if m.startswith("Before allocation of")]
        assert len(before) == 8
        big = [e for e in log.events("NEXT:") if e.d_rss >= 100 * 1024 ** 2]
        assert len(big) == 8
