/* One-pass statistics of a float32 tensor, for nnprobe.probes.

   NumPy needs one pass over a tensor per statistic (sum, sum of squares, min, max, a count),
   and at every training step those passes cost more than the statistics are worth. Here all
   the statistics a probe records come out of one read, eight lanes at a time (AVX2).

   Accuracy: each lane adds at most BLOCK values in float32 before the partial sums are moved
   into float64 accumulators, so a sum is within ~BLOCK ulp of the sum of |x| (the same order
   as NumPy's pairwise summation); min, max and the counts are exact.

   NaN and infinities get no special treatment: a non-finite entry makes the sum of squares
   non-finite, and the caller then takes NumPy's exact slow path (probes._slow).

   Only float32 and only x86-64 with AVX2 (checked at run time): everything else, and any
   machine where this file does not compile (it is an optional extension), uses NumPy passes
   that give the same numbers. tests/test_probes.py runs both against naive references. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2_KERNEL 1
#include <immintrin.h>
#endif

/* What one pass found; the fields after `zeros` only when `signs` was asked for. */
typedef struct {
    double sum, sumsq, min, max;
    int64_t zeros;
    double pos_sum, pos_sumsq; /* of max(x, 0): a ReLU's output, without reading it */
    int64_t positives, saturated, dead;
} Stats;

/* The fingerprint of a buffer: NH, the multilinear hash of UMAC, over its 32-bit words w with keys
   k made from their positions: the sum, modulo 2^64, of (w[2j] + k[2j]) * (w[2j+1] + k[2j+1]) with
   the additions modulo 2^32 and k[i] = i * FP_KEY + FP_OFFSET. One 32 x 32 -> 64-bit product per two
   words keeps it at the speed of the read. Integer arithmetic makes it exact in any order of
   summation; the position keys make a permutation show, the products a negation or a mask written
   over the values. nnprobe.probes.changes computes the same number with NumPy where this kernel is
   not built. */
#define FP_KEY 0x9E3779B1u
#define FP_OFFSET 0x7F4A7C15u

static inline uint64_t
fp_pair(uint32_t w0, uint32_t w1, uint32_t i)
{
    uint32_t a = w0 + i * FP_KEY + FP_OFFSET, b = w1 + (i + 1) * FP_KEY + FP_OFFSET;
    return (uint64_t)a * b;
}

#ifdef HAVE_AVX2_KERNEL

#define BLOCK 16 /* float32 additions per lane before a flush into float64 */

/* Accumulators of one pass; two sets run side by side so that no add waits for the previous one. */
typedef struct {
    __m256 s, q, ps, pq, lo, hi;
    __m256i nz, np, ns;
} Lanes;

__attribute__((target("avx2,fma"))) static inline void
lanes_init(Lanes *a)
{
    a->s = a->q = a->ps = a->pq = _mm256_setzero_ps();
    a->lo = _mm256_set1_ps(HUGE_VALF);
    a->hi = _mm256_set1_ps(-HUGE_VALF);
    a->nz = a->np = a->ns = _mm256_setzero_si256();
}

/* One vector into one set. A true comparison is all ones, -1 as an integer: subtracting it counts.
   With signs the zero count is left out (it follows from the positives where it is needed) so that
   one set of accumulators fits in the sixteen vector registers. */
__attribute__((target("avx2,fma"))) static inline void
lanes_add(Lanes *a, __m256 v, int signs, int sat_on, __m256 vsat)
{
    const __m256 zero = _mm256_setzero_ps();
    a->s = _mm256_add_ps(a->s, v);
    a->q = _mm256_add_ps(a->q, _mm256_mul_ps(v, v));
    a->lo = _mm256_min_ps(a->lo, v);
    a->hi = _mm256_max_ps(a->hi, v);
    if (!signs) {
        a->nz = _mm256_sub_epi32(a->nz, _mm256_castps_si256(_mm256_cmp_ps(v, zero, _CMP_EQ_OQ)));
        return;
    }
    __m256 gt = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
    __m256 pv = _mm256_and_ps(v, gt);
    a->ps = _mm256_add_ps(a->ps, pv);
    a->pq = _mm256_add_ps(a->pq, _mm256_mul_ps(pv, pv));
    a->np = _mm256_sub_epi32(a->np, _mm256_castps_si256(gt));
    if (!sat_on) /* a ReLU layer: no saturation to count, three operations fewer */
        return;
    __m256 absv = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    a->ns = _mm256_sub_epi32(a->ns, _mm256_castps_si256(_mm256_cmp_ps(absv, vsat, _CMP_GT_OQ)));
}

