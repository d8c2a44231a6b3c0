/*
 * jinja_methods.c: what can be called besides macros and filters: the globals of HF's environment (range
 * with the sandbox's 100,000 limit, namespace, dict, raise_exception, strftime_now; cycler, joiner and
 * lipsum exist but fail when called), Python's str / dict / list methods, loop.cycle and loop.changed, and
 * the argument binding every builtin shares. The immutable sandbox's rule is kept: methods that modify a
 * list or dict (append, update, pop...) are an "unsafe" Undefined, which fails when called. Methods Python
 * has but ferry lacks exist (so "is defined" holds) and fail when called, naming the method.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jinja_internal.h"

enum {
	F_RANGE, F_NAMESPACE, F_DICT, F_RAISE, F_STRFTIME, F_UNSUPPORTED_GLOBAL,
	M_CYCLE, M_CHANGED,
	M_STARTSWITH, M_ENDSWITH, M_STRIP, M_LSTRIP, M_RSTRIP, M_SPLIT, M_RSPLIT, M_SPLITLINES, M_REPLACE,
	M_UPPER, M_LOWER, M_TITLE, M_CAPITALIZE, M_FIND, M_RFIND, M_INDEX, M_RINDEX, M_COUNT, M_JOIN,
	M_ISALPHA, M_ISSPACE, M_ISUPPER, M_ISLOWER, M_ISDIGIT, M_ISDECIMAL, M_ISNUMERIC, M_ISALNUM, M_ISASCII,
	M_ZFILL, M_CENTER, M_LJUST, M_RJUST, M_REMOVEPREFIX, M_REMOVESUFFIX, M_PARTITION, M_RPARTITION,
	M_GET, M_ITEMS, M_KEYS, M_VALUES, M_COPY, M_LIST_INDEX, M_LIST_COUNT,
	M_UNSUPPORTED,
};

struct builtin {
	const char *name;
	int id;
	int nparams;
	const char *params[4];
};

static const struct builtin globals[] = {
	{"range", F_RANGE, 3, {"start", "stop", "step"}},
	{"namespace", F_NAMESPACE, 1, {"mapping"}},
	{"dict", F_DICT, 1, {"mapping"}},
	{"raise_exception", F_RAISE, 1, {"message"}},
	{"strftime_now", F_STRFTIME, 1, {"fmt"}},
	{"cycler", F_UNSUPPORTED_GLOBAL, 0, {0}},
	{"joiner", F_UNSUPPORTED_GLOBAL, 0, {0}},
	{"lipsum", F_UNSUPPORTED_GLOBAL, 0, {0}},
};

static const struct builtin str_methods[] = {
	{"startswith", M_STARTSWITH, 3, {"prefix", "start", "end"}},
	{"endswith", M_ENDSWITH, 3, {"suffix", "start", "end"}},
	{"strip", M_STRIP, 1, {"chars"}},
	{"lstrip", M_LSTRIP, 1, {"chars"}},
	{"rstrip", M_RSTRIP, 1, {"chars"}},
	{"split", M_SPLIT, 2, {"sep", "maxsplit"}},
	{"rsplit", M_RSPLIT, 2, {"sep", "maxsplit"}},
	{"splitlines", M_SPLITLINES, 1, {"keepends"}},
	{"replace", M_REPLACE, 3, {"old", "new", "count"}},
	{"upper", M_UPPER, 0, {0}},
	{"lower", M_LOWER, 0, {0}},
	{"title", M_TITLE, 0, {0}},
	{"capitalize", M_CAPITALIZE, 0, {0}},
	{"find", M_FIND, 3, {"sub", "start", "end"}},
	{"rfind", M_RFIND, 3, {"sub", "start", "end"}},
	{"index", M_INDEX, 3, {"sub", "start", "end"}},
	{"rindex", M_RINDEX, 3, {"sub", "start", "end"}},
	{"count", M_COUNT, 3, {"sub", "start", "end"}},
	{"join", M_JOIN, 1, {"iterable"}},
	{"isalpha", M_ISALPHA, 0, {0}},
	{"isspace", M_ISSPACE, 0, {0}},
	{"isupper", M_ISUPPER, 0, {0}},
	{"islower", M_ISLOWER, 0, {0}},
	{"isdigit", M_ISDIGIT, 0, {0}},
	{"isdecimal", M_ISDECIMAL, 0, {0}},
	{"isnumeric", M_ISNUMERIC, 0, {0}},
	{"isalnum", M_ISALNUM, 0, {0}},
	{"isascii", M_ISASCII, 0, {0}},
	{"zfill", M_ZFILL, 1, {"width"}},
	{"center", M_CENTER, 2, {"width", "fillchar"}},
	{"ljust", M_LJUST, 2, {"width", "fillchar"}},
	{"rjust", M_RJUST, 2, {"width", "fillchar"}},
	{"removeprefix", M_REMOVEPREFIX, 1, {"prefix"}},
	{"removesuffix", M_REMOVESUFFIX, 1, {"suffix"}},
	{"partition", M_PARTITION, 1, {"sep"}},
	{"rpartition", M_RPARTITION, 1, {"sep"}},
};

/* Python str methods ferry does not implement: present (defined), failing when called. */
static const char *const str_unsupported[] = {
	"casefold", "encode", "expandtabs", "format", "format_map", "isidentifier", "isprintable", "istitle",
	"maketrans", "swapcase", "translate", NULL,
};

