/*
 * fuzz_file.h: the fuzzers of file readers hand their input to the reader as a file: a memfd, named through
 * /proc/self/fd so that the reader opens it by path as it opens any file.
 */
#ifndef FERRY_TESTS_FUZZ_FILE_H
#define FERRY_TESTS_FUZZ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* The size bytes at data as a file: its descriptor (close it after use), its path into path[n]; -1 when the
 * memfd cannot be made or written (the input is then skipped). */
static int fuzz_file(const uint8_t *data, size_t size, const char *name, char *path, size_t n)
{
	int fd = memfd_create(name, 0);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	snprintf(path, n, "/proc/self/fd/%d", fd);
	return fd;
}

#endif
