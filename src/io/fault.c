/* fault.c: the test hook of fault.h (an atomic function pointer and its context). */
#include <stdatomic.h>
#include <stddef.h>

#include "io/fault.h"

static _Atomic(io_fault_fn) hook;
static void *_Atomic hook_ctx;

void io_fault_set(io_fault_fn fn, void *ctx)
{
	atomic_store(&hook_ctx, ctx);
	atomic_store(&hook, fn);
}

void io_fault_apply(const struct io_fault_read *r, int *res)
{
	io_fault_fn fn = atomic_load(&hook);
	if (fn)
		fn(r, res, atomic_load(&hook_ctx));
}