static const struct builtin dict_methods[] = {
	{"get", M_GET, 2, {"key", "default"}},
	{"items", M_ITEMS, 0, {0}},
	{"keys", M_KEYS, 0, {0}},
	{"values", M_VALUES, 0, {0}},
	{"copy", M_COPY, 0, {0}},
	{"fromkeys", M_UNSUPPORTED, 0, {0}},
};

static const struct builtin list_methods[] = {
	{"index", M_LIST_INDEX, 3, {"value", "start", "stop"}},
	{"count", M_LIST_COUNT, 1, {"value"}},
	{"copy", M_COPY, 0, {0}},
};

static const struct builtin loop_methods[] = {
	{"cycle", M_CYCLE, -1, {0}},
	{"changed", M_CHANGED, -1, {0}},
};

static const char *const dict_unsafe[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const list_unsafe[] = {"append", "clear", "pop", "reverse", "insert", "sort", "extend", "remove",
					  NULL};
static const char *const num_attrs[] = {"as_integer_ratio", "bit_count", "bit_length", "conjugate", "denominator",
					"from_bytes", "imag", "is_integer", "numerator", "real", "to_bytes", "hex",
					"fromhex", NULL};

/* Every builtin in one table, indexed by id, for calls. */
static const struct builtin *by_id(int id)
{
	static const struct builtin unsupported = {"?", M_UNSUPPORTED, -1, {0}};
	const struct builtin *tabs[] = {globals, str_methods, dict_methods, list_methods, loop_methods};
	size_t sizes[] = {sizeof(globals) / sizeof(*globals), sizeof(str_methods) / sizeof(*str_methods),
			  sizeof(dict_methods) / sizeof(*dict_methods), sizeof(list_methods) / sizeof(*list_methods),
			  sizeof(loop_methods) / sizeof(*loop_methods)};
	for (size_t t = 0; t < 5; t++)
		for (size_t i = 0; i < sizes[t]; i++)
			if (tabs[t][i].id == id)
				return &tabs[t][i];
	return &unsupported;
}

static bool in_list(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (!strcmp(*names, name))
			return true;
	return false;
}

static struct jv make_func(struct jrender *r, int id, struct jv self)
{
	struct jfunc *f = jx_alloc(&r->c, sizeof(*f));
	f->id = id;
	f->self = self;
	return (struct jv){.t = JV_FUNC, .fn = f};
}

static bool find_in(struct jrender *r, const struct builtin *tab, size_t n, struct jv self, const char *name,
		    struct jv *out)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(tab[i].name, name)) {
			/* An unsupported global carries its name to say which one was called. */
			if (tab[i].id == F_UNSUPPORTED_GLOBAL)
				self = jv_cstr(&r->c, name);
			*out = make_func(r, tab[i].id, self);
			return true;
		}
	return false;
}

