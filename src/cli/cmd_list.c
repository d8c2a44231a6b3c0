/*
 * cmd_list.c: `ferry list`: the models of the model home (src/cli/model_home.h), one line each: the name
 * `-m NAME` takes, the size on disk, the weight formats (largest share of the layers' bytes first), and
 * the file it was converted from.
 */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/ferry.h"
#include "cli/model_home.h"
#include "base/util.h"

/* Bytes of the files directly in dir. */
static uint64_t dir_bytes(const char *dir)
{
	uint64_t n = 0;
	DIR *d = opendir(dir);
	struct dirent *de;
	char p[PATH_MAX + 256];
	struct stat st;
	while (d && (de = readdir(d)))
		if (snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) < (int)sizeof(p) && !stat(p, &st) && S_ISREG(st.st_mode))
			n += (uint64_t)st.st_size;
	if (d)
		closedir(d);
	return n;
}

/* "Q4_K 80%, Q6_K 19%": the three weight formats with most of the layers' bytes, by their share. */
static void formats_of(const json_t *manifest, char *out, size_t len)
{
	json_t *by = json_object(), *layers = json_object_get(json_object_get(manifest, "units"), "layers"), *l, *t, *v;
	size_t i, j;
	const char *k;
	double total = 0;
	json_array_foreach(layers, i, l) json_array_foreach(l, j, t)
	{
		const char *f = json_string_value(json_object_get(t, "format"));
		double b = json_number_value(json_object_get(t, "bytes"));
		if (f) {
			json_object_set_new(by, f, json_real(json_number_value(json_object_get(by, f)) + b));
			total += b;
		}
	}
	out[0] = 0;
	for (size_t used = 0, k_n = 0; json_object_size(by) && used < len && k_n < 3; k_n++) {
		const char *best = NULL;
		double bb = -1;
		json_object_foreach(by, k, v) if (json_number_value(v) > bb) bb = json_number_value(v), best = k;
		if (total > 0 && 100 * bb / total < 0.5)
			break;
		used += (size_t)snprintf(out + used, len - used, "%s%s %.0f%%", used ? ", " : "", best,
					 total > 0 ? 100 * bb / total : 0);
		json_object_del(by, best);
	}
	json_decref(by);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int ferry_list(int argc, char **argv)
{
	if (argc > 1) {
		int help = !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h");
		fprintf(help ? stdout : stderr, "usage: ferry list\n  the converted models of $FERRY_HOME (default ~/.cache/ferry), "
						"which -m NAME finds\n");
		return help ? 0 : 2;
	}
	char home[PATH_MAX];
	if (model_home_dir(home, sizeof(home))) {
		fprintf(stderr, "ferry: no model home (set FERRY_HOME or HOME)\n");
		return 1;
	}
	DIR *d = opendir(home);
	if (!d && errno != ENOENT) {
		fprintf(stderr, "ferry: %s: %s\n", home, strerror(errno));
		return 1;
	}
	struct dirent *de;
	char **names = NULL;
	int n = 0;
	while (d && (de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l > 6 && !strcmp(de->d_name + l - 6, ".ferry")) {
			char **nn = realloc(names, sizeof(*nn) * (size_t)(n + 1));
			if (!nn || !(nn[n] = strndup(de->d_name, l - 6))) {
				fprintf(stderr, "ferry: out of memory\n");
				free(nn ? nn : names);
				closedir(d);
				return 1;
			}
			names = nn, n++;
		}
	}
	if (d)
		closedir(d);
	if (n)
		qsort(names, (size_t)n, sizeof(*names), name_cmp);
	printf("%s: %d model%s\n", home, n, n == 1 ? "" : "s");
	if (n)
		printf("%-40s %10s  %-28s  %s\n", "NAME", "SIZE", "FORMAT", "FROM");
	for (int i = 0; i < n; i++) {
		char dir[PATH_MAX + 16], p[PATH_MAX + 32], size[32], fmt[128] = "?";
		snprintf(dir, sizeof(dir), "%s/%s.ferry", home, names[i]);
		snprintf(p, sizeof(p), "%s/manifest.json", dir);
		json_t *m = json_load_file(p, 0, NULL);
		snprintf(p, sizeof(p), "%s/%s.source.json", home, names[i]);
		json_t *src = json_load_file(p, 0, NULL);
		if (m)
			formats_of(m, fmt, sizeof(fmt));
		fmt_bytes(dir_bytes(dir), size, sizeof(size));
		const char *from = json_string_value(json_object_get(src, "file"));
		printf("%-40s %10s  %-28s  %s\n", names[i], size, m ? fmt : "(no manifest)", from ? from : "-");
		json_decref(m);
		json_decref(src);
		free(names[i]);
	}
	free(names);
	return 0;
}
