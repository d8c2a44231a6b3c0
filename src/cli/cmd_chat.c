/*
 * cmd_chat.c: `ferry chat -m MODEL`: a multi-turn conversation in the terminal. Every turn renders the
 * whole conversation with the model's chat template (src/text/chat.h) and tokenizes it; the one sequence
 * kept open between turns already holds the KV of the tokens of the turns before (the prompt and the reply
 * as generated), so only the tokens after the longest common prefix are stepped. When the rendering no
 * longer starts with what the sequence holds (a /system or /reset, /load, a reply the template re-renders
 * differently), the sequence is closed and a new one opened on the new tokens, which maps whatever whole
 * pages the prefix cache still has (src/engine/kvcache.h). Either way the model sees the same tokens as a
 * fresh prefill of the rendered conversation.
 *
 * Replies stream as they are generated; Ctrl-C stops the reply (the text so far stays in the conversation),
 * a second Ctrl-C at the prompt or Ctrl-D ends the program. On a terminal the prompt is libedit's
 * readline (line editing, history kept in the model home's chat_history); otherwise stdin is read a line
 * at a time, each line a message or a command, which is how the tests drive it.
 *
 * Ctrl-C reaches only the main thread: SIGINT is blocked while the engine starts its threads (the
 * streamer's and OpenMP's inherit the mask), and the handler only sets a flag that the turn checks
 * between steps.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <editline/readline.h>

#include "cli/ferry.h"
#include "cli/model_home.h"
#include "cli/opt_hint.h"
#include "cli/run_opts.h"
#include "cli/sample_opts.h"
#include "engine/engine.h"
#include "text/chat.h"
#include "text/tokenizer.h"
#include "base/util.h"

#define CHAT_CTX_DEFAULT 4096 /* positions of the conversation unless --ctx (at most the model's) */
#define CHAT_CHUNK_DEFAULT 512

struct chat_args {
	const char *model, *system;
	int n_predict, ctx, chunk;
	bool ignore_eos;
	struct sample_opts so;
	struct run_opts ro;
};

/* The conversation and the sequence that holds its KV. */
struct chat {
	const struct chat_args *a;
	struct engine *e;
	struct model *m;
	struct tokenizer *tk;
	struct jinja_tmpl *tmpl;
	json_t *msgs;           /* [{role, content}], the system turn first when there is one */
	int *kv;                /* [ctx] the tokens whose KV the sequence holds */
	int n_kv, seq, ctx;     /* seq -1: none open */
	int *eos, n_eos;
	float *logits;          /* [V] of the last token stepped */
	struct sampler smp;
	/* totals for /stats */
	int turns;
	long long prefill_tok, reused_tok, decode_tok;
	double prefill_s, decode_s;
};

static volatile sig_atomic_t chat_interrupts; /* Ctrl-C presses not yet handled */

static void on_sigint(int sig)
{
	(void)sig;
	chat_interrupts++;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry chat -m MODEL [options]\n"
		"A conversation with the model in its chat template; replies stream as they are generated.\n"
		"Commands: /system TEXT, /reset, /save FILE, /load FILE, /stats, /help, /exit. Ctrl-C stops a reply;\n"
		"Ctrl-C at the prompt twice, or Ctrl-D, exits. Without a terminal, each line of stdin is a message.\n"
		"  -m, --model MODEL      a model.ferry directory, a .gguf file (converted once into $FERRY_HOME), or a\n"
		"                         name from ferry list\n"
		"  --system TEXT          a system turn first\n"
		"  -n, --n-predict N      most tokens per reply (default -1: until the end of sequence or --ctx)\n"
		"  --ctx N                positions of the whole conversation (default: the model's, at most %d)\n"
		"  --chunk C              at most C prompt tokens per pass over the layers (default %d)\n"
		"  --ignore-eos           do not stop a reply at the end-of-sequence token\n",
		CHAT_CTX_DEFAULT, CHAT_CHUNK_DEFAULT);
	sample_opts_usage(f);
	run_opts_usage(f);
}

