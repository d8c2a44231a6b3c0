/*
 * opt_hint.h: what the commands say about an option getopt_long did not take: one line naming it, the
 * nearest known option when one is close (edit distance), and where the full usage is, instead of the
 * whole usage text. Commands set opterr = 0 and call this on '?'.
 */
#ifndef FERRY_OPT_HINT_H
#define FERRY_OPT_HINT_H

#include <getopt.h>

/* After getopt_long(argc, argv, shorts, lo, ...) returned '?' for command cmd: prints one line and
 * returns 2 (the usage-error exit code). */
int opt_hint(const char *cmd, char **argv, const char *shorts, const struct option *lo);

/* Levenshtein distance of a and b (exposed for tests). */
int opt_edit_distance(const char *a, const char *b);

#endif
