/*
 * kv_store.cu: writes a range's keys and values (f32 rows, already rotated when kv_fmt_rotated) into a layer's
 * KV pages (cuda_kv_store), byte for byte what kernels/cpu's cpu_kv_store writes (formats and page layout in
 * src/kernels/kv_pages.h; keys and values each in their pool's row format). Token t of part p goes to page
 * table row part_row[p] at position pos[t]: physical page pages[row * max_pages + pos / page], row pos % page
 * of that page.
 *
 * One warp per group of 32 values of one (token, kv head, pool), lane i holding value i. F16: each lane
 * rounds its value to nearest even. Q8/Q4/Q5: the group's amax (Q8) or value of largest magnitude (Q4/Q5, the
 * lowest index on ties, sign kept) by shuffles; the scale is divided in f32 and rounded to f16 first, and
 * each q comes from the rounded scale by an exact (IEEE) division rounded half to even, as the CPU's
 * nearbyintf; Q5's fifth bits are one ballot. A4/A5 (affine): the group's minimum and maximum by shuffles,
 * m = f16(min), d = f16((max - m) / (2^bits - 1)) by an exact division, codes round((x - m) / d). A
 * position whose page is not mapped (-1) is not written.
 */
#include "kernels/cuda/cuda_common.cuh"

struct kvs_args {
	uint8_t *pool[2];      /* keys, values */
	const float *src[2];   /* [T, Hkv*Dh] */
	const int *tok_part, *part_row, *pos, *pages;
	int T, Hkv, Dh, page, max_pages, qrow[2], srow[2]; /* [pool] */
	size_t page_bytes[2];
};

/* Q4/Q5 (ggml's Q4_0/Q5_0 rule): lane's code of x in a group whose scale d = m / -HALF, m the value of
 * largest magnitude (the lowest lane on ties); *dh gets the f16 scale. */
template <int HALF> static __device__ __forceinline__ int kvs_code(float x, __half *dh)
{
	float m = x, am = fabsf(x);
	int mi = threadIdx.x & 31;
	for (int o = 16; o > 0; o >>= 1) {
		float om = __shfl_xor_sync(0xffffffffu, m, o), oam = fabsf(om);
		int oi = __shfl_xor_sync(0xffffffffu, mi, o);
		if (oam > am || (oam == am && oi < mi)) {
			m = om;
			am = oam;
			mi = oi;
		}
	}
	*dh = __float2half_rn(__fdiv_rn(m, -(float)HALF));
	float d = __half2float(*dh);
	return d == 0.0f ? HALF : min(max(__float2int_rn(__fdiv_rn(x, d)) + HALF, 0), 2 * HALF - 1);
}

/* Group gi of one row in row format FMT: lane's value x into the row's q part qr and s part sr */
template <int FMT> static __device__ __forceinline__ void kvs_group(float x, uint8_t *qr, uint8_t *sr, int gi, int Dh)
{
	int lane = threadIdx.x & 31;
	if (FMT == KV_F16) {
		((__half *)qr)[gi * 32 + lane] = __float2half_rn(x);
	} else if (FMT == KV_Q8) {
		float amax = fabsf(x);
		for (int o = 16; o > 0; o >>= 1)
			amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
		__half dh = __float2half_rn(__fdiv_rn(amax, 127.0f));
		float d = __half2float(dh);
		int q = d == 0.0f ? 0 : min(max(__float2int_rn(__fdiv_rn(x, d)), -127), 127);
		((int8_t *)qr)[gi * 32 + lane] = (int8_t)q;
		if (lane == 0)
			((__half *)sr)[gi] = dh;
	} else if (FMT == KV_A4 || FMT == KV_A5) {
		constexpr int TOP = FMT == KV_A5 ? 31 : 15;
		float lo = x, hi = x;
		for (int o = 16; o > 0; o >>= 1) {
			lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, o));
			hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, o));
		}
		__half mh = __float2half_rn(lo);
		float m = __half2float(mh);
		__half dh = __float2half_rn(__fdiv_rn(__fsub_rn(hi, m), (float)TOP));
		float d = __half2float(dh);
		int q = d == 0.0f ? 0 : min(max(__float2int_rn(__fdiv_rn(__fsub_rn(x, m), d)), 0), TOP);
		int qh = __shfl_down_sync(0xffffffffu, q, 16);
		if (lane < 16)
			qr[gi * 16 + lane] = (uint8_t)((q & 15) | (qh & 15) << 4);
		if (lane == 0) {
			((__half *)sr)[gi] = dh;
			((__half *)sr)[Dh / 32 + gi] = mh;
		}
		if (FMT == KV_A5) { /* the fifth bits: 4 bytes per group after the row's steps and minima */
			uint32_t bits = __ballot_sync(0xffffffffu, q >> 4 & 1);
			if (lane < 4)
				sr[Dh / 32 * 4 + gi * 4 + lane] = (uint8_t)(bits >> 8 * lane);
		}
	} else {
		__half dh;
		int q = kvs_code<FMT == KV_Q5 ? 16 : 8>(x, &dh);
		int hi = __shfl_down_sync(0xffffffffu, q, 16);
		if (lane < 16)
			qr[gi * 16 + lane] = (uint8_t)((q & 15) | (hi & 15) << 4);
		if (lane == 0)
			((__half *)sr)[gi] = dh;
		if (FMT == KV_Q5) { /* the fifth bits: 4 bytes per group after the row's scales */
			uint32_t bits = __ballot_sync(0xffffffffu, q >> 4 & 1);
			if (lane < 4)
				sr[Dh / 32 * 2 + gi * 4 + lane] = (uint8_t)(bits >> 8 * lane);
		}
	}
}

