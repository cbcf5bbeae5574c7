#!/usr/sbin/dtrace -s
/*
 * py_malloc_free.d: every malloc and free of one Python process, one line a call, with the
 * Python file, line and function running at the time (macOS, illumos).
 *
 * Writes the per-call log that `python -m pymemtrace.util.dtrace_log_analyse LOG` reads (it
 * pairs each free with its malloc and reports what is still allocated, the peak, the counts):
 *
 *     PID FILE:LINE -> FUNCTION malloc(SIZE) pntr 0xADDRESS
 *     PID FILE:LINE -> FUNCTION free(0xADDRESS)
 *
 * calloc(n, size) is written as malloc(n * size); realloc(p, size) as free(p) (when p is not
 * NULL and the block moved or was freed) then malloc(size) of the pointer it returned, so
 * pairs still match; a malloc or free that realloc makes inside itself is not written twice.
 * Lines starting with `#` are comments the analyser skips.
 *
 * The Python site comes from the `python` USDT provider (`function-entry`/`function-return`
 * keep a per-thread stack of functions, `line` moves the line): a CPython built --with-dtrace.
 * Calls made before the first probe of a thread, or by a thread not running Python, have no
 * site (` :0 -> `; the analyser reads the call and leaves the site unknown). Where the line
 * probe does not fire (3.12+), the line is the function's first line.
 *
 * Run (root; on macOS with SIP allowing dtrace for the target):
 *   sudo dtrace -q -s dtrace/py_malloc_free.d -p PID > LOG
 *   sudo dtrace -q -s dtrace/py_malloc_free.d -c 'python3 script.py' > LOG
 *   python -m pymemtrace.util.dtrace_log_analyse LOG
 * Stops at Ctrl-C or when the target exits.
 *
 * Linux counterpart: py_malloc_free.bt (the same lines; it is tested here against a real
 * CPython, this script cannot be run on Linux and is kept equivalent by hand).
 */

#pragma D option quiet

dtrace:::BEGIN
{
	printf("# malloc and free calls of %d with their Python sites; Ctrl-C to stop\n", $target);
}

python$target:::function-entry
{
	self->depth++;
	file[tid, self->depth] = copyinstr(arg0);
	func[tid, self->depth] = copyinstr(arg1);
	line[tid, self->depth] = arg2;
}

python$target:::function-return
/self->depth > 0/
{
	file[tid, self->depth] = 0;
	func[tid, self->depth] = 0;
	line[tid, self->depth] = 0;
	self->depth--;
}

python$target:::line
{
	file[tid, self->depth] = copyinstr(arg0);
	func[tid, self->depth] = copyinstr(arg1);
	line[tid, self->depth] = arg2;
}

pid$target::malloc:entry
/!self->in_realloc/
{
	self->size = arg0;
	self->in_malloc = 1;
}

pid$target::calloc:entry
/!self->in_realloc/
{
	self->size = arg0 * arg1;
	self->in_malloc = 1;
}

pid$target::malloc:return,
pid$target::calloc:return
/self->in_malloc/
{
	printf("%d %s:%d -> %s malloc(%d) pntr 0x%x\n", pid, file[tid, self->depth],
	    line[tid, self->depth], func[tid, self->depth], self->size, arg1);
	self->in_malloc = 0;
	self->size = 0;
}

pid$target::realloc:entry
{
	self->in_realloc = 1;
	self->old = arg0;
	self->size = arg1;
}

/* A failed realloc (NULL for a size > 0) leaves the old block allocated. */
pid$target::realloc:return
/self->in_realloc && self->old != 0 && (arg1 != 0 || self->size == 0)/
{
	printf("%d %s:%d -> %s free(0x%x)\n", pid, file[tid, self->depth],
	    line[tid, self->depth], func[tid, self->depth], self->old);
}

pid$target::realloc:return
/self->in_realloc && arg1 != 0/
{
	printf("%d %s:%d -> %s malloc(%d) pntr 0x%x\n", pid, file[tid, self->depth],
	    line[tid, self->depth], func[tid, self->depth], self->size, arg1);
}

pid$target::realloc:return
/self->in_realloc/
{
	self->in_realloc = 0;
	self->old = 0;
	self->size = 0;
}

pid$target::free:entry
/!self->in_realloc/
{
	printf("%d %s:%d -> %s free(0x%x)\n", pid, file[tid, self->depth],
	    line[tid, self->depth], func[tid, self->depth], arg0);
}

dtrace:::END
{
	printf("# end of trace\n");
}
