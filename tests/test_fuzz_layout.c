/* test_fuzz_layout.c: the binary file header parser and the manifest's hparams parser on arbitrary bytes:
 * an error or a consistent result (entries inside the file, sane dimensions); never a crash. */
#include <jansson.h>

#include "layout/layout.h"
#include "layout/layout_internal.h"

static int fuzz_one(const uint8_t *data, size_t size)
{
	char err[512];
	/* the first byte picks the target: header or hparams JSON */
	if (size == 0)
		return 0;
	if (data[0] & 1) {
		uint8_t buf[LAYOUT_HEADER_BYTES] = {0};
		memcpy(buf, data + 1, size - 1 < sizeof(buf) ? size - 1 : sizeof(buf));
		/* make the checksum right half of the time so the fields behind it get exercised */
		if (data[0] & 2)
			for (int i = 0; i < 8; i++)
				buf[40 + i] = (uint8_t)(layout_header_hash(buf) >> (8 * i));
		struct layout_file_header h;
		if (layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) == 0)
			for (int i = 0; i < h.n_tensors; i++)
				if (h.tensors[i].offset + h.tensors[i].bytes > h.file_bytes)
					abort();
	} else {
		json_t *j = json_loadb((const char *)data + 1, size - 1, 0, NULL);
		struct layout_hparams hp;
		if (j && layout_hparams_from_json(&hp, j, err, sizeof(err)) == 0) {
			if (hp.n_layers < 1 || hp.n_heads % hp.n_kv_heads)
				abort();
			layout_hparams_free(&hp);
		}
		json_decref(j);
	}
	return 0;
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	uint8_t buf[1 + LAYOUT_HEADER_BYTES];
	struct layout_file_header h = {.file_bytes = 3 * 4096, .kind = LAYOUT_KIND_LAYER, .layer = 0, .n_tensors = 2};
	h.tensors[0] = (struct layout_tensor){.name = "attn_norm.weight", .fmt = WFMT_F32, .ndim = 1, .shape = {8},
					      .offset = 4096, .bytes = 32, .raw_bytes = 32, .xxh3 = 1};
	h.tensors[1] = (struct layout_tensor){.name = "attn_q.weight", .fmt = WFMT_BF16, .ndim = 2, .shape = {8, 8},
					      .offset = 8192, .bytes = 128, .raw_bytes = 128, .xxh3 = 2};
	buf[0] = 3;
	layout_header_build(buf + 1, &h);
	add(buf, sizeof(buf));
	const char *hp = "\x00{\"arch\":\"llama\",\"n_layers\":2,\"d_model\":8,\"n_heads\":2,\"n_kv_heads\":1,\"head_dim\":4,"
			 "\"ffn_dim\":16,\"vocab\":10,\"max_pos\":64,\"rms_eps\":1e-5,\"rope\":{\"type\":\"yarn\",\"style\":"
			 "\"neox\",\"theta\":10000,\"dim\":4,\"factor\":4,\"original_max_pos\":16,\"low_freq_factor\":0,"
			 "\"high_freq_factor\":0,\"beta_fast\":32,\"beta_slow\":1,\"attention_factor\":0,\"mscale\":0,"
			 "\"mscale_all_dim\":0,\"truncate\":true},\"tied_embeddings\":true,\"sliding_window\":[0,4],"
			 "\"bos_token_id\":1,\"eos_token_ids\":[2]}";
	add((const uint8_t *)hp, 1 + strlen(hp + 1));
}

#include "fuzz_driver.h"
