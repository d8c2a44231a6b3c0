/*
 * strmap.h: open-addressing hash maps for the tokenizer: byte string -> int32 (keys copied into the map's
 * arena, XXH3 hashes), and uint64 -> two int32 (merge pairs). Capacity is a power of two kept at most
 * half full; there is no deletion, only strmap_clear.
 */
#ifndef FERRY_STRMAP_H
#define FERRY_STRMAP_H

#include <stddef.h>
#include <stdint.h>

struct strmap_slot {
	uint64_t hash;
	uint32_t off, len; /* key bytes in arena; len = UINT32_MAX marks an empty slot */
	int32_t val;
};

struct strmap {
	struct strmap_slot *slots;
	uint32_t cap, n;
	char *arena;
	size_t arena_len, arena_cap;
};

int strmap_init(struct strmap *m, uint32_t expected);
void strmap_free(struct strmap *m);
void strmap_clear(struct strmap *m);
/* Inserts or overwrites; 0 or -ENOMEM. */
int strmap_put(struct strmap *m, const char *key, size_t len, int32_t val);
/* The value, or -1 when absent. */
int32_t strmap_get(const struct strmap *m, const char *key, size_t len);

struct pairmap_slot {
	uint64_t key; /* UINT64_MAX: empty */
	int32_t a, b;
};

struct pairmap {
	struct pairmap_slot *slots;
	uint32_t cap, n;
};

int pairmap_init(struct pairmap *m, uint32_t expected);
void pairmap_free(struct pairmap *m);
/* Keeps the first value put for a key (a merge listed twice keeps its best rank). */
int pairmap_put(struct pairmap *m, uint64_t key, int32_t a, int32_t b);
const struct pairmap_slot *pairmap_get(const struct pairmap *m, uint64_t key);

#endif
