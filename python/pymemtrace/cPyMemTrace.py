"""``pymemtrace.cPyMemTrace``: Profile, Trace and (Python 3.13+) ReferenceTracing.

The classes and functions live in the compiled extension ``pymemtrace._pymemtrace``; importing
this module replaces it, in ``sys.modules``, by that extension's ``cPyMemTrace`` submodule so
that ``from pymemtrace import cPyMemTrace`` gives the same names as pymemtrace 0.4.0.
"""

import sys

from pymemtrace import _pymemtrace

_native = _pymemtrace.cPyMemTrace
_native.__file__ = __file__
_native.__spec__ = __spec__
_native.__loader__ = __loader__
_native.__package__ = __package__
sys.modules[__name__] = _native
