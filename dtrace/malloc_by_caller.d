#!/usr/sbin/dtrace -s
/*
 * malloc_by_caller.d: allocation calls and bytes of one process, by caller (macOS, illumos).
 *
 * Measures, for the target process: bytes and calls of malloc, calloc and realloc by the
 * calling user stack (innermost 6 frames), a power-of-two distribution of request sizes,
 * process totals, and the number of free() calls with a non-NULL pointer. realloc counts as a
 * request of its new size; calloc as n * size.
 *
 * Run (root; on macOS with SIP allowing dtrace for the target):
 *   sudo dtrace -s dtrace/malloc_by_caller.d -p PID
 *   sudo dtrace -s dtrace/malloc_by_caller.d -c 'python3 script.py'
 * Stops at Ctrl-C or when the target exits, then prints the totals, the size distribution and
 * the 10 callers that requested the most bytes.
 *
 * The probes match malloc/calloc/realloc/free in every module of the target that defines them
 * (libsystem_malloc.dylib on macOS, libc.so.1 on illumos). Linux counterpart:
 * malloc_by_caller.bt.
 */

#pragma D option quiet

pid$target::malloc:entry
{
	@bytes[ustack(6)] = sum(arg0);
	@size = quantize(arg0);
	@total_calls = count();
	@total_bytes = sum(arg0);
}

pid$target::calloc:entry
{
	@bytes[ustack(6)] = sum(arg0 * arg1);
	@size = quantize(arg0 * arg1);
	@total_calls = count();
	@total_bytes = sum(arg0 * arg1);
}

pid$target::realloc:entry
{
	@bytes[ustack(6)] = sum(arg1);
	@size = quantize(arg1);
	@total_calls = count();
	@total_bytes = sum(arg1);
}

pid$target::free:entry
/arg0 != 0/
{
	@frees = count();
}

dtrace:::END
{
	printa("total_calls: %@d\n", @total_calls);
	printa("total_bytes: %@d\n", @total_bytes);
	printa("frees: %@d\n", @frees);
	printf("\nrequest sizes (bytes):\n");
	printa(@size);
	trunc(@bytes, 10);
	printf("\ntop callers by bytes requested:\n");
	printa(@bytes);
}
