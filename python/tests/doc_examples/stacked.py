from pymemtrace import cPyMemTrace

assert cPyMemTrace.profile_wrapper_depth() == 0
with cPyMemTrace.Profile(0, message='test_profile_depth()') as profiler_0:
    assert cPyMemTrace.profile_wrapper_depth() == 1
    with cPyMemTrace.Profile(0, message='test_profile_depth()') as profiler_1:
        assert cPyMemTrace.profile_wrapper_depth() == 2
        with cPyMemTrace.Profile(message='test_profile_depth()') as profiler_2:
            assert cPyMemTrace.profile_wrapper_depth() == 3
        assert cPyMemTrace.profile_wrapper_depth() == 2
    assert cPyMemTrace.profile_wrapper_depth() == 1
assert cPyMemTrace.profile_wrapper_depth() == 0

with cPyMemTrace.Profile():
    # Now writing to, say, "20241107_195847_11_62264_P_0_PY3.13.0b3.log"
    # Note the "_0_" in the file name.
    with cPyMemTrace.Profile():
        # Writing to "20241107_195847_12_62264_P_0_PY3.13.0b3.log" is suspended.
        # Now writing to, say, "20241107_195847_12_62264_P_1_PY3.13.0b3.log"
        # Note the "_1_" in the file name.
        pass
    # The log file "20241107_195847_12_62264_P_1_PY3.13.0b3.log" is closed.
    # Writing to "20241107_195847_11_62264_P_0_PY3.13.0b3.log" is resumed.
    pass
# The log file "20241107_195847_11_62264_P_0_PY3.13.0b3.log" is closed.