bool jglobal_find(struct jrender *r, const char *name, struct jv *out)
{
	return find_in(r, globals, sizeof(globals) / sizeof(*globals), jv_none(), name, out);
}

/* An unsupported method: a function whose self is its name, failing when called. */
static struct jv unsupported_method(struct jrender *r, struct jv self, const char *name)
{
	char tmp[96];
	snprintf(tmp, sizeof(tmp), "%s.%s", jv_type_name(self), name);
	return make_func(r, M_UNSUPPORTED, jv_cstr(&r->c, tmp));
}

bool jmethod_find(struct jrender *r, struct jv v, const char *name, struct jv *out)
{
	switch (v.t) {
	case JV_STR:
		if (find_in(r, str_methods, sizeof(str_methods) / sizeof(*str_methods), v, name, out))
			return true;
		if (in_list(str_unsupported, name)) {
			*out = unsupported_method(r, v, name);
			return true;
		}
		return false;
	case JV_DICT:
		if (in_list(dict_unsafe, name)) {
			*out = jv_undef(r, "access to attribute '%s' of 'dict' object is unsafe.", name);
			return true;
		}
		if (!strcmp(name, "fromkeys")) {
			*out = unsupported_method(r, v, name);
			return true;
		}
		return find_in(r, dict_methods, sizeof(dict_methods) / sizeof(*dict_methods), v, name, out);
	case JV_LIST:
		if (v.kind == JL_LIST && in_list(list_unsafe, name)) {
			*out = jv_undef(r, "access to attribute '%s' of 'list' object is unsafe.", name);
			return true;
		}
		if (v.kind == JL_LIST || v.kind == JL_TUPLE)
			return find_in(r, list_methods, v.kind == JL_LIST ? 3 : 2, v, name, out);
		return false;
	case JV_LOOP: return find_in(r, loop_methods, 2, v, name, out);
	case JV_BOOL:
	case JV_INT:
	case JV_FLOAT:
		if (in_list(num_attrs, name))
			jx_fail(&r->c, 0, "unsupported attribute '%s' of a number", name);
		return false;
	default: return false;
	}
}

void jargs_bind(struct jrender *r, const char *what, int nparams, const char *const *params, int npos,
		const struct jv *pos, int nkw, const char **kwn, const struct jv *kwv, struct jv *out)
{
	for (int i = 0; i < nparams; i++)
		out[i] = (struct jv){.t = JV_MISSING};
	if (npos > nparams)
		jx_fail(&r->c, 0, "%s takes at most %d argument(s) (%d given)", what, nparams, npos);
	for (int i = 0; i < npos; i++)
		out[i] = pos[i];
	for (int k = 0; k < nkw; k++) {
		int i;
		for (i = 0; i < nparams; i++)
			if (!strcmp(params[i], kwn[k]))
				break;
		if (i == nparams)
			jx_fail(&r->c, 0, "%s got an unexpected keyword argument '%s'", what, kwn[k]);
		if (out[i].t != JV_MISSING)
			jx_fail(&r->c, 0, "%s got multiple values for argument '%s'", what, kwn[k]);
		out[i] = kwv[k];
	}
}

/* ---- argument helpers ---- */

static bool given(struct jv v)
{
	return v.t != JV_MISSING;
}

static const struct jstr *arg_str(struct jrender *r, const char *what, struct jv v)
{
	jv_check_defined(r, v);
	if (v.t != JV_STR)
		jx_fail(&r->c, 0, "%s: expected a string, got %s", what, jv_type_name(v));
	return v.s;
}

static const struct jstr *arg_str_or_none(struct jrender *r, const char *what, struct jv v)
{
	return !given(v) || v.t == JV_NONE ? NULL : arg_str(r, what, v);
}

static int64_t arg_int(struct jrender *r, const char *what, struct jv v, int64_t dflt)
{
	if (!given(v))
		return dflt;
	jv_check_defined(r, v);
	if (v.t == JV_BOOL)
		return v.b;
	if (v.t != JV_INT)
		jx_fail(&r->c, 0, "%s: '%s' object cannot be interpreted as an integer", what, jv_type_name(v));
	return v.i;
}

