/* cmd_convert.c: `ferry convert (HF_DIR | MODEL.gguf) [-o OUT.ferry] [--force] [--lz4] [--quant MIX
 * [--imatrix FILE]] [--chat-template FILE]`. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/convert.h"
#include "convert/quantize.h"
#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "base/util.h"

static void usage(FILE *f)
{
	char mixes[512];
	fprintf(f, "usage: ferry convert (HF_DIR | MODEL.gguf) [-o OUT.ferry] [--force] [--lz4] [--quant MIX\n"
		   "                     [--imatrix FILE]] [--chat-template FILE]\n"
		   "  HF_DIR        Hugging Face model directory (config.json, *.safetensors, tokenizer files)\n"
		   "  MODEL.gguf    GGUF file (or the first file of a split set, NAME-00001-of-0000N.gguf); quantized\n"
		   "                blocks are kept as they are\n"
		   "  -o OUT        output directory (default: SRC without .gguf, + .ferry); written as OUT.tmp, then renamed\n"
		   "  --chat-template FILE  use this Jinja chat template (GGUF input)\n"
		   "  --force       replace OUT if it is an existing ferry model\n"
		   "  --lz4         store layer and head tensors as byte-shuffled lz4 chunks where that saves >= 10%%\n"
		   "                (less to read from disk; decoded by the streamer's worker threads)\n"
		   "  --quant MIX   quantize the F32/F16/BF16 matrices (vectors stay; a GGUF's quantized ones are\n"
		   "                kept): %s (llama.cpp's mixes by name, or one format for every matrix)\n"
		   "  --imatrix FILE  weight each matrix's quantization error by an importance matrix (ferry imatrix;\n"
		   "                llama-imatrix's GGUF and .dat files are read too)\n",
		quant_mix_list(mixes, sizeof(mixes)));
}

int ferry_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"output", required_argument, 0, 'o'}, {"force", no_argument, 0, 'f'}, {"lz4", no_argument, 0, 'z'},
		{"chat-template", required_argument, 0, 't'}, {"quant", required_argument, 0, 'q'},
		{"imatrix", required_argument, 0, 'i'}, {"help", no_argument, 0, 'h'}, {0}};
	const char *out = NULL, *tmpl = NULL, *quant = NULL, *imatrix = NULL;
	bool force = false, lz4 = false;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:fh", longopts, NULL)) != -1) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'f': force = true; break;
		case 'z': lz4 = true; break;
		case 't': tmpl = optarg; break;
		case 'q': quant = optarg; break;
		case 'i': imatrix = optarg; break;
		case 'h': usage(stdout); return 0;
		default: return opt_hint("convert", argv, "o:fh", longopts);
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	const char *src = argv[optind];
	size_t srclen = strlen(src);
	bool is_gguf = srclen > 5 && !strcmp(src + srclen - 5, ".gguf");
	char def[4096];
	if (!out) {
		size_t n = strlen(src);
		while (n > 1 && src[n - 1] == '/')
			n--;
		if (is_gguf)
			n -= 5;
		snprintf(def, sizeof(def), "%.*s.ferry", (int)n, src);
		out = def;
	}
	struct stat st;
	if (stat(src, &st)) {
		fprintf(stderr, "ferry: %s: no such file or directory\n", src);
		return 1;
	}
	if (!S_ISDIR(st.st_mode) && !is_gguf) {
		fprintf(stderr, "ferry: %s: not a model directory or a .gguf file\n", src);
		return 1;
	}
	char err[ERR_LEN];
	const struct quant_mix *mix;
	if (quant && quant_mix_open(quant, imatrix != NULL, &mix, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 2;
	}
	if (imatrix && !quant) {
		fprintf(stderr, "ferry: --imatrix weights a quantization: it needs --quant MIX\n");
		return 2;
	}
	if (tmpl && !is_gguf) {
		fprintf(stderr, "ferry: --chat-template applies to GGUF input (HF directories carry their own)\n");
		return 2;
	}
	double t0 = now_sec();
	int rc = is_gguf ? convert_gguf(src, out, force, lz4, tmpl, quant, imatrix, err, sizeof(err))
			 : convert_hf(src, out, force, lz4, quant, imatrix, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	fprintf(stderr, "ferry: wrote %s in %.2fs (peak RSS %.1f MiB)\n", out, now_sec() - t0,
		(double)peak_rss_bytes() / (1 << 20));
	return 0;
}