/* keys in row format KF, values in VF */
template <int KF, int VF> static __global__ void k_kv_store(const struct kvs_args a)
{
	int gpr = a.Dh / 32;
	int64_t groups = 2 * (int64_t)a.T * a.Hkv * gpr, warps = (int64_t)gridDim.x * (blockDim.x >> 5);
	for (int64_t w = blockIdx.x * (int64_t)(blockDim.x >> 5) + (threadIdx.x >> 5); w < groups; w += warps) {
		int gi = (int)(w % gpr), h = (int)(w / gpr % a.Hkv);
		int64_t tk = w / gpr / a.Hkv;
		int t = (int)(tk / 2), kv = (int)(tk % 2);
		float x = a.src[kv][((int64_t)t * a.Hkv + h) * a.Dh + gi * 32 + (threadIdx.x & 31)];
		int p = a.pos[t], lp = p / a.page, r = p % a.page;
		int pid = lp < a.max_pages ? a.pages[(size_t)a.part_row[a.tok_part[t]] * a.max_pages + lp] : -1;
		if (pid < 0)
			continue;
		uint8_t *pg = a.pool[kv] + (size_t)pid * a.page_bytes[kv];
		uint8_t *qr = pg + ((size_t)h * a.page + r) * a.qrow[kv];
		uint8_t *sr = pg + (size_t)a.Hkv * a.page * a.qrow[kv] + ((size_t)h * a.page + r) * a.srow[kv];
		if (kv)
			kvs_group<VF>(x, qr, sr, gi, a.Dh);
		else
			kvs_group<KF>(x, qr, sr, gi, a.Dh);
	}
}

/* the kernel of each KV format the GPU takes (src/kernels/kv_pages.h: KV_FMT_LIST) */
typedef void (*kvs_kernel)(const struct kvs_args a);
#define KVS_ROW(id, k, key, val, cuda) KV_IF_##cuda((k_kv_store<KV_##key, KV_##val>), nullptr),
static const kvs_kernel kvs_by_fmt[KV_FMT_COUNT] = {KV_FMT_LIST(KVS_ROW)};
#undef KVS_ROW

extern "C" int cuda_kv_store(struct cuda_ctx *c, const struct kv_layer *kv, const float *k, const float *v,
			     const struct kv_batch *bt)
{
	CUDA_ARG_CHECK(c, kv->fmt >= 0 && kv->fmt < KV_FMT_COUNT && kv_fmt_on_cuda(kv->fmt),
		       "cuda_kv_store: KV format %d (F32 is CPU only)", kv->fmt);
	CUDA_ARG_CHECK(c, kv->Dh >= 32 && kv->Dh % 32 == 0 && kv->Hkv > 0,
		       "cuda_kv_store: head dim %d (a multiple of 32), Hkv = %d", kv->Dh, kv->Hkv);
	CUDA_ARG_CHECK(c, kv->page > 0 && kv->page % KV_PAGE_ALIGN == 0, "cuda_kv_store: page of %d positions "
		       "(a multiple of %d)", kv->page, KV_PAGE_ALIGN);
	CUDA_ARG_CHECK(c, bt->T >= 0 && bt->max_pages > 0, "cuda_kv_store: T = %d, max_pages = %d", bt->T,
		       bt->max_pages);
	if (bt->T == 0)
		return 0;
	struct kvs_args a = {{(uint8_t *)kv->k, (uint8_t *)kv->v}, {k, v}, bt->tok_part, bt->part_row, bt->pos,
			     bt->pages, bt->T, kv->Hkv, kv->Dh, kv->page, bt->max_pages, {0, 0}, {0, 0}, {0, 0}};
	for (int i = 0; i < 2; i++) {
		int rf = kv_pool_fmt(kv->fmt, i);
		a.qrow[i] = kv_qrow_bytes(rf, kv->Dh);
		a.srow[i] = kv_srow_bytes(rf, kv->Dh);
		a.page_bytes[i] = kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page);
	}
	/* 8 warps (groups) per block of 256 threads, enough blocks to fill the GPU a few times over */
	int64_t groups = 2 * (int64_t)bt->T * kv->Hkv * (kv->Dh / 32), want = (groups + 7) / 8,
		cap = (int64_t)(c->n_sm > 0 ? c->n_sm : 1) * 16;
	unsigned blocks = (unsigned)(want < cap ? want : cap);
	kvs_by_fmt[kv->fmt]<<<blocks, 256, 0, cuda_stream_of(c)>>>(a);
	CUDA_LAUNCH_CHECK(c, "k_kv_store");
	return 0;
}

