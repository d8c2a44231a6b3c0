/*
 * expert_cache.h: which routed experts a device keeps across steps (the policy; weights.c owns the device
 * memory and the copies). Keys are (unit, expert); the cache has n entries, each one expert's bytes.
 *
 * The policy is frequency-aware, not LRU: the units are visited cyclically, so when the entries cannot hold
 * every layer's experts of a token, LRU evicts exactly the experts the next token's early layers want
 * (as the RAM tier explains for whole units). Every routed (unit, expert) counts a use (ec_use), the counts
 * halve every 4 x n_keys uses (so a shifted distribution takes over); an expert enters by evicting the
 * entry of the fewest uses (ties: least recently used), and only when it has at least as many uses as that
 * entry (a one-off expert does not push out a hot one; it is uploaded into its layer's slot instead).
 * Entries the unit being computed uses are pinned until ec_unpin(unit): the compute queue still reads them.
 * guard: the unit whose compute read the entry last (weights.c waits for that unit's compute fence before
 * overwriting it); -1 when no compute has read it.
 */
#ifndef FERRY_EXPERT_CACHE_H
#define FERRY_EXPERT_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct ec_entry {
	int key;        /* unit * n_exp + expert, -1 free */
	int pin;        /* unit computing with it, -1 none */
	int guard;      /* unit whose compute read it last, -1 none */
	uint64_t last;  /* tick of its latest use (LRU among equal counts) */
};

struct expert_cache {
	int n;                  /* entries */
	int n_exp, n_keys;      /* experts per unit; n_units * n_exp */
	int *where;             /* [n_keys] entry holding the key, -1 */
	uint32_t *freq;         /* [n_keys] uses, aged */
	struct ec_entry *ent;   /* [n] */
	uint64_t tick, uses;
	/* figures */
	uint64_t hits, misses;  /* lookups of routed experts found / not found */
	uint64_t fills, evictions, refused; /* entries filled, entries that held another key, admissions refused */
};

int ec_init(struct expert_cache *c, int n_entries, int n_units, int n_exp);
void ec_free(struct expert_cache *c);
/* One routed use of (unit, e): its count. */
void ec_use(struct expert_cache *c, int unit, int e);
/* The entry holding (unit, e), or -1; a found entry is pinned to `unit` and counted as a hit when routed
 * (else as a miss). */
int ec_find(struct expert_cache *c, int unit, int e, bool routed);
/* An entry for (unit, e), which must not be cached: a free one, else the victim above (its key dropped),
 * pinned to pin_unit (-1: not pinned, a prefetch); -1 when every entry is pinned or admission is refused. */
int ec_insert(struct expert_cache *c, int unit, int e, int pin_unit);
/* The unit's compute is issued: its entries are no longer pinned, their guard is the unit. */
void ec_unpin(struct expert_cache *c, int unit);

#endif