/* Both sets' float sums into the float64 totals, and their float sums reset. */
__attribute__((target("avx2,fma"))) static inline void
lanes_flush(Lanes *a, Lanes *b, __m256d tot[8], int signs)
{
    __m256 *fa[4] = {&a->s, &a->q, &a->ps, &a->pq}, *fb[4] = {&b->s, &b->q, &b->ps, &b->pq};
    for (int k = 0; k < (signs ? 4 : 2); k++) {
        __m256 both = _mm256_add_ps(*fa[k], *fb[k]);
        tot[2 * k] = _mm256_add_pd(tot[2 * k], _mm256_cvtps_pd(_mm256_castps256_ps128(both)));
        tot[2 * k + 1] = _mm256_add_pd(tot[2 * k + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(both, 1)));
        *fa[k] = *fb[k] = _mm256_setzero_ps();
    }
}

__attribute__((target("avx2,fma"))) static inline int64_t
hsum_epi32(__m256i c)
{
    int32_t v[8];
    int64_t s = 0;
    _mm256_storeu_si256((__m256i *)v, c);
    for (int k = 0; k < 8; k++)
        s += v[k];
    return s;
}

/* The four float64 totals lanes_flush keeps (s, q, ps, pq; two halves of four lanes each), summed. */
__attribute__((target("avx2,fma"))) static inline void
totals_sum(const __m256d tot[8], double sums[4])
{
    double t[8][4];
    for (int k = 0; k < 8; k++)
        _mm256_storeu_pd(t[k], tot[k]);
    for (int k = 0; k < 4; k++) {
        sums[k] = 0.0;
        for (int j = 0; j < 4; j++)
            sums[k] += t[2 * k][j] + t[2 * k + 1][j];
    }
}

/* Two sets' lane minima and maxima folded into *mn and *mx (untouched lanes hold +-inf, which fmin
   and fmax ignore). */
__attribute__((target("avx2,fma"))) static inline void
fold_extremes(__m256 alo, __m256 ahi, __m256 blo, __m256 bhi, double *mn, double *mx)
{
    float l8[8], h8[8], l8b[8], h8b[8];
    _mm256_storeu_ps(l8, alo);
    _mm256_storeu_ps(h8, ahi);
    _mm256_storeu_ps(l8b, blo);
    _mm256_storeu_ps(h8b, bhi);
    for (int k = 0; k < 8; k++) {
        *mn = fmin(*mn, fmin(l8[k], l8b[k]));
        *mx = fmax(*mx, fmax(h8[k], h8b[k]));
    }
}

/* signs == 0: sum, sum of squares, min, max, zeros. signs == 1: also the sum and sum of squares
   of max(x, 0), the count of x > 0 and the count of |x| > sat, and when `colmax` is given (rows of
   `cols` entries, a multiple of 8) the running column maximum, so that the dead units need no
   second read. */
