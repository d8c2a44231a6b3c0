/* hf_config.h: Hugging Face config.json (+ generation_config.json) -> struct layout_hparams. */
#ifndef FERRY_HF_CONFIG_H
#define FERRY_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "layout/layout.h"

struct hf_arch {
	bool qkv_bias;  /* q/k/v projections carry biases */
	bool o_bias;    /* output projection carries a bias */
	bool mlp_bias;  /* gate/up/down carry biases */
	bool gemma;     /* Gemma 3: q/k norms, post norms, (1 + w) RMSNorm weights */
};

/* config: json_t* of config.json; gen: json_t* of generation_config.json or NULL. path names config.json
 * in messages. */
int hf_config_parse(const void *config, const void *gen, const char *path, struct layout_hparams *hp,
		    struct hf_arch *arch, char *err, size_t errlen);

#endif