static int parse_args(int argc, char **argv, struct chat_args *a)
{
	enum { O_SYSTEM = 256, O_CTX, O_CHUNK, O_EOS };
	static const struct option lo[] = {{"model", required_argument, 0, 'm'},
					   {"system", required_argument, 0, O_SYSTEM},
					   {"n-predict", required_argument, 0, 'n'},
					   {"ctx", required_argument, 0, O_CTX},
					   {"chunk", required_argument, 0, O_CHUNK},
					   {"ignore-eos", no_argument, 0, O_EOS},
					   {"help", no_argument, 0, 'h'},
					   RUN_OPTS_LONG,
					   SAMPLE_OPTS_LONG,
					   {0}};
	memset(a, 0, sizeof(*a));
	a->n_predict = -1;
	a->chunk = CHAT_CHUNK_DEFAULT;
	run_opts_default(&a->ro);
	sample_opts_default(&a->so);
	int c;
	long v;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:n:h", lo, NULL)) != -1) {
		int bad = 0;
		const char *name = NULL;
		switch (c) {
		case 'm': a->model = optarg; break;
		case O_SYSTEM: a->system = optarg; break;
		case 'n': bad = parse_int(optarg, -1, 1 << 24, &v); a->n_predict = (int)v; name = "-n"; break;
		case O_CTX: bad = parse_int(optarg, 2, 1 << 24, &v); a->ctx = (int)v; name = "--ctx"; break;
		case O_CHUNK: bad = parse_int(optarg, 1, 1 << 20, &v); a->chunk = (int)v; name = "--chunk"; break;
		case O_EOS: a->ignore_eos = true; break;
		case 'h': usage(stdout); exit(0);
		case '?': return opt_hint("chat", argv, "m:n:h", lo);
		default:
			if ((bad = run_opts_parse(&a->ro, c, optarg)) == 1)
				bad = sample_opts_parse(&a->so, c, optarg);
			if (bad)
				return 2;
		}
		if (bad) {
			fprintf(stderr, "ferry chat: %s: bad value '%s'\n", name, optarg);
			return 2;
		}
	}
	if (!a->model || optind != argc) {
		fprintf(stderr, "ferry chat: %s; see `ferry chat --help`\n",
			!a->model ? "needs -m MODEL" : "takes no arguments besides its options");
		return 2;
	}
	return run_opts_check(&a->ro);
}

/* The conversation rendered with the generation prompt, as tokens (special-token text matched, nothing
 * added: the template writes BOS itself, as transformers' apply_chat_template does). */
static int chat_tokens(struct chat *c, struct tok_ids *ids, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int rc = chat_render_tok(c->tmpl, c->msgs, c->tk, &text, &len, err, errlen);
	rc = rc ? rc : tokenizer_encode(c->tk, text, len, TOK_PARSE_SPECIAL, ids, err, errlen);
	free(text);
	return rc;
}

static void chat_seq_close(struct chat *c)
{
	if (c->seq >= 0)
		model_seq_close(c->m, c->seq);
	c->seq = -1;
	c->n_kv = 0;
}

/* Makes the sequence hold ids[0..n) with the logits of the last one in c->logits, stepping only what it
 * does not hold yet (module comment). *reused: positions that were not computed again. -EINTR when
 * Ctrl-C stopped it. */
