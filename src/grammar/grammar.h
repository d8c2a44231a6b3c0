/*
 * grammar.h: grammar-constrained decoding. A grammar (llama.cpp's GBNF syntax, or made from a JSON schema)
 * is parsed once into rules over Unicode code points; a matcher state per sequence holds the stacks of a
 * pushdown recognizer (every way the text so far can continue); a trie of the vocabulary's decoded bytes,
 * shared by every request, gives the tokens whose bytes the state can take next (UTF-8 split across tokens
 * held as a partial code point). Left-recursive grammars are refused at parse time, so the matcher always
 * terminates. Functions return 0 or a negative errno with one line in err.
 */
#ifndef FERRY_GRAMMAR_H
#define FERRY_GRAMMAR_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct gram;
struct gram_state;
struct gram_vocab;

/* GBNF text -> grammar (start rule "root"). Errors name the line and column. */
int gram_parse(const char *text, struct gram **out, char *err, size_t errlen);
void gram_free(struct gram *g);

/* A JSON schema -> GBNF rules written to f, `name` the schema's rule (its value followed by optional
 * whitespace); with root, also `root ::= name`. Supports type (object, array, string, number, integer,
 * boolean, null, or a list), properties + required (in the order of properties; only those properties),
 * additionalProperties, items, minItems/maxItems, minLength/maxLength, enum, const, anyOf/oneOf, $ref to
 * #/$defs/ and #/definitions/ (recursion included). Validation keywords it cannot enforce (pattern,
 * minimum, ...) are refused naming the keyword and where it is. */
int gram_schema_gbnf(const json_t *schema, const char *name, bool root, FILE *f, char *err, size_t errlen);
/* The grammar of a schema (gram_schema_gbnf + gram_parse); NULL schema: any JSON object. */
int gram_from_schema(const json_t *schema, struct gram **out, char *err, size_t errlen);

/* A matcher at the grammar's start: 0, -ENOMEM, or -E2BIG for a grammar whose expansion nests deeper than the
 * matcher takes (nullable repetitions inside repetitions; feed then refuses such text too). */
int gram_state_new(const struct gram *g, struct gram_state **out);
void gram_state_free(struct gram_state *s);
/* Feeds bytes (UTF-8, possibly ending inside a character): true and advanced, or false and unchanged when
 * the grammar cannot take them. */
bool gram_state_feed(struct gram_state *s, const char *p, size_t n);
/* Would feed take these bytes (the state unchanged either way)? */
bool gram_state_accepts(struct gram_state *s, const char *p, size_t n);
/* The text so far is a whole sentence of the grammar (an end of sequence may come). */
bool gram_state_can_end(const struct gram_state *s);
/* No byte can come next: only the end. */
bool gram_state_done(const struct gram_state *s);

/* The vocabulary's trie: text[i] (len[i] bytes) the bytes token i adds to the output, NULL or empty for
 * tokens never allowed by a grammar (control tokens). */
int gram_vocab_new(const char *const *text, const size_t *len, int V, struct gram_vocab **out);
void gram_vocab_free(struct gram_vocab *vb);
/* allow[V]: 1 for every token whose bytes s can take next, else 0 (end-of-sequence ids are the caller's:
 * gram_state_can_end). Returns the number allowed. */
int gram_vocab_mask(const struct gram_vocab *vb, struct gram_state *s, uint8_t *allow);

#endif
