"""Resumes and suspends a generator expression millions of times a second, so that a reader of
its stack races the generator's frame being linked to and unlinked from its caller.
Prints READY, then runs until killed."""


def churn():
    while True:
        sum(i * i for i in range(1000))


print("READY", flush=True)
churn()