static int chat_prefill(struct chat *c, const int *ids, int n, int *reused, char *err, size_t errlen)
{
	int same = 0, rc = 0;
	while (same < c->n_kv && same < n && c->kv[same] == ids[same])
		same++;
	if (c->seq < 0 || same < c->n_kv || same == n) {
		int cached = 0;
		chat_seq_close(c);
		if ((rc = model_seq_open(c->m, ids, n, &c->seq, &cached, err, errlen)))
			return rc;
		memcpy(c->kv, ids, sizeof(int) * (size_t)cached);
		c->n_kv = same = cached;
	}
	*reused = same;
	struct model_out out = {.logits = c->logits};
	for (int at = same; at < n && !rc;) {
		if (chat_interrupts)
			return -EINTR;
		int k = n - at < c->m->opt.t_max ? n - at : c->m->opt.t_max;
		struct model_part p = {.seq = c->seq, .n = k, .tokens = ids + at, .n_logits = at + k == n};
		if ((rc = model_step(c->m, &p, 1, &out, err, errlen))) {
			chat_seq_close(c);
			return rc;
		}
		memcpy(c->kv + at, ids + at, sizeof(int) * (size_t)k);
		c->n_kv = at += k;
	}
	return rc;
}

static bool chat_is_eos(const struct chat *c, int tok)
{
	for (int i = 0; i < c->n_eos; i++)
		if (c->eos[i] == tok)
			return true;
	return false;
}

static int msg_append(json_t *msgs, const char *role, const char *text, size_t len)
{
	json_t *m = json_pack("{s:s, s:s%}", "role", role, "content", text ? text : "", text ? len : 0);
	return m && !json_array_append_new(msgs, m) ? 0 : -EINVAL;
}

/* Generates the reply from c->logits on, printing it as it comes; the reply (cut where Ctrl-C stopped it)
 * goes into *reply. */
static int chat_decode(struct chat *c, struct tok_buf *reply, int *n_gen, bool *stopped, char *err, size_t errlen)
{
	struct tok_stream ts;
	struct tok_buf piece = {0};
	struct model_out out = {.logits = c->logits};
	int rc = 0, max_new = c->a->n_predict;
	tok_stream_init(&ts, c->tk, false, false);
	ts.lossy = true;
	*n_gen = 0;
	*stopped = false;
	for (;;) {
		if (chat_interrupts) {
			*stopped = true;
			break;
		}
		int tok = sampler_pick(&c->smp, c->logits, c->kv, c->n_kv);
		if (!c->a->ignore_eos && chat_is_eos(c, tok))
			break;
		piece.n = 0;
		tok_stream_push(&ts, tok, &piece);
		fwrite(piece.p, 1, piece.n, stdout);
		fflush(stdout);
		tok_buf_add(reply, piece.p, piece.n);
		if (++*n_gen == max_new || c->n_kv + 1 > c->ctx)
			break;
		struct model_part p = {.seq = c->seq, .n = 1, .tokens = &tok, .n_logits = 1};
		if ((rc = model_step(c->m, &p, 1, &out, err, errlen))) {
			chat_seq_close(c);
			break;
		}
		c->kv[c->n_kv++] = tok;
	}
	piece.n = 0;
	tok_stream_flush(&ts, &piece);
	fwrite(piece.p, 1, piece.n, stdout);
	tok_buf_add(reply, piece.p, piece.n);
	tok_buf_free(&piece);
	return rc;
}

/* One turn: the user's message, the reply streamed, a speed line. 0, or 1 after printing why the turn
 * failed (the conversation is then as before it). */
