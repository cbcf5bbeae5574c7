"""pymemtrace: find which Python code makes a process grow.

The API of pymemtrace 0.4.0: ``pymemtrace.cPyMemTrace`` (Profile, Trace, ReferenceTracing),
``pymemtrace.cpymemtrace_decs`` (their decorators) and ``pymemtrace.cMemLeak`` are compiled
(Rust, PyO3); the pure-Python modules sit beside them. Nothing is imported eagerly here, so a
pure-Python module such as ``pymemtrace.process`` imports without the compiled extension.
"""

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    try:
        __version__ = _version("pymemtrace")
    except PackageNotFoundError:
        __version__ = "unknown"
    del PackageNotFoundError, _version
except ImportError:  # pragma: no cover - importlib.metadata is in every supported Python
    __version__ = "unknown"
