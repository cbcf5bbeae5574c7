# A task runner (issue 22, scaled down): forks short-lived Python children one after another;
# each keeps 8 MiB in keep() for 0.2 s and exits. Usage: fork_runner.py [CHILDREN]
import multiprocessing as mp, sys, time

def keep():
    b = bytearray(8 << 20)
    time.sleep(0.2)
    return len(b)

def child():
    keep()

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    time.sleep(0.5)
    for _ in range(n):
        p = ctx.Process(target=child)
        p.start()
        p.join()