static int chat_turn(struct chat *c, const char *text)
{
	char err[ERR_LEN] = "";
	struct tok_ids ids = {0};
	struct tok_buf reply = {0};
	size_t n_msgs = json_array_size(c->msgs);
	int rc = msg_append(c->msgs, "user", text, strlen(text)), reused = 0, n_gen = 0;
	if (rc)
		snprintf(err, sizeof(err), "the message is not valid UTF-8");
	rc = rc ? rc : chat_tokens(c, &ids, err, sizeof(err));
	if (!rc && (int)ids.n >= c->ctx) {
		snprintf(err, sizeof(err), "the conversation (%zu tokens) fills the context of %d: /reset, or start with a "
			 "larger --ctx", ids.n, c->ctx);
		rc = -ENOSPC;
	}
	double t0 = now_sec();
	rc = rc ? rc : chat_prefill(c, (const int *)ids.ids, (int)ids.n, &reused, err, sizeof(err));
	double t1 = now_sec();
	bool stopped = false;
	rc = rc ? rc : chat_decode(c, &reply, &n_gen, &stopped, err, sizeof(err));
	double t2 = now_sec();
	if (!rc && msg_append(c->msgs, "assistant", reply.p, reply.n)) {
		snprintf(err, sizeof(err), "the reply is not valid UTF-8");
		rc = -EINVAL;
	}
	if (rc) {
		json_array_remove(c->msgs, n_msgs); /* the user message, the conversation stays as it was */
		fprintf(stderr, "%sferry: %s\n", n_gen ? "\n" : "", rc == -EINTR ? "stopped" : err);
	} else {
		int prefilled = (int)ids.n - reused, decoded = n_gen > 0 ? n_gen - 1 : 0;
		printf("\n");
		fflush(stdout);
		fprintf(stderr, "[%sprefill %d tokens (%d reused) %.1f tok/s, decode %d tokens %.1f tok/s]\n",
			stopped ? "stopped; " : "", prefilled, reused, prefilled / (t1 - t0 > 0 ? t1 - t0 : 1e-9), n_gen,
			decoded / (t2 - t1 > 0 ? t2 - t1 : 1e-9));
		c->turns++;
		c->prefill_tok += prefilled, c->reused_tok += reused, c->decode_tok += n_gen;
		c->prefill_s += t1 - t0, c->decode_s += t2 - t1;
	}
	chat_interrupts = 0;
	tok_ids_free(&ids);
	tok_buf_free(&reply);
	return rc ? 1 : 0;
}

static bool has_system(const struct chat *c)
{
	const char *role = json_string_value(json_object_get(json_array_get(c->msgs, 0), "role"));
	return role && !strcmp(role, "system");
}

/* /system TEXT: the system turn (first message) set, replaced, or with no text removed. */
static void chat_set_system(struct chat *c, const char *text)
{
	bool has = has_system(c);
	if (has)
		json_array_remove(c->msgs, 0);
	if (!*text) {
		printf("(no system turn)\n");
		return;
	}
	json_t *m = json_pack("{s:s, s:s}", "role", "system", "content", text);
	if (!m || json_array_insert_new(c->msgs, 0, m))
		fprintf(stderr, "ferry: /system: the text is not valid UTF-8\n");
	else
		printf("(system turn set)\n");
}

/* /reset: the conversation cleared, its system turn kept. */
static void chat_reset(struct chat *c)
{
	bool has = has_system(c);
	while (json_array_size(c->msgs) > (has ? 1u : 0u))
		json_array_remove(c->msgs, json_array_size(c->msgs) - 1);
	printf("(conversation cleared%s)\n", has ? "; the system turn kept" : "");
}

/* /save FILE: the messages as a JSON list, through a temporary name. */
static void chat_save(struct chat *c, const char *path)
{
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(c->msgs, tmp, JSON_INDENT(2)) || rename(tmp, path)) {
		fprintf(stderr, "ferry: /save %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return;
	}
	printf("(%zu messages saved to %s)\n", json_array_size(c->msgs), path);
}

/* /load FILE: a JSON list of {role, content} strings (what /save writes) replaces the conversation. */
static void chat_load(struct chat *c, const char *path)
{
	json_error_t je;
	json_t *msgs = json_load_file(path, JSON_ALLOW_NUL, &je), *m;
	size_t i;
	if (!msgs) {
		fprintf(stderr, "ferry: /load %s: %s (line %d)\n", path, je.text, je.line);
		return;
	}
	if (!json_is_array(msgs)) {
		fprintf(stderr, "ferry: /load %s: expected a JSON list of messages\n", path);
		json_decref(msgs);
		return;
	}
	json_array_foreach(msgs, i, m)
	{
		if (!json_is_string(json_object_get(m, "role")) || !json_is_string(json_object_get(m, "content"))) {
			fprintf(stderr, "ferry: /load %s: message %zu: expected {\"role\": string, \"content\": string}\n", path,
				i + 1);
			json_decref(msgs);
			return;
		}
	}
	json_decref(c->msgs);
	c->msgs = msgs;
	printf("(%zu messages loaded from %s)\n", json_array_size(msgs), path);
}

