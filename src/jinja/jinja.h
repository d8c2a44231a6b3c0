/* jinja.h: a Jinja subset interpreter for chat templates, byte-identical to jinja2 in HF's environment. */
#ifndef FERRY_JINJA_H
#define FERRY_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct jinja_tmpl;
/* Parses a template (name is used in error messages: "NAME:LINE: ..."). 0 or negative; err one line. */
int jinja_parse(struct jinja_tmpl **out, const char *src, size_t len, const char *name, char *err, size_t errlen);
/* Renders with the variables of a JSON object (messages, add_generation_prompt, bos_token, ...). *out is a
 * malloc'd NUL-terminated string (caller frees), *out_len its length. 0 or negative; err one line with the
 * template line (raise_exception's message appears verbatim in err). */
int jinja_render(const struct jinja_tmpl *t, const json_t *vars, char **out, size_t *out_len, char *err, size_t errlen);
void jinja_free(struct jinja_tmpl *t);

/* strftime_now's clock for later renders: unix seconds read as local time (tests fix it); the default is
 * the real clock. */
void jinja_set_now(struct jinja_tmpl *t, int64_t unix_seconds);
/* Bounds of one render: output bytes (also the memory budget: 8x this), evaluation steps. Defaults 64 MiB
 * and 200M steps; past either, the render fails with a message instead of running on. */
void jinja_set_limits(struct jinja_tmpl *t, size_t max_output, uint64_t max_steps);

#endif
