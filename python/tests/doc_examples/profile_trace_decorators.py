from pymemtrace import cpymemtrace_decs

@cpymemtrace_decs.profile(
    message="LASToHTML Profile d_rss_trigger=0",
    d_rss_trigger=0,
)
def process_arguments(args, log_level):
    # Execution code here.
    pass

process_arguments(None, None)  # added:

@cpymemtrace_decs.trace(
    message="LASToHTML Trace d_rss_trigger=0",
    d_rss_trigger=0,
)
def process_arguments(args, log_level):
    # Execution code here.
    pass

process_arguments(None, None)  # added:
