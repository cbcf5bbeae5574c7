"""Runnable examples of each pymemtrace tool, as pymemtrace 0.4.0 ships them: run one with
``python -m pymemtrace.examples.ex_process`` (and so on). Each is small and finishes in seconds."""
