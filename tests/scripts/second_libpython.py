"""Loads a second, never initialised copy of the interpreter (this build's libpythonX.Y.so,
as an extension linked against it would) into a running static build, then sleeps in a
function the reader must find. Prints READY."""

import ctypes
import os
import sysconfig
import time


def wait_here():
    print("READY", flush=True)
    time.sleep(3600)


library = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY"))
if ".so" not in library:
    raise SystemExit(f"this build has no shared libpython ({library})")
ctypes.CDLL(library)
wait_here()
