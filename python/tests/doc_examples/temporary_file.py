from pymemtrace import cPyMemTrace  # added:

import tempfile

with tempfile.NamedTemporaryFile() as file:
    with cPyMemTrace.Trace(0, message='# Trace level0', filepath=file.name) as trace:
        trace.trace_file_wrapper.write_message_to_log('# Level 0 __enter__')
        temp_list = []
        for i in range(16):
            temp_list.append(b' ' * (1024 ** 2))
        trace.trace_file_wrapper.write_message_to_log(
            '# Level 0 after populating list.'
        )
        while len(temp_list):
            temp_list.pop()
        trace.trace_file_wrapper.write_message_to_log(
            '# Level 0 after deleting the list.'
        )
    file.flush()
    file_data = file.read()
    print()
    print(' filedata '.center(75, '-'))
    for line in file_data.split(b'\n'):
        print(line.decode('ascii'))
    print(' file_data DONE '.center(75, '-'))
