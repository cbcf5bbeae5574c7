"""``pymemtrace.util``: readers of the logs pymemtrace writes, as pymemtrace 0.4.0 ships them.

- ``ref_trace_analyse``: live, freed and per-type counts from a ``ReferenceTracing`` log;
- ``dtrace_log_analyse``: outstanding allocations from per-call malloc/free trace lines;
- ``gnuplot``: writing ``.dat`` and ``.plt`` files and running gnuplot on them.
"""
