"""Imported by `import_heavy.py`: keeps --mb MiB (20 by default) at import time, 1 MiB at a
time with a short pause after each, so the growth is charged inside the import machinery."""

import time

KEPT = []
for _ in range(20):
    KEPT.append(bytearray(1 << 20))
    time.sleep(0.02)