/* Python's start/end clamping for str.find and friends, in code points. */
static void clamp_range(struct jrender *r, const char *what, struct jv s, struct jv e, int64_t n, int64_t *a, int64_t *b)
{
	*a = given(s) && s.t != JV_NONE ? arg_int(r, what, s, 0) : 0;
	*b = given(e) && e.t != JV_NONE ? arg_int(r, what, e, n) : n;
	if (*a < 0)
		*a = *a + n < 0 ? 0 : *a + n;
	if (*b < 0)
		*b = *b + n < 0 ? 0 : *b + n;
	if (*b > n)
		*b = n;
}

/* ---- globals ---- */

static struct jv g_range(struct jrender *r, const struct jv *a)
{
	int64_t start = 0, stop, step = 1;
	if (!given(a[1])) {
		stop = arg_int(r, "range", a[0], 0);
	} else {
		start = arg_int(r, "range", a[0], 0);
		stop = arg_int(r, "range", a[1], 0);
		step = arg_int(r, "range", a[2], 1);
	}
	if (!given(a[0]))
		jx_fail(&r->c, 0, "range expected at least 1 argument, got 0");
	if (step == 0)
		jx_fail(&r->c, 0, "range() arg 3 must not be zero");
	int64_t n = 0;
	if (step > 0 && start < stop)
		n = (int64_t)(((__int128)stop - start - 1) / step + 1);
	else if (step < 0 && start > stop)
		n = (int64_t)(((__int128)start - stop - 1) / -(__int128)step + 1);
	if (n > 100000)
		jx_fail(&r->c, 0, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
	struct jv l = jv_list_new(&r->c, JL_RANGE, (size_t)n);
	for (int64_t i = 0; i < n; i++)
		jv_list_push(&r->c, l, jv_int(start + i * step));
	return l;
}

/* dict(mapping_or_pairs, **kwargs) and namespace(...): a new dict. */
static struct jdict *dict_from(struct jrender *r, struct jv m, int nkw, const char **kwn, const struct jv *kwv)
{
	struct jv d = jv_dict_new(&r->c, 0);
	if (given(m)) {
		jv_check_defined(r, m);
		if (m.t == JV_DICT) {
			for (size_t i = 0; i < m.d->n; i++)
				jdict_set(&r->c, d.d, m.d->k[i], m.d->v[i]);
		} else {
			struct jv *items;
			size_t n;
			jv_iter(r, m, &items, &n);
			for (size_t i = 0; i < n; i++) {
				struct jv *kv;
				size_t kn;
				jv_iter(r, items[i], &kv, &kn);
				if (kn != 2)
					jx_fail(&r->c, 0, "dictionary update sequence element #%zu has length %zu; 2 is required", i, kn);
				jdict_set(&r->c, d.d, kv[0], kv[1]);
			}
		}
	}
	for (int k = 0; k < nkw; k++)
		jdict_set(&r->c, d.d, jv_cstr(&r->c, kwn[k]), kwv[k]);
	return d.d;
}

static struct jv g_strftime(struct jrender *r, const struct jstr *fmt)
{
	struct timespec ts;
	if (r->t->now != INT64_MIN) {
		ts.tv_sec = (time_t)r->t->now;
		ts.tv_nsec = 0;
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
	}
	struct tm tm;
	localtime_r(&ts.tv_sec, &tm);
	/* datetime.strftime handles %f, %z and %Z itself (naive: empty), then calls the C strftime. */
	struct jbuf f = {0};
	for (size_t i = 0; i < fmt->n; i++) {
		if (fmt->p[i] == '%' && i + 1 < fmt->n) {
			char c = fmt->p[i + 1];
			if (c == 'f') {
				jbuf_printf(r, &f, "%06ld", (long)(ts.tv_nsec / 1000));
				i++;
				continue;
			}
			if (c == 'z' || c == 'Z') {
				i++;
				continue;
			}
			jbuf_putn(r, &f, fmt->p + i, 2);
			i++;
			continue;
		}
		jbuf_putn(r, &f, fmt->p + i, 1);
	}
	if (!f.n)
		return jv_cstr(&r->c, "");
	size_t cap = f.n * 16 + 256;
	char *out = jx_alloc(&r->c, cap);
	size_t k = strftime(out, cap, f.p, &tm);
	return jv_strn(&r->c, out, k);
}

/* ---- str methods ---- */

static struct jv pad(struct jrender *r, struct jv self, int64_t width, struct jv fill, int how)
{
	uint32_t fc = ' ';
	if (given(fill)) {
		const struct jstr *f = arg_str(r, "fillchar", fill);
		if (f->ncp != 1)
			jx_fail(&r->c, 0, "The fill character must be exactly one character long");
		size_t adv;
		fc = u8_decode(f->p, f->n, &adv);
	}
	int64_t n = (int64_t)self.s->ncp;
	if (width <= n)
		return self;
	if ((uint64_t)width > r->max_output)
		jx_fail(&r->c, 0, "padding wider than the output limit");
	int64_t marg = width - n, left;
	if (how == 0)
		left = marg / 2 + (marg & width & 1);
	else
		left = how == 1 ? 0 : marg;
	char enc[4];
	size_t el = u8_encode(fc, enc);
	struct jbuf b = {0};
	for (int64_t i = 0; i < left; i++)
		jbuf_putn(r, &b, enc, el);
	jbuf_putn(r, &b, self.s->p, self.s->n);
	for (int64_t i = 0; i < marg - left; i++)
		jbuf_putn(r, &b, enc, el);
	return jv_str_buf(&r->c, &b);
}

static bool affix_match(struct jrender *r, struct jv self, struct jv arg, struct jv s, struct jv e, bool end,
			const char *what)
{
	int64_t a, b;
	clamp_range(r, what, s, e, (int64_t)self.s->ncp, &a, &b);
	jv_check_defined(r, arg);
	struct jv *cands = &arg;
	size_t nc = 1;
	if (arg.t == JV_LIST && arg.kind == JL_TUPLE) {
		cands = arg.l->v;
		nc = arg.l->n;
	}
	for (size_t i = 0; i < nc; i++) {
		if (cands[i].t != JV_STR)
			jx_fail(&r->c, 0, "%s first arg must be str or a tuple of str, not %s", what, jv_type_name(cands[i]));
		const struct jstr *p = cands[i].s;
		if (a > b || (int64_t)p->ncp > b - a)
			continue;
		size_t oa = u8_offset(self.s, (size_t)a), ob = u8_offset(self.s, (size_t)b);
		if (end ? !memcmp(self.s->p + ob - p->n, p->p, p->n) : !memcmp(self.s->p + oa, p->p, p->n))
			return true;
	}
	return false;
}

static bool all_chars(const struct jstr *s, int what)
{
	if (!s->n)
		return false;
	for (size_t i = 0; i < s->n;) {
		size_t adv;
		uint32_t cp = u8_decode(s->p + i, s->n - i, &adv);
		bool ok;
		switch (what) {
		case M_ISSPACE: ok = py_isspace(cp); break;
		case M_ISALPHA: ok = py_isalpha(cp); break;
		case M_ISASCII: ok = cp < 0x80; break;
		case M_ISALNUM: ok = cp < 0x80 ? (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')
					       : py_isword(cp); break;
		default: ok = cp >= '0' && cp <= '9'; break;
		}
		if (!ok)
			return false;
		i += adv;
	}
	return true;
}

static bool has_non_ascii(const struct jstr *s)
{
	return s->ncp != s->n;
}

static struct jv str_method(struct jrender *r, int id, struct jv self, const struct jv *a, const char *what)
{
	const struct jstr *s = self.s;
	int64_t x, y;
	if (self.markup && id != M_STARTSWITH && id != M_ENDSWITH && id != M_FIND && id != M_RFIND && id != M_COUNT &&
	    id != M_INDEX && id != M_RINDEX && !(id >= M_ISALPHA && id <= M_ISASCII))
		jx_fail(&r->c, 0, "unsupported: %s on a safe (Markup) string", what);
	switch (id) {
	case M_STARTSWITH: return jv_bool(affix_match(r, self, a[0], a[1], a[2], false, "startswith"));
	case M_ENDSWITH: return jv_bool(affix_match(r, self, a[0], a[1], a[2], true, "endswith"));
	case M_STRIP: return py_strip(r, self, arg_str_or_none(r, what, a[0]), 3);
	case M_LSTRIP: return py_strip(r, self, arg_str_or_none(r, what, a[0]), 1);
	case M_RSTRIP: return py_strip(r, self, arg_str_or_none(r, what, a[0]), 2);
	case M_SPLIT:
	case M_RSPLIT:
		return py_split(r, self, arg_str_or_none(r, what, a[0]), arg_int(r, what, a[1], -1), id == M_RSPLIT);
	case M_SPLITLINES: return py_splitlines(r, self, given(a[0]) && jv_truthy(a[0]));
	case M_REPLACE:
		return py_replace(r, self, arg_str(r, what, a[0]), arg_str(r, what, a[1]), arg_int(r, what, a[2], -1));
	case M_UPPER: return py_upper(r, self);
	case M_LOWER: return py_lower(r, self);
	case M_TITLE: return py_title(r, self);
	case M_CAPITALIZE: return py_capitalize(r, self);
	case M_FIND:
	case M_RFIND:
	case M_INDEX:
	case M_RINDEX: {
		const struct jstr *sub = arg_str(r, what, a[0]);
		clamp_range(r, what, a[1], a[2], (int64_t)s->ncp, &x, &y);
		int64_t k = py_find(s, sub, x, y, id == M_RFIND || id == M_RINDEX);
		if (k < 0 && (id == M_INDEX || id == M_RINDEX))
			jx_fail(&r->c, 0, "substring not found");
		return jv_int(k);
	}
	case M_COUNT: {
		const struct jstr *sub = arg_str(r, what, a[0]);
		clamp_range(r, what, a[1], a[2], (int64_t)s->ncp, &x, &y);
		if (x > y)
			return jv_int(0);
		struct jv part = py_substr(r, self, (size_t)x, (size_t)y);
		return jv_int(py_count(part.s, sub));
	}
	case M_JOIN: {
		struct jv *items;
		size_t n;
		jv_check_defined(r, a[0]);
		jv_iter(r, a[0], &items, &n);
		struct jbuf b = {0};
		for (size_t i = 0; i < n; i++) {
			if (items[i].t != JV_STR)
				jx_fail(&r->c, 0, "sequence item %zu: expected str instance, %s found", i, jv_type_name(items[i]));
			if (i)
				jbuf_putn(r, &b, s->p, s->n);
			jbuf_putn(r, &b, items[i].s->p, items[i].s->n);
		}
		return jv_str_buf(&r->c, &b);
	}
	case M_ISUPPER:
	case M_ISLOWER: return jv_bool(py_is_cased_upper(s, id == M_ISUPPER));
	case M_ISDIGIT:
	case M_ISDECIMAL:
	case M_ISNUMERIC:
		if (has_non_ascii(s))
			jx_fail(&r->c, 0, "unsupported: %s on non-ASCII text", what);
		return jv_bool(all_chars(s, id));
	case M_ISALPHA:
	case M_ISSPACE:
	case M_ISASCII: return jv_bool(all_chars(s, id));
	case M_ISALNUM:
		if (has_non_ascii(s))
			jx_fail(&r->c, 0, "unsupported: %s on non-ASCII text", what);
		return jv_bool(all_chars(s, id));
	case M_ZFILL: {
		int64_t w = arg_int(r, what, a[0], 0), n = (int64_t)s->ncp;
		if (w <= n)
			return self;
		struct jv padded = pad(r, self, w, (struct jv){.t = JV_MISSING}, 2);
		char *p = padded.s->p;
		size_t zeros = (size_t)(w - n);
		memset(p, '0', zeros);
		if (s->n && (s->p[0] == '+' || s->p[0] == '-')) {
			p[0] = s->p[0];
			p[zeros] = '0';
		}
		return padded;
	}
	case M_CENTER: return pad(r, self, arg_int(r, what, a[0], 0), a[1], 0);
	case M_LJUST: return pad(r, self, arg_int(r, what, a[0], 0), a[1], 1);
	case M_RJUST: return pad(r, self, arg_int(r, what, a[0], 0), a[1], 2);
	case M_REMOVEPREFIX:
	case M_REMOVESUFFIX: {
		const struct jstr *p = arg_str(r, what, a[0]);
		if (p->n > s->n)
			return self;
		if (id == M_REMOVEPREFIX && !memcmp(s->p, p->p, p->n))
			return jv_strn(&r->c, s->p + p->n, s->n - p->n);
		if (id == M_REMOVESUFFIX && p->n && !memcmp(s->p + s->n - p->n, p->p, p->n))
			return jv_strn(&r->c, s->p, s->n - p->n);
		return self;
	}
	case M_PARTITION:
	case M_RPARTITION: {
		const struct jstr *sep = arg_str(r, what, a[0]);
		if (!sep->n)
			jx_fail(&r->c, 0, "empty separator");
		int64_t k = py_find(s, sep, 0, (int64_t)s->ncp, id == M_RPARTITION);
		struct jv t = jv_list_new(&r->c, JL_TUPLE, 3);
		struct jv empty = jv_cstr(&r->c, "");
		if (k < 0) {
			jv_list_push(&r->c, t, id == M_PARTITION ? self : empty);
			jv_list_push(&r->c, t, empty);
			jv_list_push(&r->c, t, id == M_PARTITION ? empty : self);
			return t;
		}
		jv_list_push(&r->c, t, py_substr(r, self, 0, (size_t)k));
		jv_list_push(&r->c, t, (struct jv){.t = JV_STR, .s = (struct jstr *)sep});
		jv_list_push(&r->c, t, py_substr(r, self, (size_t)k + sep->ncp, s->ncp));
		return t;
	}
	default: jx_fail(&r->c, 0, "unsupported method %s", what);
	}
}

static struct jv other_method(struct jrender *r, int id, struct jv self, const struct jv *a, int npos,
			      const struct jv *pos, const char *what)
{
	switch (id) {
	case M_GET: {
		jv_check_defined(r, a[0]);
		struct jv k = a[0];
		if (k.t == JV_DICT || (k.t == JV_LIST && k.kind != JL_TUPLE))
			jx_fail(&r->c, 0, "unhashable type: '%s'", jv_type_name(k));
		struct jv *v = jdict_get(r, self.d, k);
		return v ? *v : given(a[1]) ? a[1] : jv_none();
	}
	case M_ITEMS:
	case M_KEYS:
	case M_VALUES: {
		struct jv l = jv_list_new(&r->c, id == M_ITEMS ? JL_ITEMS : id == M_KEYS ? JL_KEYS : JL_VALUES, self.d->n);
		for (size_t i = 0; i < self.d->n; i++)
			jv_list_push(&r->c, l, id == M_ITEMS ? jv_tuple2(&r->c, self.d->k[i], self.d->v[i])
						     : id == M_KEYS ? self.d->k[i] : self.d->v[i]);
		return l;
	}
	case M_COPY:
		if (self.t == JV_DICT)
			return (struct jv){.t = JV_DICT, .d = dict_from(r, self, 0, NULL, NULL)};
		return jeval_binop(r, OP_ADD, self, jv_list_new(&r->c, (enum jl_kind)self.kind, 0));
	case M_LIST_INDEX: {
		int64_t x, y;
		clamp_range(r, what, a[1], a[2], (int64_t)self.l->n, &x, &y);
		for (int64_t i = x; i < y; i++)
			if (jv_eq(self.l->v[i], a[0]))
				return jv_int(i);
		struct jbuf b = {0};
		jv_repr_append(r, &b, a[0]);
		jx_fail(&r->c, 0, "%s is not in list", b.p);
	}
	case M_LIST_COUNT: {
		int64_t k = 0;
		for (size_t i = 0; i < self.l->n; i++)
			k += jv_eq(self.l->v[i], a[0]);
		return jv_int(k);
	}
	case M_CYCLE:
		if (!npos)
			jx_fail(&r->c, 0, "no items for cycling given");
		return pos[self.lp->i % (size_t)npos];
	case M_CHANGED: {
		struct jv now = jv_list_new(&r->c, JL_LIST, (size_t)npos);
		for (int i = 0; i < npos; i++)
			jv_list_push(&r->c, now, pos[i]);
		if (self.lp->changed_init && jv_eq(now, self.lp->last_changed))
			return jv_bool(false);
		self.lp->changed_init = true;
		self.lp->last_changed = now;
		return jv_bool(true);
	}
	default: jx_fail(&r->c, 0, "unsupported method %s", what);
	}
}

struct jv jfunc_call(struct jrender *r, struct jv f, int npos, const struct jv *pos, int nkw, const char **kwn,
		     const struct jv *kwv)
{
	int id = f.fn->id;
	struct jv self = f.fn->self;
	const struct builtin *b = by_id(id);
	if (id == M_UNSUPPORTED)
		jx_fail(&r->c, 0, "unsupported method %s", self.s->p);
	if (id == F_UNSUPPORTED_GLOBAL)
		jx_fail(&r->c, 0, "unsupported global function '%s'", self.s->p);
	char what[96];
	snprintf(what, sizeof(what), "%s%s%s", self.t == JV_NONE ? "" : jv_type_name(self), self.t == JV_NONE ? "" : ".",
		 b->name);
	if (id == F_NAMESPACE || id == F_DICT) {
		if (npos > 1)
			jx_fail(&r->c, 0, "%s expected at most 1 argument, got %d", b->name, npos);
		struct jdict *d = dict_from(r, npos ? pos[0] : (struct jv){.t = JV_MISSING}, nkw, kwn, kwv);
		if (id == F_DICT)
			return (struct jv){.t = JV_DICT, .d = d};
		struct jns *ns = jx_alloc(&r->c, sizeof(*ns));
		ns->d = d;
		return (struct jv){.t = JV_NS, .ns = ns};
	}
	if (b->nparams < 0) {
		if (nkw)
			jx_fail(&r->c, 0, "%s takes no keyword arguments", what);
		return other_method(r, id, self, NULL, npos, pos, what);
	}
	struct jv a[4];
	jargs_bind(r, what, b->nparams, b->params, npos, pos, nkw, kwn, kwv, a);
	if ((id == F_RAISE || id == F_STRFTIME) && !given(a[0]))
		jx_fail(&r->c, 0, "%s() missing 1 required positional argument: '%s'", b->name, id == F_RAISE ? "message" : "fmt");
	switch (id) {
	case F_RANGE: return g_range(r, a);
	case F_RAISE: jx_fail(&r->c, 0, "%s", jv_to_str(r, a[0]).s->p);
	case F_STRFTIME: return g_strftime(r, arg_str(r, what, a[0]));
	default: break;
	}
	/* Required arguments of methods. */
	static const int required[][2] = {{M_STARTSWITH, 1}, {M_ENDSWITH, 1}, {M_REPLACE, 2}, {M_FIND, 1}, {M_RFIND, 1},
					  {M_INDEX, 1}, {M_RINDEX, 1}, {M_COUNT, 1}, {M_JOIN, 1}, {M_ZFILL, 1},
					  {M_CENTER, 1}, {M_LJUST, 1}, {M_RJUST, 1}, {M_REMOVEPREFIX, 1},
					  {M_REMOVESUFFIX, 1}, {M_PARTITION, 1}, {M_RPARTITION, 1}, {M_GET, 1},
					  {M_LIST_INDEX, 1}, {M_LIST_COUNT, 1}};
	for (size_t k = 0; k < sizeof(required) / sizeof(required[0]); k++)
		if (required[k][0] == id)
			for (int i = 0; i < required[k][1]; i++)
				if (!given(a[i]))
					jx_fail(&r->c, 0, "%s missing required argument '%s'", what, b->params[i]);
	if (self.t == JV_STR)
		return str_method(r, id, self, a, what);
	return other_method(r, id, self, a, npos, pos, what);
}
