/*
 * qdot_ktile_simd.h: prefill tiles of the K-quants Q4_K, Q5_K, Q6_K (T >= 2 tokens), included by qdot_simd.h
 * (whose dot_u8s8/dot_i16 and helpers it uses), so built for AVX2 and for AVX-512 VNNI.
 *
 * Lanes are rows, not values. 8 rows at a time, KT_CHUNK 256-blocks at a time, the rows' blocks are decoded
 * (scales and mins unpacked, Q5_K's high bits and Q6_K's 2-bit halves joined) and laid out in a per-call
 * scratch that stays in L1 (struct kt_block): quad j of the block (values 4j..4j+3) is one vector holding row r's
 * 4 codes in 32-bit lane r, the sub-block scales and mins likewise one int32 per row. Every token then meets
 * them with its 4 codes broadcast: one integer dot (VNNI: vpdpbusd; AVX2: maddubs, then madd by the scale) gives
 * all 8 rows' partial sums, and the block's scale, mins and conversion to f32 are one vector operation per token
 * for the 8 rows; the outputs of a token are 8 contiguous floats (y is [T][N]), stored without a horizontal sum.
 * The decode is done once per call for all its tokens (up to QTILE_MAX_T): GGUF blocks are read in place, no
 * copy of the model in another layout (the RAM tier, the streamer's buffers and the GPU upload keep one format).
 *
 * The result is qdot.h's: per block the exact int32 I_b = sum_g c_g sum q_i a_i (Q6_K with codes q + 32 and
 * - 32 sum_g c_g S_g, as the row kernels), M_b = sum_g m_g S_g, and per row and token two f32 chains in block order,
 * acc + f32(d dx) I_b and acc_m + f32(dmin dx) M_b, out = acc - acc_m: the same for every T and token grouping.
 */

#define KT_ROWS 8
#define KT_CHUNK 4 /* 256-blocks decoded at once: 4 x 2.9 KiB of scratch */
#define KT_TG 8    /* tokens per pass over the scratch (their chains stay in registers) */
#define KT_UNROLL _Pragma("GCC unroll 8") /* whole token loops: their arrays then live in registers */

/* One 256-block of KT_ROWS rows, row r in 32-bit lane r of every vector */
struct kt_block {
	__m256i q[64];  /* unsigned codes (Q6_K: q + 32), quad j = values 4j..4j+3 */
	__m256i sc[16]; /* scale of sub-block s (Q4_K/Q5_K: 8 of 32 values; Q6_K: 16 of 16); VNNI: int32, AVX2:
			 * the int16 twice (a madd's pair) */
	__m256i mp[8];  /* int16 pairs against the token's 16-sums (S_2j, S_2j+1): Q4_K/Q5_K (m_j, m_j), Q6_K
			 * (sc_2j, sc_2j+1) */
	__m256 d, dmin;
};