__attribute__((target("avx2,fma"))) static void
pass_avx2(const float *x, Py_ssize_t n, int signs, float sat, float *colmax, Py_ssize_t cols, Stats *out)
{
    Py_ssize_t j = 0; /* the column of x[i] when colmax is given */
    const __m256 vsat = _mm256_set1_ps(sat);
    const int sat_on = !isinf(sat);
    Lanes a, b;
    lanes_init(&a);
    lanes_init(&b);
    __m256d tot[8];
    for (int k = 0; k < 8; k++)
        tot[k] = _mm256_setzero_pd();
    int64_t zeros = 0, positives = 0, saturated = 0;
    int32_t blocks = 0;
    Py_ssize_t i = 0;
    while (i + 16 * BLOCK <= n) {
        if (signs) { /* one set: two would not fit in the registers */
            for (int k = 0; k < 2 * BLOCK; k++, i += 8) {
                __m256 v = _mm256_loadu_ps(x + i);
                if (sat_on)
                    lanes_add(&a, v, 1, 1, vsat);
                else
                    lanes_add(&a, v, 1, 0, vsat);
                if (colmax != NULL) {
                    _mm256_storeu_ps(colmax + j, _mm256_max_ps(_mm256_loadu_ps(colmax + j), v));
                    j = j + 8 == cols ? 0 : j + 8;
                }
            }
        } else {
            for (int k = 0; k < BLOCK; k++, i += 16) {
                lanes_add(&a, _mm256_loadu_ps(x + i), 0, 0, vsat);
                lanes_add(&b, _mm256_loadu_ps(x + i + 8), 0, 0, vsat);
            }
        }
        lanes_flush(&a, &b, tot, signs);
        if (++blocks == (1 << 20)) { /* int32 lane counts (BLOCK a block): move them out before they wrap */
            blocks = 0;
            zeros += hsum_epi32(a.nz) + hsum_epi32(b.nz);
            positives += hsum_epi32(a.np) + hsum_epi32(b.np);
            saturated += hsum_epi32(a.ns) + hsum_epi32(b.ns);
            a.nz = a.np = a.ns = b.nz = b.np = b.ns = _mm256_setzero_si256();
        }
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        lanes_add(&a, v, signs, 1, vsat);
        if (signs && colmax != NULL) {
            _mm256_storeu_ps(colmax + j, _mm256_max_ps(_mm256_loadu_ps(colmax + j), v));
            j = j + 8 == cols ? 0 : j + 8;
        }
    }
    lanes_flush(&a, &b, tot, signs);
    double sums[4];
    totals_sum(tot, sums);
    Stats r;
    r.sum = sums[0];
    r.sumsq = sums[1];
    r.pos_sum = sums[2];
    r.pos_sumsq = sums[3];
    r.min = HUGE_VAL;
    r.max = -HUGE_VAL;
    fold_extremes(a.lo, a.hi, b.lo, b.hi, &r.min, &r.max);
    r.zeros = zeros + hsum_epi32(a.nz) + hsum_epi32(b.nz);
    r.positives = positives + hsum_epi32(a.np) + hsum_epi32(b.np);
    r.saturated = saturated + hsum_epi32(a.ns) + hsum_epi32(b.ns);
    for (; i < n; i++) { /* the last n % 8 entries */
        double v = x[i];
        double pv = v > 0.0 ? v : 0.0;
        r.sum += v;
        r.sumsq += v * v;
        r.min = v < r.min ? v : r.min;
        r.max = v > r.max ? v : r.max;
        r.zeros += !signs && v == 0.0;
        r.pos_sum += pv;
        r.pos_sumsq += pv * pv;
        r.positives += v > 0.0;
        r.saturated += fabs(v) > (double)sat;
    }
    if (signs)
        r.zeros = -1;
    r.dead = -1;
    *out = r;
}

/* Units (columns of a rows x cols matrix) whose entries are all <= 0: a running column maximum
   updated a row at a time, so the inner loop reads contiguous memory. */
__attribute__((target("avx2,fma"))) static int64_t
dead_avx2(const float *x, Py_ssize_t rows, Py_ssize_t cols, float *colmax)
{
    memcpy(colmax, x, (size_t)cols * sizeof(float));
    for (Py_ssize_t r = 1; r < rows; r++) {
        const float *row = x + r * cols;
        Py_ssize_t j = 0;
        for (; j + 8 <= cols; j += 8)
            _mm256_storeu_ps(colmax + j, _mm256_max_ps(_mm256_loadu_ps(colmax + j), _mm256_loadu_ps(row + j)));
        for (; j < cols; j++)
            colmax[j] = row[j] > colmax[j] ? row[j] : colmax[j];
    }
    int64_t dead = 0;
    for (Py_ssize_t j = 0; j < cols; j++)
        dead += colmax[j] <= 0.0f;
    return dead;
}

