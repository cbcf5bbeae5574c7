#!/usr/sbin/dtrace -s
/*
 * py_calls.d: Python function calls and their inclusive time, from CPython's `python` USDT
 * provider (macOS, illumos).
 *
 * Measures, for the target process: calls per Python function (file, name, first line) from
 * python$target:::function-entry, and inclusive wall time per function (file, name) from
 * entry/return pairs per thread (recursive calls add their time again).
 *
 * Needs a CPython built --with-dtrace (the provider is listed by `sudo dtrace -l -p PID -P
 * 'python*'`).
 *
 * Run (root):
 *   sudo dtrace -s dtrace/py_calls.d -p PID
 *   sudo dtrace -s dtrace/py_calls.d -c 'python3 script.py'
 * Stops at Ctrl-C or when the target exits, then prints the 20 most called functions and the
 * 20 with the most inclusive time (ns). Linux counterpart: py_calls.bt.
 */

#pragma D option quiet

python$target:::function-entry
{
	@calls[copyinstr(arg0), copyinstr(arg1), arg2] = count();
	self->depth++;
	self->start[self->depth] = timestamp;
}

python$target:::function-return
/self->depth > 0/
{
	@ns[copyinstr(arg0), copyinstr(arg1)] =
	    sum(self->start[self->depth] ? timestamp - self->start[self->depth] : 0);
	self->start[self->depth] = 0;
	self->depth--;
}

dtrace:::END
{
	trunc(@calls, 20);
	trunc(@ns, 20);
	printf("most called (file, function, line):\n");
	printa("%s %s:%d %@d\n", @calls);
	printf("\nmost inclusive time in ns (file, function):\n");
	printa("%s %s %@d\n", @ns);
}
