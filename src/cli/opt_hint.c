/*
 * opt_hint.c: one line for a bad option, with a did-you-mean (opt_hint.h).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/opt_hint.h"

int opt_edit_distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	int *row = malloc(sizeof(int) * (m + 1));
	if (!row)
		return 1 << 20;
	for (size_t j = 0; j <= m; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= n; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= m; j++) {
			int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			best = up + 1 < best ? up + 1 : best;
			best = row[j - 1] + 1 < best ? row[j - 1] + 1 : best;
			diag = up;
			row[j] = best;
		}
	}
	int d = row[m];
	free(row);
	return d;
}

/* The long option of lo nearest to name (without its dashes), when it is near enough to be a typo or a
 * prefix of it; NULL otherwise. */
static const char *nearest(const char *name, const struct option *lo)
{
	const char *best = NULL;
	int bd = 1 << 20;
	size_t n = strlen(name);
	for (const struct option *o = lo; o->name; o++) {
		int d = opt_edit_distance(name, o->name);
		if (n >= 3 && !strncmp(o->name, name, n))
			d = 1; /* a prefix getopt found ambiguous or a truncated name */
		if (d < bd)
			bd = d, best = o->name;
	}
	size_t limit = n <= 4 ? 1 : n <= 8 ? 2 : 3;
	return best && (size_t)bd <= limit ? best : NULL;
}

int opt_hint(const char *cmd, char **argv, const char *shorts, const struct option *lo)
{
	char name[128];
	const char *arg = argv[optind - 1];
	if (strncmp(arg, "--", 2)) { /* a short option not known, or without its value */
		const char *s = optopt ? strchr(shorts, optopt) : NULL;
		if (s && s[1] == ':')
			fprintf(stderr, "ferry %s: -%c needs a value; see `ferry %s --help`\n", cmd, optopt, cmd);
		else
			fprintf(stderr, "ferry %s: unknown option '-%c'; see `ferry %s --help`\n", cmd, optopt ? optopt : '?', cmd);
		return 2;
	}
	snprintf(name, sizeof(name), "%s", arg + 2);
	bool has_value = name[strcspn(name, "=")] == '=';
	name[strcspn(name, "=")] = 0;
	const struct option *exact = NULL;
	for (const struct option *o = lo; o->name && !exact; o++)
		if (!strcmp(o->name, name))
			exact = o;
	if (exact) {
		fprintf(stderr, "ferry %s: --%s %s; see `ferry %s --help`\n", cmd, name,
			has_value && exact->has_arg == no_argument ? "takes no value" : "needs a value", cmd);
		return 2;
	}
	const char *near = nearest(name, lo);
	if (near)
		fprintf(stderr, "ferry %s: unknown option '--%s' (did you mean --%s?); see `ferry %s --help`\n", cmd, name,
			near, cmd);
	else
		fprintf(stderr, "ferry %s: unknown option '--%s'; see `ferry %s --help`\n", cmd, name, cmd);
	return 2;
}
