"""pymemtrace: find which Python code makes a CPython process grow (see the project README)."""
