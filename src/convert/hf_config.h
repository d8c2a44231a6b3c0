/* hf_config.h: Hugging Face config.json (+ generation_config.json) -> struct layout_hparams. */
#ifndef FERRY_HF_CONFIG_H
#define FERRY_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "layout/arch.h"
#include "layout/layout.h"

/* config: json_t* of config.json; gen: json_t* of generation_config.json or NULL. path names config.json
 * in messages. *arch: the row of layout/arch.h for config.json's architectures[0]. */
int hf_config_parse(const void *config, const void *gen, const char *path, struct layout_hparams *hp,
		    const struct arch **arch, char *err, size_t errlen);

#endif