/* A gradient's or a parameter's accumulators: sum, sum of squares, min, max and zeros. */
typedef struct {
    __m256 s, q, lo, hi;
    __m256i nz;
} VecLanes;

__attribute__((target("avx2,fma"))) static inline void
vec_init(VecLanes *L)
{
    L->s = L->q = _mm256_setzero_ps();
    L->lo = _mm256_set1_ps(HUGE_VALF);
    L->hi = _mm256_set1_ps(-HUGE_VALF);
    L->nz = _mm256_setzero_si256();
}

__attribute__((target("avx2,fma"))) static inline void
vec_add(VecLanes *L, const float *x)
{
    __m256 v = _mm256_loadu_ps(x);
    L->s = _mm256_add_ps(L->s, v);
    L->q = _mm256_add_ps(L->q, _mm256_mul_ps(v, v));
    L->lo = _mm256_min_ps(L->lo, v);
    L->hi = _mm256_max_ps(L->hi, v);
    L->nz = _mm256_sub_epi32(L->nz, _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_EQ_OQ)));
}

__attribute__((target("avx2,fma"))) static inline __m256d
widen_sum(__m256d tot, __m256 x)
{
    tot = _mm256_add_pd(tot, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
    return _mm256_add_pd(tot, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
}

__attribute__((target("avx2,fma"))) static inline double
hsum4(__m256d x)
{
    double v[4];
    _mm256_storeu_pd(v, x);
    return (v[0] + v[1]) + (v[2] + v[3]);
}

/* The statistics of a gradient or a parameter vector, read only. Two sets of accumulators take
   alternate vectors, so that no addition waits for the previous one; each block's float32 sums are
   widened into one float64 accumulator per lane. This is the summation order the SGD update pass
   used when it measured g and p in place (removed: training arithmetic stays in NumPy), kept so that
   the logs it wrote are reproduced bit for bit. */
__attribute__((target("avx2,fma"))) static void
vector_avx2(const float *x, Py_ssize_t n, Stats *out)
{
    VecLanes A, B;
    vec_init(&A);
    vec_init(&B);
    __m256d stot = _mm256_setzero_pd(), qtot = stot;
    int64_t zeros = 0;
    int32_t blocks = 0;
    Py_ssize_t i = 0;
    while (i + 16 * BLOCK <= n) {
        for (int k = 0; k < BLOCK; k++, i += 16) {
            vec_add(&A, x + i);
            vec_add(&B, x + i + 8);
        }
        stot = widen_sum(stot, _mm256_add_ps(A.s, B.s));
        qtot = widen_sum(qtot, _mm256_add_ps(A.q, B.q));
        A.s = A.q = B.s = B.q = _mm256_setzero_ps();
        if (++blocks == (1 << 20)) { /* int32 lane counts (BLOCK a block): move them out before they wrap */
            blocks = 0;
            zeros += hsum_epi32(A.nz) + hsum_epi32(B.nz);
            A.nz = B.nz = _mm256_setzero_si256();
        }
    }
    for (; i + 8 <= n; i += 8)
        vec_add(&A, x + i);
    stot = widen_sum(stot, A.s);
    qtot = widen_sum(qtot, A.q);
    Stats r;
    r.sum = hsum4(stot);
    r.sumsq = hsum4(qtot);
    r.min = HUGE_VAL;
    r.max = -HUGE_VAL;
    fold_extremes(A.lo, A.hi, B.lo, B.hi, &r.min, &r.max);
    r.zeros = zeros + hsum_epi32(A.nz) + hsum_epi32(B.nz);
    for (; i < n; i++) { /* the last n % 8 entries */
        double v = x[i];
        r.sum += v;
        r.sumsq += v * v;
        r.min = v < r.min ? v : r.min;
        r.max = v > r.max ? v : r.max;
        r.zeros += v == 0.0;
    }
    *out = r;
}

/* ||x||^2, copying x into dst as it is read: a weight's norm and the copy its update is measured
   against, in one read. Summation as vector_avx2's (float32 blocks widened into float64 lanes). */
__attribute__((target("avx2,fma"))) static double
copy_sumsq_avx2(const float *x, float *dst, Py_ssize_t n)
{
    __m256 qa = _mm256_setzero_ps(), qb = qa;
    __m256d qtot = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    while (i + 16 * BLOCK <= n) {
        for (int k = 0; k < BLOCK; k++, i += 16) {
            __m256 va = _mm256_loadu_ps(x + i), vb = _mm256_loadu_ps(x + i + 8);
            _mm256_storeu_ps(dst + i, va);
            _mm256_storeu_ps(dst + i + 8, vb);
            qa = _mm256_add_ps(qa, _mm256_mul_ps(va, va));
            qb = _mm256_add_ps(qb, _mm256_mul_ps(vb, vb));
        }
        qtot = widen_sum(qtot, _mm256_add_ps(qa, qb));
        qa = qb = _mm256_setzero_ps();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(dst + i, v);
        qa = _mm256_add_ps(qa, _mm256_mul_ps(v, v));
    }
    qtot = widen_sum(qtot, qa);
    double q = hsum4(qtot);
    for (; i < n; i++) {
        dst[i] = x[i];
        q += (double)x[i] * x[i];
    }
    return q;
}

/* NH of 16 words at once into two accumulators (fingerprint_avx2's inner step). */
__attribute__((target("avx2,fma"))) static inline void
nh16(__m256i wa, __m256i wb, __m256i *key, __m256i step, __m256i *h0, __m256i *h1)
{
    __m256i a = _mm256_add_epi32(wa, *key);
    *key = _mm256_add_epi32(*key, step);
    __m256i b = _mm256_add_epi32(wb, *key);
    *key = _mm256_add_epi32(*key, step);
    *h0 = _mm256_add_epi64(*h0, _mm256_mul_epu32(a, _mm256_srli_epi64(a, 32)));
    *h1 = _mm256_add_epi64(*h1, _mm256_mul_epu32(b, _mm256_srli_epi64(b, 32)));
}

__attribute__((target("avx2,fma"))) static inline __m256i
nh_first_keys(void)
{
    return _mm256_add_epi32(_mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)FP_KEY)),
                            _mm256_set1_epi32((int)FP_OFFSET));
}

