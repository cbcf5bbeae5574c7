"""Recurses to every depth from 0 to 20 and back, over and over, so that the reader of its
stack races frames being pushed and popped. A whole stack is `rec` 0 to 21 times, then `loop`,
`main`, `<module>`. Prints READY, then runs until killed."""


def rec(n):
    if n:
        rec(n - 1)


def loop():
    print("READY", flush=True)
    while True:
        for depth in range(21):
            rec(depth)


def main():
    loop()


main()