static void chat_stats(struct chat *c)
{
	printf("%d turns; %zu messages; the sequence holds %d of %d positions\n"
	       "prefill %lld tokens in %.2fs (%.1f tok/s), %lld more reused from earlier turns\n"
	       "decode %lld tokens in %.2fs (%.1f tok/s)\n",
	       c->turns, json_array_size(c->msgs), c->n_kv, c->ctx, c->prefill_tok, c->prefill_s,
	       c->prefill_tok / (c->prefill_s > 0 ? c->prefill_s : 1e-9), c->reused_tok, c->decode_tok, c->decode_s,
	       c->decode_tok / (c->decode_s > 0 ? c->decode_s : 1e-9));
	fflush(stdout);
	struct engine_stats es;
	engine_stats(c->e, &es);
	engine_stats_print(stdout, &es);
}

static const char chat_help[] =
	"  /system TEXT   set the system turn (no TEXT: remove it)\n"
	"  /reset         clear the conversation (the system turn stays)\n"
	"  /save FILE     write the messages as JSON\n"
	"  /load FILE     read messages written by /save (a JSON list of {role, content})\n"
	"  /stats         tokens, reuse and speed so far\n"
	"  /help          this list\n"
	"  /exit          leave (also Ctrl-D, or Ctrl-C twice at the prompt)\n"
	"Anything else is a message. Ctrl-C stops a reply.\n";

/* A command line (starting with '/'): 1 to exit, else 0. */
static int chat_command(struct chat *c, const char *line)
{
	size_t n = strcspn(line, " \t");
	const char *arg = line + n + strspn(line + n, " \t");
#define IS(cmd) (n == strlen(cmd) && !strncmp(line, cmd, n))
	if (IS("/exit") || IS("/quit"))
		return 1;
	if (IS("/help"))
		printf("%s", chat_help);
	else if (IS("/system"))
		chat_set_system(c, arg);
	else if (IS("/reset"))
		chat_reset(c);
	else if (IS("/stats"))
		chat_stats(c);
	else if ((IS("/save") || IS("/load")) && !*arg)
		fprintf(stderr, "ferry: %.*s needs a FILE\n", (int)n, line);
	else if (IS("/save"))
		chat_save(c, arg);
	else if (IS("/load"))
		chat_load(c, arg);
	else
		fprintf(stderr, "ferry: unknown command %.*s; /help lists them\n", (int)n, line);
#undef IS
	fflush(stdout);
	return 0;
}

/* The next line of input without its newline (free it), or NULL at the end of input or on Ctrl-C
 * (chat_interrupts then counts it). */
static char *chat_read(bool tty)
{
	if (tty)
		return readline(">>> ");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, stdin);
	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = 0;
	return line;
}

static void chat_loop(struct chat *c, bool tty)
{
	char hist[PATH_MAX] = "";
	if (tty && !model_home_make(hist, sizeof(hist) - 16)) {
		strcat(hist, "/chat_history");
		read_history(hist);
	}
	if (tty)
		printf("ferry chat: /help lists the commands; Ctrl-C stops a reply, Ctrl-D exits\n");
	int presses = 0; /* Ctrl-C presses at the prompt in a row */
	for (;;) {
		char *line = chat_read(tty);
		if (!line) {
			if (!chat_interrupts)
				break; /* Ctrl-D or the end of stdin */
			presses += (int)chat_interrupts;
			chat_interrupts = 0;
			if (presses >= 2 || !tty)
				break;
			printf("\n(Ctrl-C again or Ctrl-D to exit)\n");
			continue;
		}
		presses = 0;
		const char *s = line + strspn(line, " \t");
		if (*s && tty)
			add_history(line);
		int quit = 0;
		if (*s == '/')
			quit = chat_command(c, s);
		else if (*s)
			chat_turn(c, line);
		free(line);
		if (quit)
			break;
	}
	if (tty && hist[0])
		write_history(hist);
}