__attribute__((target("avx2,fma"))) static inline uint64_t
nh_total(__m256i h0, __m256i h1)
{
    uint64_t v[4], total = 0;
    _mm256_storeu_si256((__m256i *)v, _mm256_add_epi64(h0, h1));
    for (int k = 0; k < 4; k++)
        total += v[k];
    return total;
}

/* NH of 8 words into one accumulator (the loops' last whole vectors). */
__attribute__((target("avx2,fma"))) static inline void
nh8(__m256i w, __m256i *key, __m256i step, __m256i *h)
{
    __m256i a = _mm256_add_epi32(w, *key);
    *key = _mm256_add_epi32(*key, step);
    *h = _mm256_add_epi64(*h, _mm256_mul_epu32(a, _mm256_srli_epi64(a, 32)));
}

/* NH of the words of a buffer of `len` bytes from word `done` on (fewer than 10 words), the last
   ones zero-padded to a whole pair. */
static uint64_t
nh_rest(const void *buf, Py_ssize_t done, Py_ssize_t len)
{
    uint32_t tail[10] = {0};
    uint64_t h = 0;
    memcpy(tail, (const char *)buf + 4 * done, (size_t)(len - 4 * done));
    for (Py_ssize_t j = 0; done + j < (len + 3) / 4; j += 2)
        h += fp_pair(tail[j], tail[j + 1], (uint32_t)(done + j));
    return h;
}

/* A weight's update in one read of each array (a: the weight after the update, b: its copy from
   before): ||a - b||^2, the difference taken in float32 as a - b in NumPy, and ||a||^2 (is the
   weight finite after it?). With `copy`, also the fingerprint of a, and a is copied into b, which
   becomes the copy the next step's update is measured against. */
