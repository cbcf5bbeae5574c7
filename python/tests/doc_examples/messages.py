import random  # added:
import time  # added:

from pymemtrace import cPyMemTrace  # added:

with cPyMemTrace.Profile(d_rss_trigger=-1, message="Start message") as profiler:
    for i in range(8):
        str_len = random.randint(100 * 1024**2, 500 * 1024**2)
        profiler.write_message_to_log(f'Before allocation of {str_len} bytes.')
        s = ' ' * str_len
        time.sleep(0.5)
        del s
        profiler.write_message_to_log(f'After de-allocation of {str_len} bytes.')
        time.sleep(0.5)
    time.sleep(0.5)
