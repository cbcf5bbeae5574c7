"""pymemtrace.util: ref_trace_analyse on real ReferenceTracing logs, dtrace_log_analyse on
per-call malloc/free lines, gnuplot's .dat/.plt writing; and the examples package running as
``python -m pymemtrace.examples.NAME``."""
import io
import os
import subprocess
import sys

import pytest

from pymemtrace.util import dtrace_log_analyse, gnuplot, ref_trace_analyse

needs_313 = pytest.mark.skipif(sys.version_info < (3, 13), reason='ReferenceTracing needs Python 3.13+')


class Kept:
    """An object type of our own, so its rows can be told from the interpreter's."""


@needs_313
def test_ref_trace_analyse_pairs_new_and_del(tmp_path):
    from pymemtrace import cPyMemTrace
    path = tmp_path / 'ref.log'
    kept = []
    with cPyMemTrace.ReferenceTracing(message='opening', filepath=str(path)):
        kept.extend(Kept() for _ in range(3))
        for _ in range(5):
            Kept()
    with open(path) as file:
        result = ref_trace_analyse.process_file(file, ignore_untracked=True)
    assert result.intro_message_lines == ['opening']
    # What the analysis must agree with: the rows of the log, counted naively.
    rows = [line.split() for line in path.read_text().splitlines() if line.startswith(('NEW:', 'DEL:'))]
    made = [r for r in rows if r[0] == 'NEW:' and r[4] == 'Kept']
    freed = [r for r in rows if r[0] == 'DEL:' and r[4] == 'Kept']
    assert made, 'the tracer logged no Kept objects'
    assert result.type_count_new['Kept'] == len(made)
    assert result.type_count_del['Kept'] == len(freed)
    assert result.count_new + result.count_del == len(rows)
    # The three kept objects were logged where they were made and are still alive.
    live = {obj.address: obj for obj in result.live_objects.values() if obj.type == 'Kept'}
    logged = {int(r[2], 16) for r in made}
    for obj in kept:
        if id(obj) in logged:
            assert live[id(obj)].file == __file__
            assert live[id(obj)].function == '<genexpr>'
    text = result.long_str_list(show_full_path=False, ignore_historical=False)
    assert 'Initial Message:' in text and 'opening' in text
    kept_row = [line.split() for line in text if line.startswith('Kept ')]
    assert kept_row == [['Kept', str(len(made)), str(len(freed)), str(len(made) - len(freed))]]


@needs_313
def test_ref_trace_analyse_command_line(tmp_path):
    from pymemtrace import cPyMemTrace
    path = tmp_path / 'ref.log'
    with cPyMemTrace.ReferenceTracing(filepath=str(path)):
        Kept()
    result = subprocess.run([sys.executable, '-m', 'pymemtrace.util.ref_trace_analyse', '--ignore-untracked', str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f'File path: {path}' in result.stdout
    assert 'Type count [' in result.stdout
    missing = subprocess.run([sys.executable, '-m', 'pymemtrace.util.ref_trace_analyse', str(tmp_path / 'none.log')],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and 'No such file' in missing.stderr


LOG = """dtrace:::BEGIN
 4242   work.py:10  -> make malloc(100) pntr 0x1000
 4242   work.py:11  -> make malloc(300) pntr 0x2000
 4242   work.py:12  -> drop free(0x1000)
 4242   work.py:12  -> drop free(0x0)
 4242   work.py:13  -> drop free(0x9000)
 garbage
dtrace:::END
 4242   work.py:14  -> late malloc(5) pntr 0x3000
"""


def test_dtrace_log_analyse_totals():
    result = dtrace_log_analyse.read_dtrace_log_file(io.StringIO(LOG))
    assert len(result) == 1
    assert result.count_mallocs == 2
    assert result.count_frees_non_null == 1 and result.count_frees_null == 1
    assert result.failed_to_add_free == 1 and result.failed_to_parse_line == 1
    assert result.total_bytes_outstanding == 300 and result.max_bytes_outstanding == 400
    out = io.StringIO()
    dtrace_log_analyse.pprint_mallocs(result, out)
    assert 'Total bytes outstanding:          300' in out.getvalue()


# As dtrace/py_malloc_free.bt writes it under bpftrace (a site-less call, then known sites).
BPFTRACE_LOG = """Attaching 13 probes...
# malloc and free calls of 4242 with their Python sites; Ctrl-C to stop
4242 :0 ->  malloc(34) pntr 0x10
4242 /tmp/work.py:19 -> allocate malloc(123457) pntr 0x2000
4242 /tmp/work.py:23 -> release free(0x2000)
# end of trace


"""


def test_dtrace_log_analyse_reads_py_malloc_free_bt_lines():
    result = dtrace_log_analyse.read_dtrace_log_file(io.StringIO(BPFTRACE_LOG))
    assert result.failed_to_parse_line == 0 and result.count_lines == 3
    assert result.count_mallocs == 2 and result.count_frees_non_null == 1
    assert [(c.size, c.file, c.line) for c in result.malloc_dict.values()] == [(34, "", -1)]
    call = dtrace_log_analyse.match_malloc_line("4242 /tmp/work.py:19 -> allocate malloc(123457) pntr 0x2000", 4)
    assert (call.process, call.file, call.line, call.function, call.size, call.pointer) == (
        4242, "/tmp/work.py", 19, "allocate", 123457, 0x2000)


def test_dtrace_log_analyse_command_line(tmp_path):
    path = tmp_path / 'd.log'
    path.write_text(LOG)
    result = subprocess.run([sys.executable, '-m', 'pymemtrace.util.dtrace_log_analyse', str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'Count mallocs:            2' in result.stdout


def test_gnuplot_dat_and_files(tmp_path):
    table = [['t', 'rss'], [0.5, 1024], [10.25, 7]]
    assert gnuplot.create_gnuplot_dat(table) == 't       rss   \n0.5     1024  \n10.25   7     '
    with pytest.raises(ValueError, match='Not rectangular'):
        gnuplot.create_gnuplot_dat([[1, 2], [3]])
    plt = gnuplot.PLOT.format(title='T') + 'plot "x.dat" using 1:2\n'
    code = gnuplot.invoke_gnuplot(str(tmp_path / 'out'), 'x', table, plt)
    assert (tmp_path / 'out' / 'x.dat').read_text().startswith('t ')
    assert (tmp_path / 'out' / 'x.plt').read_text() == plt
    assert code == 0 or gnuplot.version()


EXAMPLES = ['example', 'ex_cPyMemTrace', 'ex_debug_malloc_stats', 'ex_dtrace', 'ex_memory_exercise',
            'ex_process', 'ex_process_decorator', 'ex_process_tree', 'ex_trace_malloc']


@pytest.mark.parametrize('name', EXAMPLES)
def test_example_runs_as_a_module(name, tmp_path):
    args = {'ex_memory_exercise': ['--seconds', '1'], 'ex_process_tree': ['--workers', '2', '--rounds', '1']}
    result = subprocess.run([sys.executable, '-m', f'pymemtrace.examples.{name}', *args.get(name, [])],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    if name == 'ex_cPyMemTrace':
        logs = [line.split(' to ')[1] for line in result.stdout.splitlines() if ' logging to ' in line]
        assert len(logs) == (4 if sys.version_info >= (3, 13) else 3)
        assert all(os.path.isfile(path) for path in logs)
    if name == 'ex_process':
        assert 'ProcessLoggingThread-JSON' in result.stdout + result.stderr