__attribute__((target("avx2,fma"))) static inline void
update_pass_avx2(const float *a, float *b, Py_ssize_t n, int copy, double *diff, double *norm, uint64_t *print)
{
    __m256 da = _mm256_setzero_ps(), db = da, qa = da, qb = da;
    __m256d dtot = _mm256_setzero_pd(), qtot = dtot;
    __m256i key = nh_first_keys(), h0 = _mm256_setzero_si256(), h1 = h0;
    const __m256i step = _mm256_set1_epi32((int)(8u * FP_KEY));
    Py_ssize_t i = 0;
    while (i + 16 * BLOCK <= n) {
        for (int k = 0; k < BLOCK; k++, i += 16) {
            __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(a + i + 8);
            __m256 ea = _mm256_sub_ps(va, _mm256_loadu_ps(b + i)), eb = _mm256_sub_ps(vb, _mm256_loadu_ps(b + i + 8));
            da = _mm256_add_ps(da, _mm256_mul_ps(ea, ea));
            db = _mm256_add_ps(db, _mm256_mul_ps(eb, eb));
            qa = _mm256_add_ps(qa, _mm256_mul_ps(va, va));
            qb = _mm256_add_ps(qb, _mm256_mul_ps(vb, vb));
            if (copy) {
                _mm256_storeu_ps(b + i, va);
                _mm256_storeu_ps(b + i + 8, vb);
                nh16(_mm256_castps_si256(va), _mm256_castps_si256(vb), &key, step, &h0, &h1);
            }
        }
        dtot = widen_sum(dtot, _mm256_add_ps(da, db));
        qtot = widen_sum(qtot, _mm256_add_ps(qa, qb));
        da = db = qa = qb = _mm256_setzero_ps();
    }
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(a + i);
        __m256 e = _mm256_sub_ps(v, _mm256_loadu_ps(b + i));
        da = _mm256_add_ps(da, _mm256_mul_ps(e, e));
        qa = _mm256_add_ps(qa, _mm256_mul_ps(v, v));
        if (copy) {
            _mm256_storeu_ps(b + i, v);
            nh8(_mm256_castps_si256(v), &key, step, &h0);
        }
    }
    dtot = widen_sum(dtot, da);
    qtot = widen_sum(qtot, qa);
    double d = hsum4(dtot), q = hsum4(qtot);
    if (copy)
        *print = nh_total(h0, h1) + nh_rest(a, i, n * (Py_ssize_t)sizeof(float));
    for (; i < n; i++) {
        float e = a[i] - b[i];
        d += (double)e * e;
        q += (double)a[i] * a[i];
        if (copy)
            b[i] = a[i];
    }
    *diff = d;
    *norm = q;
}

/* NH over the first n words, n a multiple of 8; the caller adds the rest. */
__attribute__((target("avx2,fma"))) static uint64_t
fingerprint_avx2(const uint32_t *w, Py_ssize_t n)
{
    __m256i key = nh_first_keys(), h0 = _mm256_setzero_si256(), h1 = h0;
    const __m256i step = _mm256_set1_epi32((int)(8u * FP_KEY));
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16)
        nh16(_mm256_loadu_si256((const __m256i *)(w + i)), _mm256_loadu_si256((const __m256i *)(w + i + 8)), &key,
             step, &h0, &h1);
    for (; i + 8 <= n; i += 8)
        nh8(_mm256_loadu_si256((const __m256i *)(w + i)), &key, step, &h0);
    return nh_total(h0, h1);
}

static int
have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#else

static int
have_avx2(void)
{
    return 0;
}

#endif

/* For the entry points: the CPU check, and C-contiguous float32 buffers taken and given back together. */
static int
need_avx2(const char *name)
{
    if (have_avx2())
        return 0;
    PyErr_Format(PyExc_RuntimeError, "%s() needs a CPU with AVX2; check available() first", name);
    return -1;
}

static void
release_all(Py_buffer *views, int count)
{
    for (int k = 0; k < count; k++)
        PyBuffer_Release(&views[k]);
}

