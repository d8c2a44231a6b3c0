/* util.h: small helpers shared by the CLI commands: clocks, number parsing, the error buffer size. */
#ifndef FERRY_UTIL_H
#define FERRY_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ERR_LEN 512

double now_sec(void);
/* "4G", "512M", "1.5G", "123" -> bytes; -1 on a malformed value. */
int64_t parse_size(const char *s);
/* Strict integer / float parsing of a whole string; 0 or -EINVAL. */
int parse_int(const char *s, long lo, long hi, long *out);
int parse_double(const char *s, double *out);
/* "1,2,3" -> malloc'd array; -EINVAL with the bad item in err. */
int parse_id_list(const char *s, int **ids, int *n, char *err, size_t errlen);
/* Whether path names a regular file (following links). */
bool path_is_file(const char *path);
/* Reads a whole file ("-" = stdin) into a NUL-terminated malloc'd buffer; 0 or -errno. */
int read_file_all(const char *path, char **out, size_t *len);
/* All n bytes of buf to fd (retrying short writes and EINTR); 0 or -errno. */
int write_full(int fd, const void *buf, size_t n);
/* Peak resident set size of this process in bytes. */
uint64_t peak_rss_bytes(void);
/* Total physical memory in bytes. */
uint64_t phys_mem_bytes(void);
void fmt_bytes(uint64_t n, char *buf, size_t len);

#define FERRY_ASSERT(c)                                                                                   \
	do {                                                                                              \
		if (!(c))                                                                                 \
			ferry_assert_fail(#c, __FILE__, __LINE__);                                        \
	} while (0)
_Noreturn void ferry_assert_fail(const char *what, const char *file, int line);

#endif
