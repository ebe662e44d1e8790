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
    double pos_sum, pos_sumsq; /* of max(x, 0): a ReLU's output, without reading it (a leaky ReLU's: of a) */
    int64_t positives, saturated, dead;
    double a_min, a_max; /* a leaky ReLU's output only */
} Stats;

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

/* A leaky ReLU's pre-activation v and output av (gt: v > 0) into one set: v's sums, min, max and
   positives as lanes_add gives them with signs, and in the pos_* sums and the zero count, av's. */
__attribute__((target("avx2,fma"))) static inline void
lanes_add_leaky(Lanes *a, __m256 v, __m256 av, __m256 gt)
{
    a->s = _mm256_add_ps(a->s, v);
    a->q = _mm256_add_ps(a->q, _mm256_mul_ps(v, v));
    a->lo = _mm256_min_ps(a->lo, v);
    a->hi = _mm256_max_ps(a->hi, v);
    a->ps = _mm256_add_ps(a->ps, av);
    a->pq = _mm256_add_ps(a->pq, _mm256_mul_ps(av, av));
    a->np = _mm256_sub_epi32(a->np, _mm256_castps_si256(gt));
    a->nz = _mm256_sub_epi32(a->nz, _mm256_castps_si256(_mm256_cmp_ps(av, _mm256_setzero_ps(), _CMP_EQ_OQ)));
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

/* One update's accumulators: p's new sum and sum of squares, g's sum of squares, min, max and zeros. */
typedef struct {
    __m256 s, q, gq, lo, hi;
    __m256i nz;
} AxLanes;

__attribute__((target("avx2,fma"))) static inline void
ax_init(AxLanes *L)
{
    L->s = L->q = L->gq = _mm256_setzero_ps();
    L->lo = _mm256_set1_ps(HUGE_VALF);
    L->hi = _mm256_set1_ps(-HUGE_VALF);
    L->nz = _mm256_setzero_si256();
}

__attribute__((target("avx2,fma"))) static inline void
ax_step(AxLanes *L, float *p, const float *g, __m256 va)
{
    __m256 vg = _mm256_loadu_ps(g);
    __m256 a = _mm256_add_ps(_mm256_loadu_ps(p), _mm256_mul_ps(vg, va));
    _mm256_storeu_ps(p, a);
    L->s = _mm256_add_ps(L->s, a);
    L->q = _mm256_add_ps(L->q, _mm256_mul_ps(a, a));
    L->gq = _mm256_add_ps(L->gq, _mm256_mul_ps(vg, vg));
    L->lo = _mm256_min_ps(L->lo, vg);
    L->hi = _mm256_max_ps(L->hi, vg);
    L->nz = _mm256_sub_epi32(L->nz, _mm256_castps_si256(_mm256_cmp_ps(vg, _mm256_setzero_ps(), _CMP_EQ_OQ)));
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

/* p += alpha * g (each product rounded to float32, then the sum: what NumPy's two ufuncs give, bit
   for bit). In the same pass: the sum and sum of squares of the updated p (the next step's record
   of p, taken while p is in the registers anyway) and g's sum of squares, min, max and zeros. Two
   sets of accumulators take alternate vectors, so that no addition waits for the previous one. */
__attribute__((target("avx2,fma"))) static void
axpy_avx2(float *p, const float *g, Py_ssize_t n, float alpha, Stats *ps, Stats *gs)
{
    const __m256 va = _mm256_set1_ps(alpha);
    AxLanes A, B;
    ax_init(&A);
    ax_init(&B);
    __m256d stot = _mm256_setzero_pd(), tot = stot, gtot = stot;
    int64_t zeros = 0;
    int32_t blocks = 0;
    Py_ssize_t i = 0;
    while (i + 16 * BLOCK <= n) {
        for (int k = 0; k < BLOCK; k++, i += 16) {
            ax_step(&A, p + i, g + i, va);
            ax_step(&B, p + i + 8, g + i + 8, va);
        }
        stot = widen_sum(stot, _mm256_add_ps(A.s, B.s));
        tot = widen_sum(tot, _mm256_add_ps(A.q, B.q));
        gtot = widen_sum(gtot, _mm256_add_ps(A.gq, B.gq));
        A.s = A.q = A.gq = B.s = B.q = B.gq = _mm256_setzero_ps();
        if (++blocks == (1 << 20)) { /* int32 lane counts (BLOCK a block): move them out before they wrap */
            blocks = 0;
            zeros += hsum_epi32(A.nz) + hsum_epi32(B.nz);
            A.nz = B.nz = _mm256_setzero_si256();
        }
    }
    for (; i + 8 <= n; i += 8)
        ax_step(&A, p + i, g + i, va);
    stot = widen_sum(stot, A.s);
    tot = widen_sum(tot, A.q);
    gtot = widen_sum(gtot, A.gq);
    double sum = hsum4(stot), sumsq = hsum4(tot);
    gs->sumsq = hsum4(gtot);
    gs->min = HUGE_VAL;
    gs->max = -HUGE_VAL;
    fold_extremes(A.lo, A.hi, B.lo, B.hi, &gs->min, &gs->max);
    gs->zeros = zeros + hsum_epi32(A.nz) + hsum_epi32(B.nz);
    for (; i < n; i++) { /* the last n % 8 entries */
        float prod = g[i] * alpha;
        double v = g[i];
        p[i] = p[i] + prod;
        sum += (double)p[i];
        sumsq += (double)p[i] * (double)p[i];
        gs->sumsq += v * v;
        gs->min = v < gs->min ? v : gs->min;
        gs->max = v > gs->max ? v : gs->max;
        gs->zeros += v == 0.0;
    }
    ps->sum = sum;
    ps->sumsq = sumsq;
}

/* A ReLU layer's forward after its GEMM: z += b (row by row), a = max(z, 0) exactly as NumPy's
   np.maximum gives it (NaN propagates with its payload, -0.0 becomes +0.0), and, when `measure`,
   the statistics stats(z, signs=True, cols) would read, all in one pass over z.
   `leaky`: a = z > 0 ? z : z * slope instead, as np.where(z > 0, z, z * slope) gives it in float32,
   and the pos_* sums, the zero count, a_min and a_max are of that a. */
__attribute__((target("avx2,fma"))) static void
bias_relu_avx2(float *z, const float *b, float *a, Py_ssize_t rows, Py_ssize_t cols, int measure,
               int leaky, float slope, float *colmax, Stats *out)
{
    const __m256 zero = _mm256_setzero_ps(), vsat = zero, vslope = _mm256_set1_ps(slope);
    Lanes A, B;
    lanes_init(&A);
    lanes_init(&B); /* stays empty: lanes_flush adds the two sets */
    __m256d tot[8];
    for (int k = 0; k < 8; k++)
        tot[k] = _mm256_setzero_pd();
    double sum = 0.0, sumsq = 0.0, lo = HUGE_VAL, hi = -HUGE_VAL, pos_sum = 0.0, pos_sumsq = 0.0;
    int64_t positives = 0, zeros = 0;
    int in_block = 0;
    Py_ssize_t vec = cols - cols % 8;
    if (measure)
        for (Py_ssize_t j = 0; j < cols; j++)
            colmax[j] = -HUGE_VALF;
    for (Py_ssize_t r = 0; r < rows; r++) {
        float *zr = z + r * cols, *ar = a + r * cols;
        Py_ssize_t j = 0;
        for (; j < vec; j += 8) {
            __m256 v = _mm256_add_ps(_mm256_loadu_ps(zr + j), _mm256_loadu_ps(b + j));
            _mm256_storeu_ps(zr + j, v);
            __m256 gt = zero, av;
            if (leaky) {
                gt = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
                av = _mm256_blendv_ps(_mm256_mul_ps(v, vslope), v, gt);
            } else {
                __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
                av = _mm256_blendv_ps(_mm256_max_ps(v, zero), v, nan);
            }
            _mm256_storeu_ps(ar + j, av);
            if (measure) {
                if (leaky)
                    lanes_add_leaky(&A, v, av, gt);
                else
                    lanes_add(&A, v, 1, 0, vsat);
                _mm256_storeu_ps(colmax + j, _mm256_max_ps(_mm256_loadu_ps(colmax + j), v));
                if (++in_block == 2 * BLOCK) {
                    in_block = 0;
                    lanes_flush(&A, &B, tot, 1);
                }
            }
        }
        for (; j < cols; j++) { /* narrow layers, and what is left of a row */
            float v = zr[j] + b[j];
            zr[j] = v;
            float av = leaky ? (v > 0.0f ? v : v * slope) : (v != v ? v : (v > 0.0f ? v : 0.0f));
            ar[j] = av;
            if (measure) {
                double d = v, pv = leaky ? (double)av : (d > 0.0 ? d : 0.0);
                zeros += av == 0.0f;
                sum += d;
                sumsq += d * d;
                lo = d < lo ? d : lo;
                hi = d > hi ? d : hi;
                pos_sum += pv;
                pos_sumsq += pv * pv;
                positives += d > 0.0;
                colmax[j] = v > colmax[j] ? v : colmax[j];
            }
        }
    }
    if (!measure)
        return;
    lanes_flush(&A, &B, tot, 1);
    double sums[4];
    totals_sum(tot, sums);
    fold_extremes(A.lo, A.hi, B.lo, B.hi, &lo, &hi); /* B is empty: its lanes hold +-inf */
    Stats r;
    r.sum = sum + sums[0];
    r.sumsq = sumsq + sums[1];
    r.pos_sum = pos_sum + sums[2];
    r.pos_sumsq = pos_sumsq + sums[3];
    r.min = lo;
    r.max = hi;
    r.zeros = leaky ? zeros + hsum_epi32(A.nz) : -1;
    r.positives = positives + hsum_epi32(A.np);
    r.saturated = 0;
    r.dead = 0;
    for (Py_ssize_t j = 0; j < cols; j++)
        r.dead += colmax[j] <= 0.0f;
    /* x -> x > 0 ? x : float32(x * slope) never decreases for slope > 0: a's extremes are z's, mapped */
    r.a_min = lo > 0.0 ? lo : (double)((float)lo * slope);
    r.a_max = hi > 0.0 ? hi : (double)((float)hi * slope);
    *out = r;
}

/* A leaky ReLU's backward: g = z > 0 ? g : g * slope in place, as np.where(z > 0, g, g * slope)
   gives it in float32 (np.where branches per entry; this is one pass). */
__attribute__((target("avx2,fma"))) static void
leaky_backprop_avx2(const float *z, float *g, Py_ssize_t n, float slope)
{
    const __m256 zero = _mm256_setzero_ps(), vslope = _mm256_set1_ps(slope);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 gt = _mm256_cmp_ps(_mm256_loadu_ps(z + i), zero, _CMP_GT_OQ);
        _mm256_storeu_ps(g + i, _mm256_blendv_ps(_mm256_mul_ps(gv, vslope), gv, gt));
    }
    for (; i < n; i++)
        g[i] = z[i] > 0.0f ? g[i] : g[i] * slope;
}

/* p += alpha * g alone, for a step that records nothing (the same rounding as above). */
__attribute__((target("avx2,fma"))) static void
axpy_plain_avx2(float *p, const float *g, Py_ssize_t n, float alpha)
{
    const __m256 va = _mm256_set1_ps(alpha);
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_add_ps(_mm256_loadu_ps(p + i), _mm256_mul_ps(_mm256_loadu_ps(g + i), va));
        __m256 b = _mm256_add_ps(_mm256_loadu_ps(p + i + 8), _mm256_mul_ps(_mm256_loadu_ps(g + i + 8), va));
        _mm256_storeu_ps(p + i, a);
        _mm256_storeu_ps(p + i + 8, b);
    }
    for (; i < n; i++) {
        float prod = g[i] * alpha;
        p[i] = p[i] + prod;
    }
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

/* Two float32 buffers of the same size that are not the same memory (a kernel writes one of them
   while it reads the other); `names` such as "p and g" for the messages. */
static int
get_f32_pair(const char *name, const char *names, PyObject *first, PyObject *second, const int writable[2],
             Py_buffer views[2])
{
    PyObject *objs[2] = {first, second};
    if (get_f32(name, 2, objs, writable, views) < 0)
        return -1;
    const char *what = views[0].len != views[1].len ? "differ in size" : views[0].buf == views[1].buf ? "are the same array" : NULL;
    if (what == NULL)
        return 0;
    release_all(views, 2);
    PyErr_Format(PyExc_ValueError, "%s(): %s %s", name, names, what);
    return -1;
}

/* The tuple of a pass with signs: (n, sum, sumsq, min, max, zeros, pos_sum, pos_sumsq, positives,
   saturated, dead), and a leaky ReLU's a_min and a_max after them when `leaky` (the shorter format
   leaves the last two arguments unread). */
static PyObject *
signed_result(Py_ssize_t n, const Stats *r, int leaky)
{
    return Py_BuildValue(leaky ? "(nddddLddLLLdd)" : "(nddddLddLLL)", n, r->sum, r->sumsq, r->min, r->max,
                         (long long)r->zeros, r->pos_sum, r->pos_sumsq, (long long)r->positives,
                         (long long)r->saturated, (long long)r->dead, leaky ? r->a_min : 0.0, leaky ? r->a_max : 0.0);
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
    return signed_result(n, &r, 0);
#else
    return NULL;
#endif
}

static PyObject *
axpy(PyObject *self, PyObject *args)
{
    PyObject *pobj, *gobj;
    double alpha;
    int measure = 1;
    if (!PyArg_ParseTuple(args, "OOd|p:axpy", &pobj, &gobj, &alpha, &measure) || need_avx2("axpy") < 0)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[2];
    const int writable[2] = {1, 0};
    if (get_f32_pair("axpy", "p and g", pobj, gobj, writable, views) < 0)
        return NULL;
    Py_buffer pv = views[0], gv = views[1];
    Stats ps, gs;
    Py_ssize_t n = pv.len / (Py_ssize_t)sizeof(float);
    Py_BEGIN_ALLOW_THREADS
    if (measure)
        axpy_avx2((float *)pv.buf, (const float *)gv.buf, n, (float)alpha, &ps, &gs);
    else
        axpy_plain_avx2((float *)pv.buf, (const float *)gv.buf, n, (float)alpha);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    if (!measure)
        Py_RETURN_NONE;
    return Py_BuildValue("(ddndddL)", ps.sum, ps.sumsq, n, gs.sumsq, gs.min, gs.max, (long long)gs.zeros);
#else
    return NULL;
#endif
}

static PyObject *
bias_relu(PyObject *self, PyObject *args)
{
    PyObject *zobj, *bobj, *aobj, *slopeobj = Py_None;
    int measure = 0;
    if (!PyArg_ParseTuple(args, "OOO|pO:bias_relu", &zobj, &bobj, &aobj, &measure, &slopeobj) ||
        need_avx2("bias_relu") < 0)
        return NULL;
    int leaky = slopeobj != Py_None;
    double slope = leaky ? PyFloat_AsDouble(slopeobj) : 0.0;
    if (slope == -1.0 && PyErr_Occurred())
        return NULL;
    if (leaky && !(slope > 0.0 && slope < HUGE_VAL)) {
        PyErr_SetString(PyExc_ValueError, "bias_relu(): slope must be positive and finite");
        return NULL;
    }
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[3];
    PyObject *objs[3] = {zobj, bobj, aobj};
    const int writable[3] = {1, 0, 1};
    if (get_f32("bias_relu", 3, objs, writable, views) < 0)
        return NULL;
    Py_buffer zv = views[0], bv = views[1], av = views[2];
    const char *err = NULL;
    Py_ssize_t cols = bv.len / (Py_ssize_t)sizeof(float), n = zv.len / (Py_ssize_t)sizeof(float);
    if (cols == 0 || zv.ndim != 2 || zv.shape[1] != cols || av.len != zv.len)
        err = "bias_relu(): z must be rows x len(b), and a the same size as z";
    else if (av.buf == zv.buf || av.buf == bv.buf)
        err = "bias_relu(): a must be a separate array";
    float *colmax = NULL;
    if (err == NULL && measure && (colmax = PyMem_RawMalloc((size_t)cols * sizeof(float))) == NULL)
        err = "bias_relu(): out of memory";
    if (err != NULL) {
        release_all(views, 3);
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    Stats r;
    Py_BEGIN_ALLOW_THREADS
    bias_relu_avx2((float *)zv.buf, (const float *)bv.buf, (float *)av.buf, n / cols, cols, measure, leaky,
                   (float)slope, colmax, &r);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(colmax);
    release_all(views, 3);
    if (!measure)
        Py_RETURN_NONE;
    return signed_result(n, &r, leaky);
#else
    return NULL;
#endif
}

static PyObject *
leaky_backprop(PyObject *self, PyObject *args)
{
    PyObject *zobj, *gobj;
    double slope;
    if (!PyArg_ParseTuple(args, "OOd:leaky_backprop", &zobj, &gobj, &slope) || need_avx2("leaky_backprop") < 0)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    Py_buffer views[2];
    const int writable[2] = {0, 1};
    if (get_f32_pair("leaky_backprop", "z and g", zobj, gobj, writable, views) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    leaky_backprop_avx2((const float *)views[0].buf, (float *)views[1].buf,
                        views[0].len / (Py_ssize_t)sizeof(float), (float)slope);
    Py_END_ALLOW_THREADS
    release_all(views, 2);
    Py_RETURN_NONE;
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
    {"bias_relu", bias_relu, METH_VARARGS,
     "bias_relu(z, b, a, measure=False, slope=None) -> None, or stats(z, signs=True, cols=len(b)) of the new z\n\n"
     "z += b (b added to every row), a[:] = np.maximum(z, 0) bit for bit, in one pass (float32, C-contiguous).\n"
     "With a slope (> 0), a[:] = np.where(z > 0, z, z * slope) bit for bit instead, and the statistics are\n"
     "(n, sum, sumsq, min, max, a_zeros, a_sum, a_sumsq, positives, 0, dead, a_min, a_max): z's, and a's."},
    {"leaky_backprop", leaky_backprop, METH_VARARGS,
     "leaky_backprop(z, g, slope) -> None\n\n"
     "g[:] = np.where(z > 0, g, g * slope) in place, bit for bit (float32, C-contiguous, z and g the same size)."},
    {"axpy", axpy, METH_VARARGS,
     "axpy(p, g, alpha, measure=True) -> (p_sum, p_sumsq, n, g_sumsq, g_min, g_max, g_zeros), or None\n\n"
     "p += float32(alpha) * g in place (float32, C-contiguous; NumPy's rounding), returning the sum and sum of\n"
     "squares of the updated p and, read in the same pass, g's statistics (as stats(g) gives them); with\n"
     "measure=False only the update."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels",
                                    "One-pass float32 tensor statistics, inside a (leaky) ReLU layer's forward and "
                                    "SGD's update where those read the tensor anyway; the leaky ReLU's backward.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