/* 8 vectors of 8 int32 transposed: out[j] lane r = in[r] lane j */
AI void kt_transpose8(const __m256i *in, __m256i *out)
{
	__m256i t[8], u[8];
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
		t[2 * i + 1] = _mm256_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
	}
	for (int i = 0; i < 2; i++) {
		u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
		u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
	}
	for (int j = 0; j < 4; j++) {
		out[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
		out[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
	}
}

AI int32_t kt_scale(int s)
{
#ifdef __AVX512VNNI__
	return s;
#else
	return (int32_t)((uint32_t)(uint16_t)s * 0x10001u);
#endif
}

AI int32_t kt_pair(int lo, int hi)
{
	return (int32_t)((uint32_t)(uint16_t)lo | (uint32_t)(uint16_t)hi << 16);
}

/* Block i of rows 0..KT_ROWS-1 from w (rows past nr repeat the last) into k */
AI void kt_unpack(int fmt, const uint8_t *w, size_t rb, int nr, int i, struct kt_block *k)
{
	_Alignas(32) uint8_t codes[KT_ROWS][QK_K];
	int32_t *sc = (int32_t *)k->sc, *mp = (int32_t *)k->mp;
	float *d = (float *)&k->d, *dmin = (float *)&k->dmin;
	const __m256i m15 = _mm256_set1_epi8(15), m48 = _mm256_set1_epi8(48);
	for (int r = 0; r < KT_ROWS; r++) {
		const uint8_t *p = w + (size_t)(r < nr ? r : nr - 1) * rb;
		if (fmt == WFMT_Q6_K) {
			const struct block_q6_K *b = (const struct block_q6_K *)p + i;
			for (int h = 0; h < 2; h++) {
				__m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
				__m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
				__m256i hv = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
				__m256i *c = (__m256i *)(codes[r] + 128 * h);
				_mm256_store_si256(c, _mm256_or_si256(_mm256_and_si256(l0, m15),
								      _mm256_and_si256(_mm256_slli_epi16(hv, 4), m48)));
				_mm256_store_si256(c + 1, _mm256_or_si256(_mm256_and_si256(l1, m15),
									  _mm256_and_si256(_mm256_slli_epi16(hv, 2), m48)));
				_mm256_store_si256(c + 2, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m15),
									  _mm256_and_si256(hv, m48)));
				_mm256_store_si256(c + 3, _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
									  _mm256_and_si256(_mm256_srli_epi16(hv, 2), m48)));
			}
			for (int s = 0; s < 16; s++)
				sc[8 * s + r] = kt_scale(b->scales[s]);
			for (int j = 0; j < 8; j++)
				mp[8 * j + r] = kt_pair(b->scales[2 * j], b->scales[2 * j + 1]);
			d[r] = ld_f16(&b->d);
			dmin[r] = 0;
		} else {
			bool q5 = fmt == WFMT_Q5_K;
			const uint8_t *blk = p + (size_t)i * (q5 ? sizeof(struct block_q5_K) : sizeof(struct block_q4_K));
			const uint8_t *qs = blk + (q5 ? 48 : 16);
			__m256i hb = q5 ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
			for (int c = 0; c < 4; c++) {
				__m256i lo, hi;
				k45_chunk(q5, qs, c, &hb, &lo, &hi);
				_mm256_store_si256((__m256i *)(codes[r] + 64 * c), lo);
				_mm256_store_si256((__m256i *)(codes[r] + 64 * c + 32), hi);
			}
			for (int j = 0; j < 8; j++) {
				uint8_t s, m;
				k_scale_min(j, blk + 4, &s, &m);
				sc[8 * j + r] = kt_scale(s);
				mp[8 * j + r] = kt_pair(m, m);
			}
			d[r] = ld_f16(blk);
			dmin[r] = ld_f16(blk + 2);
		}
	}
	for (int g = 0; g < 8; g++) {
		__m256i in[KT_ROWS];
		for (int r = 0; r < KT_ROWS; r++)
			in[r] = _mm256_load_si256((const __m256i *)(codes[r] + 32 * g));
		kt_transpose8(in, k->q + 8 * g);
	}
}

AI __m256i kt_bcast4(const int8_t *a)
{
	int32_t v;
	memcpy(&v, a, 4);
	return _mm256_set1_epi32(v);
}

/* TG tokens from t0 over the decoded blocks k[0..nb) (blocks i0.. of the row): acc[2t] the scale chains, acc[2t + 1]
 * the mins' (Q6_K: unused), set on the first chunk */
AI void kt_tokens(int fmt, int TG, const struct kt_block *k, int nb, int i0, const struct cpu_xq *xq, int t0,
		  __m256 *acc, bool first)
{
	int K = xq->K, nsb = K / QK_K;
	bool q6 = fmt == WFMT_Q6_K;
	int NS = q6 ? 16 : 8, QPS = 64 / NS; /* sub-blocks, quads per sub-block */
	__m256 fa[KT_TG], ma[KT_TG];
	KT_UNROLL for (int t = 0; t < TG; t++) {
		fa[t] = first ? _mm256_setzero_ps() : acc[2 * t];
		ma[t] = first ? _mm256_setzero_ps() : acc[2 * t + 1];
	}
	for (int b = 0; b < nb; b++) {
		const struct kt_block *kb = &k[b];
		int i = i0 + b;
		const int8_t *a0 = xq->q + (size_t)t0 * (size_t)K + (size_t)QK_K * (size_t)i;
		__m256i I[KT_TG];
		KT_UNROLL for (int t = 0; t < TG; t++)
			I[t] = _mm256_setzero_si256();
		for (int s = 0; s < NS; s++) {
#ifdef __AVX512VNNI__
			__m256i part[KT_TG];
			KT_UNROLL for (int t = 0; t < TG; t++)
				part[t] = _mm256_setzero_si256();
			KT_UNROLL for (int j = 0; j < QPS; j++) {
				__m256i wq = kb->q[QPS * s + j];
				KT_UNROLL for (int t = 0; t < TG; t++)
					part[t] = _mm256_dpbusd_epi32(part[t], wq,
								      kt_bcast4(a0 + (size_t)t * (size_t)K + 4 * (QPS * s + j)));
			}
			KT_UNROLL for (int t = 0; t < TG; t++) {
				__m256i p = _mm256_mullo_epi32(part[t], kb->sc[s]);
				I[t] = _mm256_add_epi32(I[t], p);
			}
#else
			__m256i scs = kb->sc[s];
			KT_UNROLL for (int j = 0; j < QPS; j++) {
				__m256i wq = kb->q[QPS * s + j];
				KT_UNROLL for (int t = 0; t < TG; t++) {
					__m256i p16 = _mm256_maddubs_epi16(
						wq, kt_bcast4(a0 + (size_t)t * (size_t)K + 4 * (QPS * s + j)));
					I[t] = dot_i16(I[t], p16, scs);
				}
			}
#endif
		}
		KT_UNROLL for (int t = 0; t < TG; t++) {
			size_t row = (size_t)(t0 + t);
			const int16_t *s16 = xq->s + row * (size_t)(K / 16) + 16 * (size_t)i;
			__m256i M = _mm256_madd_epi16(kb->mp[0], kt_bcast4((const int8_t *)s16));
			UNROLL for (int j = 1; j < 8; j++)
				M = dot_i16(M, kb->mp[j], kt_bcast4((const int8_t *)(s16 + 2 * j)));
			__m256 dx = _mm256_set1_ps(xq->d[row * (size_t)nsb + (size_t)i]);
			if (q6) {
				I[t] = _mm256_sub_epi32(I[t], _mm256_slli_epi32(M, 5));
			} else {
				ma[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(M), _mm256_mul_ps(kb->dmin, dx), ma[t]);
			}
			fa[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(I[t]), _mm256_mul_ps(kb->d, dx), fa[t]);
		}
	}
	KT_UNROLL for (int t = 0; t < TG; t++) {
		acc[2 * t] = fa[t];
		acc[2 * t + 1] = ma[t];
	}
}

