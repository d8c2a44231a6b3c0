/* cmd_convert.c: `ferry convert SRC -o OUT.ferry [--force] [--lz4]`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert.h"
#include "ferry.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: ferry convert HF_DIR [-o OUT.ferry] [--force] [--lz4]\n"
		   "  HF_DIR        Hugging Face model directory (config.json, *.safetensors, tokenizer files)\n"
		   "  -o OUT        output directory (default: HF_DIR.ferry); written as OUT.tmp, then renamed\n"
		   "  --force       replace OUT if it is an existing ferry model\n"
		   "  --lz4         store layer and head tensors as byte-shuffled lz4 chunks where that saves >= 10%%\n"
		   "                (less to read from disk; decoded by the streamer's worker threads)\n");
}

int ferry_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"output", required_argument, 0, 'o'}, {"force", no_argument, 0, 'f'}, {"lz4", no_argument, 0, 'z'},
		{"help", no_argument, 0, 'h'},        {0}};
	const char *out = NULL;
	bool force = false, lz4 = false;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'f': force = true; break;
		case 'z': lz4 = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *src = argv[optind];
	char def[4096];
	if (!out) {
		size_t n = strlen(src);
		while (n > 1 && src[n - 1] == '/')
			n--;
		snprintf(def, sizeof(def), "%.*s.ferry", (int)n, src);
		out = def;
	}
	struct stat st;
	if (stat(src, &st) || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "ferry: %s: not a model directory\n", src);
		return 1;
	}
	char err[ERR_LEN];
	double t0 = now_sec();
	int rc = convert_hf(src, out, force, lz4, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	fprintf(stderr, "ferry: wrote %s in %.2fs (peak RSS %.1f MiB)\n", out, now_sec() - t0,
		(double)peak_rss_bytes() / (1 << 20));
	return 0;
}
