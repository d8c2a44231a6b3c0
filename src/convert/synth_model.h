/*
 * synth_model.h: synthetic Llama-family models (and Qwen3-MoE-shaped mixtures of experts) written straight into the model.ferry format, so a model of
 * any shape (Llama 3 70B included) can be run and measured without its weights.
 *
 * Weights are random but valid and numerically tame: every matrix [out, K] dequantizes to values of about
 * 1/sqrt(K) RMS (zero-mean where the format allows it), so activations keep their scale through any number
 * of layers; norm weights lie in [0.9, 1.1]. The bytes depend only on the shape, the format and the seed:
 * not on the thread count nor on how the work is split.
 */
#ifndef FERRY_SYNTH_MODEL_H
#define FERRY_SYNTH_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Dimension letters: L layers, D model, F ffn, H heads, Hkv kv heads, Dh head dim, V vocab. */
struct synth_shape {
	int n_layers, d_model, ffn_dim, n_heads, n_kv_heads, head_dim, vocab, max_pos;
	double rope_theta, rms_eps;
	/* a mixture of experts (qwen3moe, weights renormalized over the chosen) when n_experts > 0: E experts of
	 * ffn width Fe, K per token; stored expert-major (layout_writer_experts) */
	int n_experts, n_experts_used, expert_ffn;
	/* gpt-oss (with experts): its tensors (biases, sinks), YaRN (factor 32 over 4096, theta from rope_theta),
	 * sliding windows of 128 on the even layers, the clamped SwiGLU */
	bool gptoss;
};

struct synth_opts {
	struct synth_shape shape;
	int fmt;       /* enum wfmt of every matrix (embedding and output projection included) */
	int expert_fmt; /* enum wfmt of the stacked experts' matrices; -1: fmt */
	uint64_t seed;
	int threads;   /* generator threads; 0 = all cores */
	bool force;    /* replace an existing model directory */
	double router_skew; /* router row e's RMS times (1 + e)^-router_skew: a skewed choice of experts (0: uniform) */
};

/* Named shapes: "llama3-70b", "llama3-8b", "qwen3-30b-a3b", "gpt-oss-120b", "gpt-oss-20b", "tiny", "tiny-moe",
 * "tiny-gpt-oss". 0, or -EINVAL for an unknown name. */
int synth_preset(const char *name, struct synth_shape *s);
/* The names of synth_preset, for usage text. */
extern const char *const synth_preset_names;
/* Checks the shape against the format (every K a multiple of its block, heads divisible, ranges); the
 * message names the command-line option at fault. 0 or -EINVAL. */
int synth_check(const struct synth_opts *o, char *err, size_t errlen);
/* Bytes the model will take on disk (all files but manifest.json). */
uint64_t synth_model_bytes(const struct synth_opts *o);
/* Writes the model to out_dir through layout's writer (OUT.tmp, renamed when complete). 0 or -errno. */
int synth_model_write(const struct synth_opts *o, const char *out_dir, char *err, size_t errlen);

#endif
