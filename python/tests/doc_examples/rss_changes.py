from pymemtrace import cPyMemTrace

def new_str(l: int) -> str:
    return ' ' * l

with cPyMemTrace.Profile():
    l = []
    for i in range(8):
        l.append(new_str(1024**2))
    while len(l):
        l.pop()

with cPyMemTrace.Profile(0):
    l = []
    for i in range(8):
        l.append(new_str(1024**2))
    while len(l):
        l.pop()