/* rows rows from w, T tokens (1..QTILE_MAX_T) from t0: y[t * ldy + r] */
AI void kt_rows(int fmt, const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T, float *y,
		int64_t ldy)
{
	struct kt_block k[KT_CHUNK];
	__m256 acc[2 * QTILE_MAX_T];
	int nsb = xq->K / QK_K;
	for (int r0 = 0; r0 < rows; r0 += KT_ROWS) {
		int nr = rows - r0 < KT_ROWS ? rows - r0 : KT_ROWS;
		const uint8_t *wr = (const uint8_t *)w + (size_t)r0 * rb;
		/* the next group's rows (contiguous) into L2 while this one computes: the hardware prefetcher
		 * does not see 8 short row streams coming (a fifth of the time went to waiting for them) */
		int nn = rows - r0 - nr < KT_ROWS ? rows - r0 - nr : KT_ROWS;
		for (size_t o = 0; o < (size_t)nn * rb; o += 64)
			_mm_prefetch((const char *)wr + (size_t)nr * rb + o, _MM_HINT_T1);
		for (int i0 = 0; i0 < nsb; i0 += KT_CHUNK) {
			int nb = nsb - i0 < KT_CHUNK ? nsb - i0 : KT_CHUNK;
			for (int b = 0; b < nb; b++)
				kt_unpack(fmt, wr, rb, nr, i0 + b, &k[b]);
			for (int t = 0; t < T;) {
				int n = T - t >= KT_TG ? KT_TG : T - t >= 4 ? 4 : T - t >= 2 ? 2 : 1;
				switch (n) {
				case KT_TG: kt_tokens(fmt, KT_TG, k, nb, i0, xq, t0 + t, acc + 2 * t, i0 == 0); break;
				case 4: kt_tokens(fmt, 4, k, nb, i0, xq, t0 + t, acc + 2 * t, i0 == 0); break;
				case 2: kt_tokens(fmt, 2, k, nb, i0, xq, t0 + t, acc + 2 * t, i0 == 0); break;
				default: kt_tokens(fmt, 1, k, nb, i0, xq, t0 + t, acc + 2 * t, i0 == 0); break;
				}
				t += n;
			}
		}
		for (int t = 0; t < T; t++) {
			__m256 o = _mm256_sub_ps(acc[2 * t], acc[2 * t + 1]);
			float *yt = y + (size_t)t * (size_t)ldy + (size_t)r0;
			if (nr == KT_ROWS) {
				_mm256_storeu_ps(yt, o);
			} else {
				float tmp[KT_ROWS];
				_mm256_storeu_ps(tmp, o);
				memcpy(yt, tmp, sizeof(float) * (size_t)nr);
			}
		}
	}
}

static void qtile_q4_k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T, float *y,
		       int64_t ldy)
{
	kt_rows(WFMT_Q4_K, w, rb, rows, xq, t0, T, y, ldy);
}

static void qtile_q5_k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T, float *y,
		       int64_t ldy)
{
	kt_rows(WFMT_Q5_K, w, rb, rows, xq, t0, T, y, ldy);
}

static void qtile_q6_k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T, float *y,
		       int64_t ldy)
{
	kt_rows(WFMT_Q6_K, w, rb, rows, xq, t0, T, y, ldy);
}

cpu_qdot_fn QTILE_FIND(int fmt)
{
	return fmt == WFMT_Q4_K ? qtile_q4_k : fmt == WFMT_Q5_K ? qtile_q5_k : fmt == WFMT_Q6_K ? qtile_q6_k : NULL;
}
