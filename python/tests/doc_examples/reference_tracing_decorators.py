from pymemtrace import cpymemtrace_decs

@cpymemtrace_decs.reference_tracing(
    message="LASToHTML Reference Tracing include_builtins=False",
    include_builtins=False,
)
def process_arguments(args, log_level):
    # Execution code here.
    pass

process_arguments(None, None)  # added:

@cpymemtrace_decs.reference_tracing(
    message="LASToHTML Reference Tracing include_builtins=True",
    include_builtins=True,
)
def process_arguments(args, log_level):
    # Execution code here.
    pass

process_arguments(None, None)  # added:

@cpymemtrace_decs.reference_tracing(
    message=(
        "LASToHTML Reference Tracing include_builtins=False"
        " include_tp_names=['LASSection',]"
    ),
    include_builtins=False,
    include_tp_names=['LASSection',],
    gc_collect_on_exit=-1,
)
def process_arguments(args, log_level):
    # Execution code here.
    pass

process_arguments(None, None)  # added:

@cpymemtrace_decs.reference_tracing(
    message="some_function() exclude tuple and list iterators",
    exclude_tp_names=['tuple_iterator', 'list_iterator',],
)
def some_function():
    pass

some_function()  # added:

@cpymemtrace_decs.reference_tracing(
    message='Testing some really important function',
)
def really_important_function():
    pass

really_important_function()  # added:

@cpymemtrace_decs.trace(
    message='Trace the inner function',
)
def inner_function():
    pass

@cpymemtrace_decs.reference_tracing(
    message='Reference trace the outer function that calls the inner function',
)
def outer_function():
    inner_function()

outer_function()  # added:

@cpymemtrace_decs.reference_tracing(
    message='Reference trace the inner function',
)
def inner_function():
    pass

@cpymemtrace_decs.reference_tracing(
    message='Reference trace the outer function that calls the inner function',
)
def outer_function():
    inner_function()

outer_function()  # added:
