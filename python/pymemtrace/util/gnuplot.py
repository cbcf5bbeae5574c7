"""gnuplot support for the command line tools: ``.dat`` tables, ``.plt`` scripts, running gnuplot.

``pymemtrace.process`` writes its plots through this module; the plot fragments below are for
scripts that build their own ``.plt`` text.
"""
import argparse
import logging
import os
import shutil
import subprocess
import typing

logger = logging.getLogger(__name__)

#: Seconds gnuplot may take on one plot (curve fitting can be slow).
TIMEOUT = 30

Table = typing.Sequence[typing.Sequence[typing.Any]]


def version() -> bytes:
    """gnuplot's ``--version`` line, e.g. ``b'gnuplot 5.4 patchlevel 4'``; ``b''`` if it is not installed."""
    gnuplot = shutil.which('gnuplot')
    if gnuplot is None:
        return b''
    return subprocess.run([gnuplot, '--version'], capture_output=True, timeout=TIMEOUT).stdout.strip()


def add_gnuplot_to_argument_parser(parser: argparse.ArgumentParser) -> None:
    """Adds ``--gnuplot DIRECTORY`` (``args.gnuplot``); ValueError if gnuplot is not installed."""
    found = version()
    logger.info('gnuplot version: "%s"', found)
    if not found:
        raise ValueError('--gnuplot needs gnuplot, which is not installed (e.g. apt-get install gnuplot-nox).')
    parser.add_argument('--gnuplot', type=str, help='Directory to write the gnuplot data and plots to.')


def _num_columns(table: Table) -> int:
    """The number of columns of ``table``; ValueError if its rows differ in length."""
    lengths = {len(row) for row in table}
    if len(lengths) != 1:
        raise ValueError(f'Not rectangular: rows have {sorted(lengths)} columns.')
    return lengths.pop()


def create_gnuplot_dat(table: Table) -> str:
    """The text of a ``.dat`` file: each cell left-aligned to its column's widest cell + 2."""
    if not table:
        return ''
    columns = _num_columns(table)
    widths = [max(len(str(row[i])) + 2 for row in table) for i in range(columns)]
    return '\n'.join(' '.join(f'{str(cell):<{width}}' for cell, width in zip(row, widths)) for row in table)


def invoke_gnuplot(path: str, name: str, table: Table, plt: str) -> int:
    """Writes ``NAME.dat`` (``table``) and ``NAME.plt`` (``plt``) into directory ``path`` and runs
    gnuplot there on the script. Returns gnuplot's exit code (0 with a warning when gnuplot is not
    installed, so that the files are still written)."""
    logger.info('Writing gnuplot data "%s" in %s', name, path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, f'{name}.dat'), 'w') as file:
        file.write(create_gnuplot_dat(table))
    with open(os.path.join(path, f'{name}.plt'), 'w') as file:
        file.write(plt)
    gnuplot = shutil.which('gnuplot')
    if gnuplot is None:
        logger.warning('gnuplot is not installed: wrote %s.dat and %s.plt only.', name, name)
        return 0
    try:
        result = subprocess.run([gnuplot, f'{name}.plt'], cwd=path, capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.error('gnuplot took more than %d s on %s.plt; stopped it.', TIMEOUT, name)
        return 1
    if result.returncode or result.stderr:
        logger.error('gnuplot stderr: %s', result.stderr.decode(errors='replace'))
    return result.returncode


def write_test_file(path: str, typ: str) -> int:
    """Runs gnuplot's ``test`` page into ``PATH/test.TYP`` with terminal ``typ``; returns its exit code."""
    gnuplot = shutil.which('gnuplot')
    if gnuplot is None:
        logger.error('gnuplot is not installed.')
        return 1
    script = f'set terminal {typ}\nset output "test.{typ}"\ntest\n'
    result = subprocess.run([gnuplot], cwd=path, input=script.encode(), capture_output=True, timeout=TIMEOUT)
    if result.stderr:
        logger.error('gnuplot stderr: %s', result.stderr.decode(errors='replace'))
    return result.returncode


#: Start of a plot script: grid, title (``{title}``), whitespace-separated data, NaN missing.
PLOT = """set grid
set title "{title}"

set pointsize 1
set datafile separator whitespace
set datafile missing "NaN"
"""

#: Logarithmic x axis labelled ``{label}``.
X_LOG = """set logscale x
set xlabel "{label}"
"""

#: Logarithmic y axis labelled ``{label}``.
Y_LOG = """set logscale y
set ylabel "{label}"
"""

#: Logarithmic second y axis labelled ``{label}``.
Y2_LOG = """set logscale y2
set y2label "{label}"
set y2tics
"""
