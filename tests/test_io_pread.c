/* test_io_pread.c: the layer streamer's suite (io_suite.h) on the pread thread-pool engine, which every
 * machine has. */
#define SUITE_ENGINE IO_ENGINE_PREAD
#include "io_suite.h"

int main(void)
{
	return suite_main();
}
