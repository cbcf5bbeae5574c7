"""``pymemtrace.cMemLeak``: CMalloc, PyRawMalloc and PyMalloc, deliberate allocations.

The classes live in the compiled extension ``pymemtrace._pymemtrace``; importing this module
replaces it, in ``sys.modules``, by that extension's ``cMemLeak`` submodule.
"""

import sys

from pymemtrace import _pymemtrace

_native = _pymemtrace.cMemLeak
_native.__file__ = __file__
_native.__spec__ = __spec__
_native.__loader__ = __loader__
_native.__package__ = __package__
sys.modules[__name__] = _native
