/* test_io_pread.c: the layer streamer's suite (io_suite.h) on the pread thread-pool reader, which every
 * machine has. */
#define SUITE_READER IO_READER_PREAD
#include "io_suite.h"

int main(void)
{
	return suite_main();
}