/* The accepted path of a token tree (src/kernels/kv_pages.h, kv_rows_move): row from[i] to row to[i] of both
 * pools, as page-pool row indices (physical page * page + position % page). One block walks i in order (a
 * later move may read what an earlier one wrote past), its threads sharing each row's bytes. */
struct kvm_args {
	uint8_t *pool[2];
	int n, Hkv, page, qrow[2], srow[2]; /* [pool] */
	size_t page_bytes[2];
	int from[KV_TREE_MAX], to[KV_TREE_MAX];
};

static __global__ void k_kv_move(const struct kvm_args a)
{
	int per0 = a.Hkv * (a.qrow[0] + a.srow[0]), per = per0 + a.Hkv * (a.qrow[1] + a.srow[1]);
	for (int i = 0; i < a.n; i++) {
		for (int e = threadIdx.x; e < per; e += blockDim.x) {
			int pool = e >= per0, x = pool ? e - per0 : e, qrow = a.qrow[pool], srow = a.srow[pool], h, b;
			size_t pb = a.page_bytes[pool], fp = (size_t)(a.from[i] / a.page) * pb,
			       tp = (size_t)(a.to[i] / a.page) * pb;
			size_t fr = (size_t)(a.from[i] % a.page), tr = (size_t)(a.to[i] % a.page);
			size_t sofs = (size_t)a.Hkv * a.page * qrow;
			uint8_t *base = a.pool[pool];
			if (x < a.Hkv * qrow) {
				h = x / qrow;
				b = x % qrow;
				base[tp + ((size_t)h * a.page + tr) * qrow + b] = base[fp + ((size_t)h * a.page + fr) * qrow + b];
			} else {
				x -= a.Hkv * qrow;
				h = x / srow;
				b = x % srow;
				base[tp + sofs + ((size_t)h * a.page + tr) * srow + b] =
					base[fp + sofs + ((size_t)h * a.page + fr) * srow + b];
			}
		}
		__syncthreads();
	}
}

extern "C" int cuda_kv_move(struct cuda_ctx *c, const struct kv_layer *kv, const int *pages, int n, const int *from,
			    const int *to)
{
	CUDA_ARG_CHECK(c, n >= 0 && n <= KV_TREE_MAX, "cuda_kv_move: %d rows (at most %d)", n, KV_TREE_MAX);
	struct kvm_args a;
	a.pool[0] = (uint8_t *)kv->k;
	a.pool[1] = (uint8_t *)kv->v;
	a.Hkv = kv->Hkv;
	a.page = kv->page;
	for (int i = 0; i < 2; i++) {
		int rf = kv_pool_fmt(kv->fmt, i);
		a.qrow[i] = kv_qrow_bytes(rf, kv->Dh);
		a.srow[i] = kv_srow_bytes(rf, kv->Dh);
		a.page_bytes[i] = kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page);
	}
	a.n = 0;
	for (int i = 0; i < n; i++) {
		if (from[i] == to[i])
			continue;
		int fp = pages[from[i] / kv->page], tp = pages[to[i] / kv->page];
		CUDA_ARG_CHECK(c, fp >= 0 && tp >= 0, "cuda_kv_move: position %d or %d unmapped", from[i], to[i]);
		a.from[a.n] = fp * kv->page + from[i] % kv->page;
		a.to[a.n++] = tp * kv->page + to[i] % kv->page;
	}
	if (a.n == 0)
		return 0;
	k_kv_move<<<1, 256, 0, cuda_stream_of(c)>>>(a);
	CUDA_LAUNCH_CHECK(c, "k_kv_move");
	return 0;
}
