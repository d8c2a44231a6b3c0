/*
 * model_home.c: -m MODEL as a directory, a GGUF file converted once into the model home, or a name there
 * (model_home.h).
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/model_home.h"
#include "convert/convert.h"
#include "base/util.h"

int model_home_dir(char *buf, size_t len)
{
	const char *fh = getenv("FERRY_HOME"), *home = getenv("HOME");
	int n;
	if (fh && *fh)
		n = snprintf(buf, len, "%s", fh);
	else if (home && *home)
		n = snprintf(buf, len, "%s/.cache/ferry", home);
	else
		return -ENOENT;
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* mkdir -p of dir. 0 or -errno. */
static int mkdirs(const char *dir)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof(p), "%s", dir) >= (int)sizeof(p))
		return -ENAMETOOLONG;
	for (char *s = p + 1;; s++) {
		if (*s == '/' || !*s) {
			char c = *s;
			*s = 0;
			if (mkdir(p, 0755) && errno != EEXIST)
				return -errno;
			*s = c;
			if (!c)
				return 0;
		}
	}
}

int model_home_make(char *buf, size_t len)
{
	int rc = model_home_dir(buf, len);
	return rc ? rc : mkdirs(buf);
}

static bool is_model_dir(const char *dir)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/manifest.json", dir);
	return path_is_file(p);
}

/* The stamp of the GGUF file at real path src: its path, size and mtime. */
static json_t *stamp_of(const char *src, const struct stat *st)
{
	return json_pack("{s:s, s:I, s:I}", "file", src, "size", (json_int_t)st->st_size, "mtime_ns",
			 (json_int_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
}

static bool stamp_matches(const char *stamp_path, const json_t *want)
{
	json_t *have = json_load_file(stamp_path, 0, NULL);
	bool same = have && json_equal(have, want);
	json_decref(have);
	return same;
}

/* A GGUF file: its converted copy in the model home, made when missing or stale. */
static int resolve_gguf(const char *arg, const struct stat *st, char *path, size_t len)
{
	char home[PATH_MAX], real[PATH_MAX], stamp[PATH_MAX + 32], tmp[PATH_MAX + 48], err[ERR_LEN];
	if (!realpath(arg, real)) {
		fprintf(stderr, "ferry: %s: %s\n", arg, strerror(errno));
		return 1;
	}
	int rc = model_home_dir(home, sizeof(home));
	if (rc) {
		fprintf(stderr, "ferry: %s: no model home to convert it into (set FERRY_HOME or HOME)\n", arg);
		return 1;
	}
	const char *base = strrchr(real, '/') ? strrchr(real, '/') + 1 : real;
	int n = (int)strlen(base) - 5; /* without .gguf */
	if (snprintf(path, len, "%s/%.*s.ferry", home, n, base) >= (int)len ||
	    snprintf(stamp, sizeof(stamp), "%s/%.*s.source.json", home, n, base) >= (int)sizeof(stamp)) {
		fprintf(stderr, "ferry: %s: path too long\n", home);
		return 1;
	}
	json_t *want = stamp_of(real, st);
	if (!want) {
		fprintf(stderr, "ferry: %s: the path is not valid UTF-8\n", arg);
		return 1;
	}
	if (is_model_dir(path) && stamp_matches(stamp, want)) {
		json_decref(want);
		return 0;
	}
	if ((rc = model_home_make(home, sizeof(home)))) {
		fprintf(stderr, "ferry: %s: %s\n", home, strerror(-rc));
		json_decref(want);
		return 1;
	}
	fprintf(stderr, "ferry: converting %s into %s (once; reused while the file is unchanged)\n", arg, path);
	unlink(stamp);
	rc = convert_gguf(real, path, true, false, NULL, NULL, NULL, err, sizeof(err));
	snprintf(tmp, sizeof(tmp), "%s.tmp", stamp);
	if (!rc && (json_dump_file(want, tmp, JSON_INDENT(1)) || rename(tmp, stamp))) {
		snprintf(err, sizeof(err), "%.400s: %s", stamp, strerror(errno));
		unlink(tmp);
		rc = -EIO;
	}
	json_decref(want);
	if (rc) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	return 0;
}

int model_home_resolve(const char *arg, char *path, size_t len)
{
	struct stat st;
	size_t n = strlen(arg);
	if (!stat(arg, &st)) {
		if (S_ISREG(st.st_mode) && n > 5 && !strcmp(arg + n - 5, ".gguf"))
			return resolve_gguf(arg, &st, path, len);
		if (snprintf(path, len, "%s", arg) >= (int)len) {
			fprintf(stderr, "ferry: %s: path too long\n", arg);
			return 1;
		}
		return 0; /* a directory (or anything else: layout_open names what is wrong with it) */
	}
	char home[PATH_MAX];
	if (!strchr(arg, '/') && !model_home_dir(home, sizeof(home))) {
		bool has_ext = n > 6 && !strcmp(arg + n - 6, ".ferry");
		if (snprintf(path, len, "%s/%s%s", home, arg, has_ext ? "" : ".ferry") < (int)len && is_model_dir(path))
			return 0;
		fprintf(stderr, "ferry: %s: no such file or directory, nor a model of that name in %s (ferry list shows them)\n",
			arg, home);
		return 1;
	}
	fprintf(stderr, "ferry: %s: no such file or directory\n", arg);
	return 1;
}
