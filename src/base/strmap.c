/* strmap.c: see strmap.h. Linear probing; the arena grows by doubling and is addressed by offsets. An empty key
 * takes no arena bytes, so the arena may still be NULL when one is looked up (never offset or compared then). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "base/strmap.h"

static uint32_t cap_for(uint32_t expected)
{
	uint32_t cap = 16;
	while (cap < 2 * (uint64_t)expected + 2 && cap < (1u << 31))
		cap <<= 1;
	return cap;
}

static int slots_alloc(struct strmap *m, uint32_t cap)
{
	m->slots = malloc(sizeof(*m->slots) * cap);
	if (!m->slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < cap; i++)
		m->slots[i].len = UINT32_MAX;
	m->cap = cap;
	return 0;
}

int strmap_init(struct strmap *m, uint32_t expected)
{
	memset(m, 0, sizeof(*m));
	return slots_alloc(m, cap_for(expected));
}

void strmap_free(struct strmap *m)
{
	free(m->slots);
	free(m->arena);
	memset(m, 0, sizeof(*m));
}

void strmap_clear(struct strmap *m)
{
	for (uint32_t i = 0; i < m->cap; i++)
		m->slots[i].len = UINT32_MAX;
	m->n = 0;
	m->arena_len = 0;
}

static struct strmap_slot *find(const struct strmap *m, const char *key, size_t len, uint64_t h)
{
	uint32_t mask = m->cap - 1;
	for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
		struct strmap_slot *s = &m->slots[i];
		if (s->len == UINT32_MAX || (s->hash == h && s->len == len && (!len || !memcmp(m->arena + s->off, key, len))))
			return s;
	}
}

static int grow(struct strmap *m)
{
	struct strmap_slot *old = m->slots;
	uint32_t old_cap = m->cap;
	if (slots_alloc(m, old_cap * 2)) {
		m->slots = old;
		m->cap = old_cap;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < old_cap; i++) {
		if (old[i].len == UINT32_MAX)
			continue;
		uint32_t mask = m->cap - 1, j = (uint32_t)old[i].hash & mask;
		while (m->slots[j].len != UINT32_MAX)
			j = (j + 1) & mask;
		m->slots[j] = old[i];
	}
	free(old);
	return 0;
}

int strmap_put(struct strmap *m, const char *key, size_t len, int32_t val)
{
	if (len >= UINT32_MAX)
		return -EINVAL;
	if (2 * (m->n + 1) > m->cap && grow(m))
		return -ENOMEM;
	uint64_t h = XXH3_64bits(key, len);
	struct strmap_slot *s = find(m, key, len, h);
	if (s->len != UINT32_MAX) {
		s->val = val;
		return 0;
	}
	if (m->arena_len + len > m->arena_cap) {
		size_t cap = m->arena_cap ? m->arena_cap : 4096;
		while (cap < m->arena_len + len)
			cap *= 2;
		char *a = realloc(m->arena, cap);
		if (!a)
			return -ENOMEM;
		m->arena = a;
		m->arena_cap = cap;
	}
	if (len)
		memcpy(m->arena + m->arena_len, key, len);
	*s = (struct strmap_slot){h, (uint32_t)m->arena_len, (uint32_t)len, val};
	m->arena_len += len;
	m->n++;
	return 0;
}

int32_t strmap_get(const struct strmap *m, const char *key, size_t len)
{
	if (!m->cap)
		return -1;
	const struct strmap_slot *s = find(m, key, len, XXH3_64bits(key, len));
	return s->len == UINT32_MAX ? -1 : s->val;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

int pairmap_init(struct pairmap *m, uint32_t expected)
{
	m->cap = cap_for(expected);
	m->n = 0;
	m->slots = malloc(sizeof(*m->slots) * m->cap);
	if (!m->slots)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->cap; i++)
		m->slots[i].key = UINT64_MAX;
	return 0;
}

void pairmap_free(struct pairmap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

int pairmap_put(struct pairmap *m, uint64_t key, int32_t a, int32_t b)
{
	if (2 * (m->n + 1) > m->cap) {
		struct pairmap old = *m;
		if (pairmap_init(m, old.cap))
			return *m = old, -ENOMEM;
		for (uint32_t i = 0; i < old.cap; i++)
			if (old.slots[i].key != UINT64_MAX)
				pairmap_put(m, old.slots[i].key, old.slots[i].a, old.slots[i].b);
		free(old.slots);
	}
	uint32_t mask = m->cap - 1;
	for (uint32_t i = (uint32_t)mix64(key) & mask;; i = (i + 1) & mask) {
		struct pairmap_slot *s = &m->slots[i];
		if (s->key == key)
			return 0;
		if (s->key == UINT64_MAX) {
			*s = (struct pairmap_slot){key, a, b};
			m->n++;
			return 0;
		}
	}
}

const struct pairmap_slot *pairmap_get(const struct pairmap *m, uint64_t key)
{
	uint32_t mask = m->cap - 1;
	for (uint32_t i = (uint32_t)mix64(key) & mask;; i = (i + 1) & mask) {
		const struct pairmap_slot *s = &m->slots[i];
		if (s->key == key)
			return s;
		if (s->key == UINT64_MAX)
			return NULL;
	}
}
