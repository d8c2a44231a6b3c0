/* pinned.c: page-locked host buffers (pinned.h). */
#include <sys/mman.h>

#include "io/pinned.h"

void *pinned_alloc(const struct io_host_alloc *a, size_t bytes, bool *locked)
{
	if (a) {
		*locked = true;
		return a->alloc(bytes, a->ctx);
	}
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	*locked = mlock(p, bytes) == 0;
	return p;
}

void pinned_free(const struct io_host_alloc *a, void *p, size_t bytes)
{
	if (!p)
		return;
	if (a)
		a->free(p, bytes, a->ctx);
	else
		munmap(p, bytes);
}
