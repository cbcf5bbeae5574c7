"""Builds a recursive stack, prints READY, keeps churning frames for a moment, then exits."""
import time


def churn(n, until):
    if n:
        return churn(n - 1, until)
    while time.time() < until:
        [i for i in range(100)]


print("READY", flush=True)
end = time.time() + 0.5
while time.time() < end:
    churn(30, time.time() + 0.01)