static int
get_f32(const char *name, int count, PyObject **objs, const int *writable, Py_buffer *views)
{
    for (int k = 0; k < count; k++) {
        if (PyObject_GetBuffer(objs[k], &views[k], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable[k] ? PyBUF_WRITABLE : 0)) < 0) {
            release_all(views, k);
            return -1;
        }
        if (views[k].format == NULL || strcmp(views[k].format, "f") != 0) {
            release_all(views, k + 1);
            PyErr_Format(PyExc_TypeError, "%s() takes C-contiguous float32 arrays", name);
            return -1;
        }
    }
    return 0;
}

/* The tuple of a pass with signs: (n, sum, sumsq, min, max, zeros, pos_sum, pos_sumsq, positives,
   saturated, dead); nnprobe.probes.kernel names the fields. */
static PyObject *
signed_result(Py_ssize_t n, const Stats *r)
{
    return Py_BuildValue("(nddddLddLLL)", n, r->sum, r->sumsq, r->min, r->max, (long long)r->zeros, r->pos_sum,
                         r->pos_sumsq, (long long)r->positives, (long long)r->saturated, (long long)r->dead);
}

static PyObject *
available(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(have_avx2());
}

static PyObject *
stats(PyObject *self, PyObject *args)
{
    PyObject *obj;
    Py_ssize_t cols = 0;
    int signs = 0;
    double sat = HUGE_VAL;
    if (!PyArg_ParseTuple(args, "O|pnd:stats", &obj, &signs, &cols, &sat) || need_avx2("stats") < 0)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    Py_buffer view;
    const int writable[1] = {0};
    if (get_f32("stats", 1, &obj, writable, &view) < 0)
        return NULL;
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(float);
    if (cols < 0 || (cols > 0 && n % cols != 0)) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "stats(): cols must divide the number of entries");
        return NULL;
    }
    float *colmax = NULL;
    if (cols > 0 && n > 0 && (colmax = PyMem_RawMalloc((size_t)cols * sizeof(float))) == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    Stats r;
    int fused = signs && colmax != NULL && cols % 8 == 0;
    Py_BEGIN_ALLOW_THREADS
    if (fused) {
        for (Py_ssize_t c = 0; c < cols; c++)
            colmax[c] = -HUGE_VALF;
        pass_avx2((const float *)view.buf, n, signs, (float)sat, colmax, cols, &r);
        r.dead = 0;
        for (Py_ssize_t c = 0; c < cols; c++)
            r.dead += colmax[c] <= 0.0f;
    } else {
        pass_avx2((const float *)view.buf, n, signs, (float)sat, NULL, 0, &r);
        if (colmax != NULL)
            r.dead = dead_avx2((const float *)view.buf, n / cols, cols, colmax);
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(colmax);
    PyBuffer_Release(&view);
    if (!signs)
        return Py_BuildValue("(nddddLL)", n, r.sum, r.sumsq, r.min, r.max, (long long)r.zeros, (long long)r.dead);
    return signed_result(n, &r);
#else
    return NULL;
#endif
}

static PyObject *
vector_stats(PyObject *self, PyObject *args)
{
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O:vector_stats", &obj) || need_avx2("vector_stats") < 0)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    Py_buffer view;
    const int writable[1] = {0};
    if (get_f32("vector_stats", 1, &obj, writable, &view) < 0)
        return NULL;
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(float);
    Stats r;
    Py_BEGIN_ALLOW_THREADS
    vector_avx2((const float *)view.buf, n, &r);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return Py_BuildValue("(nddddL)", n, r.sum, r.sumsq, r.min, r.max, (long long)r.zeros);
#else
    return NULL;
#endif
}

/* The two same-size C-contiguous float32 arrays of a two-array entry point (the second writable if
   asked), taken together; -1 with an exception set otherwise. */
static int
get_pair(const char *name, PyObject *args, int second_writable, Py_buffer views[2])
{
    PyObject *objs[2];
    if (!PyArg_UnpackTuple(args, name, 2, 2, &objs[0], &objs[1]) || need_avx2(name) < 0)
        return -1;
    const int writable[2] = {0, second_writable};
    if (get_f32(name, 2, objs, writable, views) < 0)
        return -1;
    if (views[0].len != views[1].len) {
        release_all(views, 2);
        PyErr_Format(PyExc_ValueError, "%s(): the arrays differ in size", name);
        return -1;
    }
    return 0;
}

static PyObject *
copy_sumsq(PyObject *self, PyObject *args)
{
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[2];
    if (get_pair("copy_sumsq", args, 1, views) < 0)
        return NULL;
    double q;
    Py_BEGIN_ALLOW_THREADS
    q = copy_sumsq_avx2((const float *)views[0].buf, (float *)views[1].buf, views[0].len / (Py_ssize_t)sizeof(float));
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return PyFloat_FromDouble(q);
#else
    need_avx2("copy_sumsq");
    return NULL;
#endif
}

static PyObject *
diff_sumsq(PyObject *self, PyObject *args)
{
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[2];
    if (get_pair("diff_sumsq", args, 0, views) < 0)
        return NULL;
    double d, q;
    Py_BEGIN_ALLOW_THREADS
    update_pass_avx2((const float *)views[0].buf, (float *)views[1].buf, views[0].len / (Py_ssize_t)sizeof(float), 0,
                     &d, &q, NULL);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return Py_BuildValue("(dd)", d, q);
#else
    need_avx2("diff_sumsq");
    return NULL;
#endif
}

static PyObject *
diff_copy(PyObject *self, PyObject *args)
{
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[2];
    if (get_pair("diff_copy", args, 1, views) < 0)
        return NULL;
    double d, q;
    uint64_t h;
    Py_BEGIN_ALLOW_THREADS
    update_pass_avx2((const float *)views[0].buf, (float *)views[1].buf, views[0].len / (Py_ssize_t)sizeof(float), 1,
                     &d, &q, &h);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    return Py_BuildValue("(ddK)", d, q, (unsigned long long)h);
#else
    need_avx2("diff_copy");
    return NULL;
#endif
}

/* Any C-contiguous buffer, read as little-endian 32-bit words (the last ones zero-padded to a pair). */
static PyObject *
fingerprint(PyObject *self, PyObject *args)
{
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "O:fingerprint", &obj) || need_avx2("fingerprint") < 0)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t words = view.len / 4, done = words - words % 8;
    uint64_t h;
    Py_BEGIN_ALLOW_THREADS
    h = fingerprint_avx2((const uint32_t *)view.buf, done) + nh_rest(view.buf, done, view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(h);
#else
    return NULL;
#endif
}

