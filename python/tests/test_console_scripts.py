"""`pip install` puts `pmt` and `pmt-sample` on PATH; they run the Rust command line."""

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("program", ["pmt", "pmt-sample"])
def test_script_installed_and_runs(program):
    path = os.path.join(BIN, program)
    assert os.access(path, os.X_OK), f"{program} not installed beside {sys.executable}"
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert program in result.stdout


def test_exit_code_of_a_usage_error_is_passed_through():
    result = subprocess.run(
        [os.path.join(BIN, "pmt"), "--no-such-option"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--no-such-option" in result.stderr


def test_run_cli_refuses_unknown_programs():
    from pymemtrace import _pymemtrace

    with pytest.raises(ValueError):
        _pymemtrace.run_cli("rm", ["rm"])


def test_pure_python_package_import_does_not_load_the_extension():
    code = "import sys, pymemtrace; assert 'pymemtrace._pymemtrace' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
