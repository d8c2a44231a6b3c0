/*
 * expert_cache.c: the expert cache's policy (expert_cache.h). Lookups are O(1) through where[]; the victim
 * search is a scan of the entries (a few thousand at most: once per miss, next to a copy of megabytes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "engine/expert_cache.h"

int ec_init(struct expert_cache *c, int n_entries, int n_units, int n_exp)
{
	memset(c, 0, sizeof(*c));
	if (n_entries <= 0)
		return 0;
	c->n = n_entries;
	c->n_exp = n_exp;
	c->n_keys = n_units * n_exp;
	c->where = malloc(sizeof(int) * (size_t)c->n_keys);
	c->freq = calloc((size_t)c->n_keys, sizeof(uint32_t));
	c->ent = malloc(sizeof(*c->ent) * (size_t)n_entries);
	if (!c->where || !c->freq || !c->ent) {
		ec_free(c);
		return -ENOMEM;
	}
	for (int k = 0; k < c->n_keys; k++)
		c->where[k] = -1;
	for (int i = 0; i < n_entries; i++)
		c->ent[i] = (struct ec_entry){.key = -1, .pin = -1, .guard = -1};
	return 0;
}

void ec_free(struct expert_cache *c)
{
	free(c->where);
	free(c->freq);
	free(c->ent);
	memset(c, 0, sizeof(*c));
}

void ec_use(struct expert_cache *c, int unit, int e)
{
	if (!c->n)
		return;
	int k = unit * c->n_exp + e;
	FERRY_ASSERT(k >= 0 && k < c->n_keys);
	c->freq[k]++;
	if (++c->uses % (4 * (uint64_t)c->n_keys) == 0)
		for (int i = 0; i < c->n_keys; i++)
			c->freq[i] >>= 1;
}

int ec_find(struct expert_cache *c, int unit, int e, bool routed)
{
	if (!c->n)
		return -1;
	int k = unit * c->n_exp + e, i = c->where[k];
	if (routed) {
		c->hits += i >= 0;
		c->misses += i < 0;
	}
	if (i >= 0) {
		c->ent[i].last = ++c->tick;
		c->ent[i].pin = routed ? unit : c->ent[i].pin;
	}
	return i;
}

int ec_insert(struct expert_cache *c, int unit, int e, int pin_unit)
{
	if (!c->n)
		return -1;
	int k = unit * c->n_exp + e, v = -1;
	FERRY_ASSERT(c->where[k] < 0);
	for (int i = 0; i < c->n; i++) {
		const struct ec_entry *x = &c->ent[i];
		if (x->key < 0) {
			v = i;
			break;
		}
		if (x->pin >= 0)
			continue;
		if (v < 0 || c->freq[x->key] < c->freq[c->ent[v].key] ||
		    (c->freq[x->key] == c->freq[c->ent[v].key] && x->last < c->ent[v].last))
			v = i;
	}
	if (v < 0)
		return -1;
	struct ec_entry *x = &c->ent[v];
	if (x->key >= 0) {
		if (c->freq[x->key] > c->freq[k]) {
			c->refused++;
			return -1;
		}
		c->where[x->key] = -1;
		c->evictions++;
	}
	x->key = k;
	x->pin = pin_unit;
	x->last = ++c->tick;
	c->where[k] = v;
	c->fills++;
	return v;
}

void ec_unpin(struct expert_cache *c, int unit)
{
	for (int i = 0; i < c->n; i++)
		if (c->ent[i].pin == unit) {
			c->ent[i].pin = -1;
			c->ent[i].guard = unit;
		}
}