static PyMethodDef methods[] = {
    {"available", available, METH_NOARGS, "available() -> bool: this CPU runs the kernel (x86-64 with AVX2)."},
    {"stats", stats, METH_VARARGS,
     "stats(a, signs=False, cols=0, sat=inf) -> (n, sum, sumsq, min, max, zeros, dead)\n"
     "  or, with signs, (n, sum, sumsq, min, max, -1, pos_sum, pos_sumsq, positives, saturated, dead)\n\n"
     "One pass over a C-contiguous float32 array. pos_*: of max(a, 0); saturated: |a| > sat;\n"
     "dead: columns of an (n/cols) x cols matrix whose entries are all <= 0 (-1 unless cols > 0)."},
    {"vector_stats", vector_stats, METH_VARARGS,
     "vector_stats(a) -> (n, sum, sumsq, min, max, zeros)\n\n"
     "One read of a C-contiguous float32 gradient or parameter (two interleaved accumulator sets)."},
    {"copy_sumsq", copy_sumsq, METH_VARARGS,
     "copy_sumsq(a, out) -> sumsq: copy float32 a into out (same size) and return ||a||^2, in one read."},
    {"diff_sumsq", diff_sumsq, METH_VARARGS,
     "diff_sumsq(a, b) -> (||a - b||^2, ||a||^2): one read of two float32 arrays of the same size."},
    {"diff_copy", diff_copy, METH_VARARGS,
     "diff_copy(a, b) -> (||a - b||^2, ||a||^2, fingerprint(a)), then copies a into b: one read of each."},
    {"fingerprint", fingerprint, METH_VARARGS,
     "fingerprint(a) -> int: a position-keyed 64-bit hash (NH) of any C-contiguous buffer's bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels",
                                    "One-pass float32 tensor statistics (read only: "
                                    "the training arithmetic is NumPy's).", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
