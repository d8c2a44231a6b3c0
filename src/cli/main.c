/* main.c: ferry's entry point: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "base/threads.h"
#include "cli/ferry.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} commands[] = {
	{"convert", ferry_convert, "convert a Hugging Face model directory or a GGUF file into a model.ferry directory"},
	{"chat", ferry_chat, "chat with a model in the terminal (its chat template, streamed replies, history)"},
	{"run", ferry_run, "generate tokens from a model (a model.ferry, a .gguf file, or a name from ferry list)"},
	{"batch", ferry_batch, "generate for every request of a JSONL file together, resumably"},
	{"serve", ferry_serve, "an OpenAI-compatible HTTP server (chat, completions, streaming) over continuous batching"},
	{"list", ferry_list, "the models converted into $FERRY_HOME (default ~/.cache/ferry) with size and format"},
	{"ppl", ferry_ppl, "perplexity of a model over a text file (llama.cpp's convention)"},
	{"kld", ferry_kld, "KL divergence and same-top-token share of a (quantized) model against its source's logits"},
	{"imatrix", ferry_imatrix, "the importance matrix of a model over a text, for convert --quant --imatrix"},
	{"inspect", ferry_inspect, "print a model's architecture, layers and formats; --verify checksums"},
	{"tokenize", ferry_tokenize, "print the token ids of a text"},
	{"detokenize", ferry_detokenize, "print the text of token ids"},
	{"synth", ferry_synth, "write a Llama-shaped model with random weights (any size, e.g. llama3-70b) for measurements"},
	{"template", ferry_template, "render a chat template (Jinja) with messages, as transformers does"},
};

static void usage(FILE *f)
{
	fprintf(f, "ferry %s: run large language models on GPUs smaller than the model\n\nusage: ferry COMMAND [options]\n\n",
		FERRY_VERSION);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'ferry COMMAND --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
	/* The commands that compute on OpenMP threads; the others do not pay for executing again (~10 ms). */
	static const char *const parallel[] = {"run", "chat", "batch", "serve", "ppl", "kld", "imatrix", "synth"};
	for (size_t i = 0; argc > 1 && i < sizeof(parallel) / sizeof(parallel[0]); i++)
		if (!strcmp(argv[1], parallel[i]))
			threads_wait_policy(argv);
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("ferry %s\n", FERRY_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "ferry: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