/* Opens the engine for one sequence of ctx positions with SIGINT blocked, so that the threads it starts
 * (and OpenMP's, started here) never take Ctrl-C. */
static int chat_engine(struct chat *c, const struct layout *lay, char *err, size_t errlen)
{
	struct engine_opts eo = {0};
	run_opts_engine(&c->a->ro, &eo);
	eo.t_max = c->a->chunk < c->ctx ? c->a->chunk : c->ctx;
	eo.max_logits = 1;
	eo.ctx = c->ctx;
	eo.max_seqs = 1;
	eo.no_sched = true;
	sigset_t block, old;
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	int rc = engine_open(&c->e, lay, &eo, err, errlen);
	int dummy = 0;
#pragma omp parallel reduction(+ : dummy)
	dummy++;
	(void)dummy;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	c->m = rc ? NULL : engine_model(c->e);
	return rc;
}

static int chat_main(const struct chat_args *a, const struct layout *lay)
{
	char err[ERR_LEN] = "";
	struct chat c = {.a = a, .seq = -1, .msgs = json_array()};
	int max_pos = lay->hp.max_pos > 0 ? lay->hp.max_pos : CHAT_CTX_DEFAULT;
	c.ctx = a->ctx ? a->ctx : max_pos < CHAT_CTX_DEFAULT ? max_pos : CHAT_CTX_DEFAULT;
	struct sample_opts so = a->so;
	sample_opts_model_defaults(&so, lay);
	int rc = tokenizer_open(&c.tk, a->model, err, sizeof(err));
	rc = rc ? rc : chat_template_load(a->model, &c.tmpl, err, sizeof(err));
	if (!rc && (rc = run_opts_eos(&lay->hp, c.tk, &c.eos, &c.n_eos)))
		snprintf(err, sizeof(err), "out of memory");
	if (!rc && a->system && msg_append(c.msgs, "system", a->system, strlen(a->system))) {
		snprintf(err, sizeof(err), "--system: the text is not valid UTF-8");
		rc = -EINVAL;
	}
	c.kv = malloc(sizeof(int) * (size_t)c.ctx);
	c.logits = malloc(sizeof(float) * (size_t)lay->hp.vocab);
	if (!rc && (!c.kv || !c.logits || !c.msgs || sampler_init(&c.smp, &so.sc, lay->hp.vocab))) {
		snprintf(err, sizeof(err), "out of memory");
		rc = -ENOMEM;
	}
	rc = rc ? rc : chat_engine(&c, lay, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ferry: %s\n", err);
	} else {
		struct sigaction sa = {.sa_handler = on_sigint}; /* no SA_RESTART: Ctrl-C ends a read at the prompt */
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		chat_loop(&c, isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
		chat_seq_close(&c);
	}
	engine_close(c.e);
	if (c.smp.V)
		sampler_free(&c.smp);
	free(c.logits);
	free(c.kv);
	free(c.eos);
	json_decref(c.msgs);
	jinja_free(c.tmpl);
	tokenizer_free(c.tk);
	return rc ? 1 : 0;
}

int ferry_chat(int argc, char **argv)
{
	struct chat_args a;
	char model[4096], err[ERR_LEN];
	struct layout lay;
	int rc = parse_args(argc, argv, &a);
	if (rc || (rc = model_home_resolve(a.model, model, sizeof(model))))
		return rc;
	a.model = model;
	if (layout_open(&lay, a.model, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	rc = chat_main(&a, &lay);
	layout_close(&lay);
	return rc;
}
