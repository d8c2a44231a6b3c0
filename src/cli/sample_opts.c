/*
 * sample_opts.c: the sampling options of `ferry run` and `ferry chat` (sample_opts.h).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/sample_opts.h"
#include "base/util.h"

void sample_opts_default(struct sample_opts *o)
{
	*o = (struct sample_opts){.sc = {.temp = 0, .top_k = 0, .top_p = 1, .min_p = 0, .rep_penalty = 1, .rep_last_n = 64}};
}

int sample_opts_parse(struct sample_opts *o, int c, const char *arg)
{
	struct sampler_cfg *sc = &o->sc;
	long v;
	double d;
	int bad;
	const char *name;
	switch (c) {
	case SAMPLE_OPT_TEMP: bad = parse_double(arg, &d) || d < 0; sc->temp = (float)d, o->temp_set = true, name = "--temp"; break;
	case SAMPLE_OPT_TOP_K: bad = parse_int(arg, 0, 1 << 30, &v); sc->top_k = (int)v, o->top_k_set = true, name = "--top-k"; break;
	case SAMPLE_OPT_TOP_P:
		bad = parse_double(arg, &d) || d <= 0 || d > 1;
		sc->top_p = (float)d, o->top_p_set = true, name = "--top-p";
		break;
	case SAMPLE_OPT_MIN_P: bad = parse_double(arg, &d) || d < 0 || d > 1; sc->min_p = (float)d; name = "--min-p"; break;
	case SAMPLE_OPT_REP:
		bad = parse_double(arg, &d) || d <= 0;
		sc->rep_penalty = (float)d, o->rep_set = true, name = "--repeat-penalty";
		break;
	case SAMPLE_OPT_REP_N: bad = parse_int(arg, 0, 1 << 30, &v); sc->rep_last_n = (int)v; name = "--repeat-last-n"; break;
	case SAMPLE_OPT_SEED: {
		char *end;
		errno = 0;
		sc->seed = strtoull(arg, &end, 10);
		bad = errno || *end || end == arg || *arg == '-';
		name = "--seed";
		break;
	}
	default: return 1;
	}
	if (bad) {
		fprintf(stderr, "ferry: %s: bad value '%s'\n", name, arg);
		return 2;
	}
	return 0;
}

void sample_opts_usage(FILE *f)
{
	fprintf(f, "  --temp T               temperature (alias --temperature), 0 = greedy (default: the model's\n"
		   "                         generation_config, else 0)\n"
		   "  --top-k K              keep the K most likely tokens (0 = off)\n"
		   "  --top-p P              keep the smallest set with probability mass >= P (1 = off)\n"
		   "  --min-p P              drop tokens below P x the top probability (0 = off)\n"
		   "  --repeat-penalty R     HF repetition penalty over the last --repeat-last-n tokens (1 = off)\n"
		   "  --repeat-last-n N      history the penalty looks at (default 64, 0 = all)\n"
		   "  --seed S               sampling seed (default 0)\n");
}

void sample_opts_model_defaults(struct sample_opts *o, const struct layout *lay)
{
	const json_t *g = json_object_get(lay->manifest, "generation");
	const json_t *rp = json_object_get(g, "repetition_penalty"); /* transformers applies it greedy or not */
	if (!o->rep_set && json_is_number(rp) && json_number_value(rp) > 0) {
		o->sc.rep_penalty = (float)json_number_value(rp);
		o->sc.rep_last_n = 0; /* over the whole sequence, as transformers does */
	}
	if (!json_is_true(json_object_get(g, "do_sample")))
		return;
	const json_t *t = json_object_get(g, "temperature"), *k = json_object_get(g, "top_k"),
		     *p = json_object_get(g, "top_p");
	if (!o->temp_set)
		o->sc.temp = json_is_number(t) ? (float)json_number_value(t) : 1.0f;
	if (!o->top_k_set)
		o->sc.top_k = json_is_integer(k) ? (int)json_integer_value(k) : 50;
	if (!o->top_p_set && json_is_number(p))
		o->sc.top_p = (float)json_number_value(p);
}
