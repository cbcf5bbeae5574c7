# Short-lived forked children (issue 22): each keeps 8 MiB in keep() and exits at once, often
# before a sampler could attach to it. Usage: fast_forks.py [CHILDREN]
import os, sys, time


def keep():
    b = bytearray(8 << 20)
    return len(b)


if __name__ == "__main__":
    time.sleep(0.5)
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 10):
        pid = os.fork()
        if pid == 0:
            keep()
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.05)
