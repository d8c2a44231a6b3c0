/* test_io_uring.c: the layer streamer's suite (io_suite.h) on the io_uring reader; skipped (77) where the
 * kernel or a sandbox refuses io_uring. */
#include <liburing.h>

#define SUITE_READER IO_READER_URING
#include "io_suite.h"

int main(void)
{
	struct io_uring ring;
	int rc = io_uring_queue_init(4, &ring, 0);
	if (rc < 0) {
		printf("io_uring unavailable here (%s)\n", strerror(-rc));
		return 77;
	}
	io_uring_queue_exit(&ring);
	return suite_main();
}
