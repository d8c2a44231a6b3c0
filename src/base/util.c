/* util.c: clocks, strict parsing, memory figures. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/util.h"

double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t parse_size(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || v < 0 || !isfinite(v))
		return -1;
	double mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = 1024.0; end++; break;
	case 'm': case 'M': mul = 1024.0 * 1024; end++; break;
	case 'g': case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
	case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end == 'i' || *end == 'B')
		end += *end == 'i' && end[1] == 'B' ? 2 : 1;
	if (*end)
		return -1;
	return (int64_t)(v * mul);
}

int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_double(const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !isfinite(v))
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_id_list(const char *s, int **ids, int *n, char *err, size_t errlen)
{
	int cap = 16, k = 0;
	int *a = malloc(sizeof(int) * (size_t)cap);
	if (!a)
		return -ENOMEM;
	const char *p = s;
	while (*p) {
		char *end;
		errno = 0;
		long v = strtol(p, &end, 10);
		if (errno || end == p || v < 0 || v > 0x7fffffff || (*end && *end != ',')) {
			snprintf(err, errlen, "bad token id list '%s' at '%.16s'", s, p);
			free(a);
			return -EINVAL;
		}
		if (k == cap) {
			cap *= 2;
			int *na = realloc(a, sizeof(int) * (size_t)cap);
			if (!na) {
				free(a);
				return -ENOMEM;
			}
			a = na;
		}
		a[k++] = (int)v;
		p = *end ? end + 1 : end;
	}
	if (k == 0) {
		snprintf(err, errlen, "empty token id list");
		free(a);
		return -EINVAL;
	}
	*ids = a;
	*n = k;
	return 0;
}

uint64_t peak_rss_bytes(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)ru.ru_maxrss * 1024;
}

uint64_t phys_mem_bytes(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), pg = sysconf(_SC_PAGESIZE);
	return pages > 0 && pg > 0 ? (uint64_t)pages * (uint64_t)pg : 0;
}

void fmt_bytes(uint64_t n, char *buf, size_t len)
{
	const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int i = 0;
	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	snprintf(buf, len, i ? "%.2f %s" : "%.0f %s", v, u[i]);
}

void ferry_assert_fail(const char *what, const char *file, int line)
{
	fprintf(stderr, "ferry: internal error: assertion '%s' failed at %s:%d\n", what, file, line);
	abort();
}

bool path_is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int read_file_all(const char *path, char **out, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f)
		return -errno;
	size_t cap = 1 << 16, n = 0;
	char *buf = malloc(cap);
	int rc = buf ? 0 : -ENOMEM;
	while (!rc) {
		if (n + 1 >= cap) {
			char *b = realloc(buf, cap *= 2);
			if (!b) {
				rc = -ENOMEM;
				break;
			}
			buf = b;
		}
		size_t k = fread(buf + n, 1, cap - n - 1, f);
		n += k;
		if (k == 0) {
			rc = ferror(f) ? -EIO : 0;
			break;
		}
	}
	if (f != stdin)
		fclose(f);
	if (rc) {
		free(buf);
		return rc;
	}
	buf[n] = 0;
	*out = buf;
	*len = n;
	return 0;
}

int write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}
