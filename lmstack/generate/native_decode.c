/* A decode forward of a float32 Llama-style decoder as one parallel region (see native_decode.py).

   A step is ~121 matrix-vector products (SmolLM2-135M) and a few hundred small ops. In PyTorch each product is
   its own OpenMP parallel region, and under OMP_WAIT_POLICY=PASSIVE the second thread sleeps between regions:
   every region pays a futex wake-up (tens of microseconds on a VM), and every small op pays dispatch. Here the
   team of threads is woken once per call; the phases of a layer are separated by a spinning barrier (the
   threads are both busy, so a spin is short), and the small ops run inline.

   A call takes up to MAX_ROWS rows of x: 1-16 new tokens of one sequence, or one token each of up to 16
   sequences. Work split: each product's outputs are shared among the threads (row-major weights in chunks
   claimed from a counter, column-major ones in equal static shares), so every output is summed by one thread
   in one order whatever the thread count (the logits do not depend on it). Attention splits (row, head) pairs;
   norms are recomputed by every thread into its own buffer (D floats a row: cheaper than a barrier).

   The order of operations follows `FastForward` (rms_norm, q|k|v, rotate q and k with cos and the signed sin,
   softmax(q k^T * scale) v, o + residual, rms_norm, silu(gate) * up, down + residual, final norm, head).
   Float32 throughout; sums run in another order than MKL's, so logits agree with PyTorch's to ~1e-6, not bit
   for bit (tests/generate/test_native_decode.py). */
#include <math.h>
#include <omp.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* A projection's weight W (in, out) as stored: by_rows = 0: W[i, c] at p[i*ld + c] (`decode_layout`'s (in, out)
   row-major, q|k|v and gate|up column slices of one matrix); by_rows = 1: W[i, c] at p[c*ld + i] (nn.Linear's
   (out, in) row-major). bias: out floats or NULL. */
typedef struct {
    const float *p, *bias;
    long ld;
    int by_rows;
} Matrix;

typedef struct {
    int n_layers, d, n_heads, n_kv_heads, head_dim, rope_dim, d_ff, vocab;
    float eps, scale;                     /* RMSNorm epsilon; attention scale 1/sqrt(head_dim) */
    const float *embed;                   /* token table, row r column c at embed[r*embed_row + c*embed_col] */
    long embed_row, embed_col;
    const float *final_norm;
    Matrix head;
} Model;

typedef struct {
    const float *attn_norm, *ffn_norm;
    Matrix q, k, v, o, gate, up, down;
} Layer;

/* The team's meeting point: a spinning barrier (arrived, phase) and the next unclaimed chunk of the current phase,
   reset by the last thread to arrive (every claim of the phase is made before anyone arrives). */
typedef struct {
    atomic_int arrived, phase, next;
} Team;

static void team_wait(Team *team, int nt) {
    int phase = atomic_load_explicit(&team->phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&team->arrived, 1, memory_order_acq_rel) == nt - 1) {
        atomic_store_explicit(&team->next, 0, memory_order_relaxed);
        atomic_store_explicit(&team->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&team->phase, phase + 1, memory_order_release);
    } else {
        while (atomic_load_explicit(&team->phase, memory_order_acquire) == phase) CPU_RELAX();
    }
}

/* [lo, hi) of n items for thread t of nt, boundaries on multiples of 16 floats (a cache line) */
static void share(int n, int t, int nt, int *lo, int *hi) {
    *lo = t == 0 ? 0 : (int)(((long)n * t / nt) & ~15L);
    *hi = t == nt - 1 ? n : (int)(((long)n * (t + 1) / nt) & ~15L);
}

#define BLOCK 512      /* output columns summed at once: their partial sums stay in L1 */
#define MAX_ROWS 16    /* new tokens one call takes, over all its sequences; native_decode.py checks it */

/* Four dot products with one x: w0..w3 are consecutive rows (in floats each, row stride ld). Four rows at once keep
   four independent sums in flight and load x once for all four; this is what lets a thread stream W at memory
   speed (one row at a time: ~10 % slower, bench numbers in docs/generate.md). */
static void dot4(const float *w, long ld, const float *x, int in, float out[4]) {
#ifdef __AVX512F__
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int i = 0; i < in; i += 16) {
        __mmask16 m = in - i >= 16 ? 0xFFFF : (__mmask16)((1u << (in - i)) - 1);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), xv, s0);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + ld + i), xv, s1);
        s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + 2 * ld + i), xv, s2);
        s3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + 3 * ld + i), xv, s3);
    }
    out[0] = _mm512_reduce_add_ps(s0), out[1] = _mm512_reduce_add_ps(s1);
    out[2] = _mm512_reduce_add_ps(s2), out[3] = _mm512_reduce_add_ps(s3);
#else
    const float *w1 = w + ld, *w2 = w1 + ld, *w3 = w2 + ld;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int i = 0; i < in; i++) s0 += w[i] * x[i], s1 += w1[i] * x[i], s2 += w2[i] * x[i], s3 += w3[i] * x[i];
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
#endif
}

/* dot4 for four x rows at once (x0..x3, duplicates allowed): out[4*b + a] = row a of w . x_b. Sixteen independent
   sums keep both FMA units busy, and a prefetch 16 KB ahead keeps the memory busy (without it four rows of x cost
   ~1.5x one: the loop's four times as many FMAs per byte let fewer cache-line loads be in flight), so a few tokens
   (a speculative verification, a batch) cost little more than one. Each sum runs exactly as in dot4: the results
   equal four dot4 calls bit for bit. */
static void dot4x4(const float *w, long ld, const float *const x[4], int in, float out[16]) {
#ifdef __AVX512F__ /* sixteen named accumulators: an array of them would live on the stack, not in registers */
    __m512 s00 = _mm512_setzero_ps(), s01 = s00, s02 = s00, s03 = s00, s10 = s00, s11 = s00, s12 = s00, s13 = s00;
    __m512 s20 = s00, s21 = s00, s22 = s00, s23 = s00, s30 = s00, s31 = s00, s32 = s00, s33 = s00;
    for (int i = 0; i < in; i += 16) {
        __mmask16 m = in - i >= 16 ? 0xFFFF : (__mmask16)((1u << (in - i)) - 1);
        __m512 w0 = _mm512_maskz_loadu_ps(m, w + i), w1 = _mm512_maskz_loadu_ps(m, w + ld + i);
        __m512 w2 = _mm512_maskz_loadu_ps(m, w + 2 * ld + i), w3 = _mm512_maskz_loadu_ps(m, w + 3 * ld + i), xv;
        for (int a = 0; a < 4; a++) /* 16 KB ahead: a loop this busy leaves the hardware too few loads in flight */
            _mm_prefetch((const char *)(w + a * ld + i + 4096), _MM_HINT_T0);
#define FMA4(b)                                                                                                        \
    xv = _mm512_maskz_loadu_ps(m, x[b] + i);                                                                           \
    s##b##0 = _mm512_fmadd_ps(w0, xv, s##b##0), s##b##1 = _mm512_fmadd_ps(w1, xv, s##b##1);                           \
    s##b##2 = _mm512_fmadd_ps(w2, xv, s##b##2), s##b##3 = _mm512_fmadd_ps(w3, xv, s##b##3);
        FMA4(0) FMA4(1) FMA4(2) FMA4(3)
#undef FMA4
    }
    __m512 all[16] = {s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33};
    for (int k = 0; k < 16; k++) out[k] = _mm512_reduce_add_ps(all[k]);
#else
    for (int b = 0; b < 4; b++) dot4(w, ld, x[b], in, out + 4 * b);
#endif
}

/* For each of T rows r (x row r at x + r*xs, y row r at y + r*ys, y pointing at column lo's output):
   y[c - lo] (+)= sum_i x[i] W[i, c] (+ bias[c]) for c in [lo, hi). add: y += the product (a residual).
   Each weight is read from memory once for all T rows (the rows' sums run in the same order as for one row). */
static void product(const Matrix *W, const float *x, long xs, int in, int T, float *y, long ys, int lo, int hi,
                    int add) {
    if (W->by_rows && T == 1) { /* the decode step: four dot products at a time, no loop over rows of x */
        float s[4];
        for (int c0 = lo; c0 < hi; c0 += 4) {
            int nr = hi - c0 < 4 ? hi - c0 : 4;
            if (nr == 4)
                dot4(W->p + (long)c0 * W->ld, W->ld, x, in, s);
            else /* the last 1-3 rows of W: the same sums, one row at a time */
                for (int c = 0; c < nr; c++) {
                    float one[4];
                    dot4(W->p + (long)(c0 + c) * W->ld, 0, x, in, one);
                    s[c] = one[0];
                }
            for (int c = 0; c < nr; c++) {
                float v = s[c] + (W->bias ? W->bias[c0 + c] : 0.0f);
                y[c0 + c - lo] = add ? y[c0 + c - lo] + v : v;
            }
        }
        return;
    }
    if (W->by_rows) { /* dot products over contiguous rows of W: four rows of W by four rows of x */
        for (int c0 = lo; c0 < hi; c0 += 4) {
            int nr = hi - c0 < 4 ? hi - c0 : 4;
            for (int r0 = 0; r0 < T; r0 += 4) { /* x rows four at a time (one: dot4, the memory-bound step) */
                int nx = T - r0 < 4 ? T - r0 : 4;
                float s[16];
                if (nr == 4 && nx == 1) {
                    dot4(W->p + (long)c0 * W->ld, W->ld, x + r0 * xs, in, s);
                } else if (nr == 4) {
                    const float *xb[4];
                    for (int b = 0; b < 4; b++) xb[b] = x + (r0 + (b < nx ? b : 0)) * xs;
                    dot4x4(W->p + (long)c0 * W->ld, W->ld, xb, in, s);
                } else { /* the last 1-3 rows of W: the same sums, one row at a time */
                    for (int b = 0; b < nx; b++)
                        for (int c = 0; c < nr; c++) {
                            float one[4];
                            dot4(W->p + (long)(c0 + c) * W->ld, 0, x + (r0 + b) * xs, in, one);
                            s[4 * b + c] = one[0];
                        }
                }
                for (int b = 0; b < nx; b++) {
                    float *yr = y + (r0 + b) * ys;
                    for (int c = 0; c < nr; c++) {
                        float v = s[4 * b + c] + (W->bias ? W->bias[c0 + c] : 0.0f);
                        yr[c0 + c - lo] = add ? yr[c0 + c - lo] + v : v;
                    }
                }
            }
        }
        return;
    }
    if (T == 1) { /* the decode step: one row's partial sums, kept apart so the compiler sees a single row */
        float acc[BLOCK];
        for (int c0 = lo; c0 < hi; c0 += BLOCK) {
            int b = hi - c0 < BLOCK ? hi - c0 : BLOCK, i = 0;
            for (int c = 0; c < b; c++) acc[c] = 0.0f;
            for (; i + 4 <= in; i += 4) {
                const float *w0 = W->p + (long)i * W->ld + c0, *w1 = w0 + W->ld, *w2 = w1 + W->ld, *w3 = w2 + W->ld;
                float x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
#pragma omp simd
                for (int c = 0; c < b; c++) acc[c] += x0 * w0[c] + x1 * w1[c] + x2 * w2[c] + x3 * w3[c];
            }
            for (; i < in; i++) {
                const float *w = W->p + (long)i * W->ld + c0;
                float xi = x[i];
#pragma omp simd
                for (int c = 0; c < b; c++) acc[c] += xi * w[c];
            }
            float *out = y + (c0 - lo);
            for (int c = 0; c < b; c++) {
                float v = acc[c] + (W->bias ? W->bias[c0 + c] : 0.0f);
                out[c] = add ? out[c] + v : v;
            }
        }
        return;
    }
    float acc[MAX_ROWS * BLOCK]; /* columns in blocks: row r's partial sums at acc + r*BLOCK stay in L1 */
    for (int c0 = lo; c0 < hi; c0 += BLOCK) {
        int b = hi - c0 < BLOCK ? hi - c0 : BLOCK, i = 0;
        for (int c = 0; c < T * BLOCK; c++) acc[c] = 0.0f;
        for (; i + 4 <= in; i += 4) { /* four rows of W per pass */
            const float *w0 = W->p + (long)i * W->ld + c0, *w1 = w0 + W->ld, *w2 = w1 + W->ld, *w3 = w2 + W->ld;
            for (int r = 0; r < T; r++) {
                const float *xr = x + r * xs;
                float x0 = xr[i], x1 = xr[i + 1], x2 = xr[i + 2], x3 = xr[i + 3], *a = acc + r * BLOCK;
#pragma omp simd
                for (int c = 0; c < b; c++) a[c] += x0 * w0[c] + x1 * w1[c] + x2 * w2[c] + x3 * w3[c];
            }
        }
        for (; i < in; i++) {
            const float *w = W->p + (long)i * W->ld + c0;
            for (int r = 0; r < T; r++) {
                float xi = x[r * xs + i], *a = acc + r * BLOCK;
#pragma omp simd
                for (int c = 0; c < b; c++) a[c] += xi * w[c];
            }
        }
        for (int r = 0; r < T; r++) {
            float *a = acc + r * BLOCK, *out = y + r * ys + (c0 - lo);
            if (W->bias)
                for (int c = 0; c < b; c++) a[c] += W->bias[c0 + c];
            for (int c = 0; c < b; c++) out[c] = add ? out[c] + a[c] : a[c];
        }
    }
}

/* A product for the team over T rows: y (n outputs a row) (+)= x W, or with `up` SwiGLU's y = silu(x W) * (x up) */
typedef struct {
    const Matrix *W, *up;
    const float *x;
    long xs;
    int in, T;
    float *y;
    long ys;
    int n, add;
} Job;

static void run_chunk(const Job *j, int lo, int hi) {
    if (!j->up) {
        product(j->W, j->x, j->xs, j->in, j->T, j->y + lo, j->ys, lo, hi, j->add);
        return;
    }
    float up[MAX_ROWS * BLOCK];
    for (int c0 = lo; c0 < hi; c0 += BLOCK) {
        int c1 = hi - c0 < BLOCK ? hi : c0 + BLOCK;
        product(j->W, j->x, j->xs, j->in, j->T, j->y + c0, j->ys, c0, c1, 0);
        product(j->up, j->x, j->xs, j->in, j->T, up, BLOCK, c0, c1, 0);
        for (int r = 0; r < j->T; r++) {
            float *g = j->y + r * j->ys + c0, *u = up + r * BLOCK;
            for (int c = 0; c < c1 - c0; c++) g[c] = g[c] / (1.0f + expf(-g[c])) * u[c];
        }
    }
}

#define CHUNK_BYTES (128 * 1024)

static int chunk_rows(int in) {
    int rows = (CHUNK_BYTES / 4 / in) & ~15;
    return rows < 16 ? 16 : rows > BLOCK ? BLOCK : rows;
}

/* Runs the jobs over the team, then waits for all of it. Column-stored matrices go in equal static shares (each
   thread streams long runs of every row); row-stored ones in chunks of ~CHUNK_BYTES claimed from a shared counter,
   so a thread that finishes early (or started late) takes more. */
static void run_jobs(Team *team, const Job *jobs, int n_jobs, int t, int nt) {
    int units = 0, lo, hi;
    for (int k = 0; k < n_jobs; k++) {
        if (jobs[k].W->by_rows) {
            int rows = chunk_rows(jobs[k].in);
            units += (jobs[k].n + rows - 1) / rows;
        } else {
            share(jobs[k].n, t, nt, &lo, &hi);
            run_chunk(&jobs[k], lo, hi);
        }
    }
    for (int u; units && (u = atomic_fetch_add_explicit(&team->next, 1, memory_order_relaxed)) < units;) {
        for (int k = 0; k < n_jobs; k++) {
            if (!jobs[k].W->by_rows) continue;
            int rows = chunk_rows(jobs[k].in), here = (jobs[k].n + rows - 1) / rows;
            if (u < here) {
                lo = u * rows;
                run_chunk(&jobs[k], lo, lo + rows < jobs[k].n ? lo + rows : jobs[k].n);
                break;
            }
            u -= here;
        }
    }
    team_wait(team, nt);
}

static void rms_norm(const float *x, const float *w, int d, float eps, float *out) {
    float ss = 0.0f;
    for (int i = 0; i < d; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)d + eps);
    for (int i = 0; i < d; i++) out[i] = x[i] * r * w[i];
}

/* x (head_dim) rotated in place over its first rd dims: x*cos + roll(x, rd/2)*signed_sin */
static void rotate(float *x, int rd, const float *cos_t, const float *sin_t) {
    float tmp[rd];
    int half = rd / 2;
    for (int i = 0; i < rd; i++) tmp[i] = x[i] * cos_t[i] + x[(i + half) % rd] * sin_t[i];
    memcpy(x, tmp, sizeof(float) * (size_t)rd);
}

/* One head: out = softmax(q K^T * scale) V over slots [0, n) whose position kpos[j] is not negative (a left-padded
   row's padding slots hold -1); K, V (n, hd) rows; p: n floats of scratch */
static void attend(const float *q, const float *K, const float *V, const long *kpos, int n, int hd, float scale,
                   float *p, float *out) {
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (kpos[j] < 0) {
            p[j] = -INFINITY;
            continue;
        }
        const float *k = K + (long)j * hd;
        float s = 0.0f;
        for (int i = 0; i < hd; i++) s += q[i] * k[i];
        p[j] = s * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        p[j] = kpos[j] < 0 ? 0.0f : expf(p[j] - mx);
        sum += p[j];
    }
    for (int i = 0; i < hd; i++) out[i] = 0.0f;
    for (int j = 0; j < n; j++) {
        if (p[j] == 0.0f) continue;
        const float *v = V + (long)j * hd;
        float pj = p[j] / sum;
        for (int i = 0; i < hd; i++) out[i] += pj * v[i];
    }
}

/* One forward of B sequences x T new tokens each (B * T <= MAX_ROWS; row r = b * T + i) at cache slots
   slot..slot+T-1 (one slot counter for every sequence, as in ContiguousKVCache): token i of sequence b attends over
   the slots [0, slot + i] of its own cache row whose position in kpos (B, cap) is not negative.
   k_cache[l], v_cache[l]: (B, n_kv_heads, cap, head_dim) float32, slots [0, slot) filled; the call writes the new
   ones. cos_t, sin_t: (B * T, rope_dim) (RotaryEmbedding.signed for these positions). scratch: see
   native_decode.py. logits: (B * T, vocab) floats out with all_logits, else each sequence's last token's (B, vocab). */
int lm_decode_step(const Model *m, const Layer *layers, float *const *k_cache, float *const *v_cache, long cap,
                   int slot, int B, int T, const int *tokens, const long *kpos, const float *cos_t, const float *sin_t,
                   float *scratch, float *logits, int all_logits, int n_threads) {
    const int D = m->d, H = m->n_heads, Hkv = m->n_kv_heads, hd = m->head_dim, F = m->d_ff, rd = m->rope_dim;
    const int qkv_out = (H + 2 * Hkv) * hd, group = H / Hkv, R = B * T;
    const long seq = (long)Hkv * cap * hd; /* one sequence's keys (or values) in a layer */
    if (B < 1 || T < 1 || R > MAX_ROWS) return 1;
    float *x = scratch, *qkv = x + R * D, *att = qkv + R * qkv_out, *act = att + R * H * hd, *probs = act + R * F;
    Team team = {0, 0, 0};
    for (int r = 0; r < R; r++)
        for (int c = 0; c < D; c++) x[r * D + c] = m->embed[(long)tokens[r] * m->embed_row + (long)c * m->embed_col];

#pragma omp parallel num_threads(n_threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float h[R * D];
        for (int l = 0; l < m->n_layers; l++) {
            const Layer *w = &layers[l];
            float *Kl = k_cache[l], *Vl = v_cache[l];
            /* attention: the norm (every thread its own copy: cheaper than a barrier), q, k, v */
            for (int r = 0; r < R; r++) rms_norm(x + r * D, w->attn_norm, D, m->eps, h + r * D);
            Job qkv_jobs[3] = {{&w->q, NULL, h, D, D, R, qkv, qkv_out, H * hd, 0},
                               {&w->k, NULL, h, D, D, R, qkv + H * hd, qkv_out, Hkv * hd, 0},
                               {&w->v, NULL, h, D, D, R, qkv + (H + Hkv) * hd, qkv_out, Hkv * hd, 0}};
            run_jobs(&team, qkv_jobs, 3, t, nt);
            for (int j = t; j < R * (H + Hkv); j += nt) { /* per row, heads q0..q(H-1), k0..k(Hkv-1) */
                int r = j / (H + Hkv), e = j % (H + Hkv);
                float *row = qkv + (long)r * qkv_out, *head = row + (long)e * hd;
                rotate(head, rd, cos_t + r * rd, sin_t + r * rd);
                if (e >= H) { /* store the rotated key and the value in the token's slot of its sequence */
                    long at = (r / T) * seq + ((long)(e - H) * cap + slot + r % T) * hd;
                    memcpy(Kl + at, head, sizeof(float) * (size_t)hd);
                    memcpy(Vl + at, row + (long)(H + Hkv + e - H) * hd, sizeof(float) * (size_t)hd);
                }
            }
            team_wait(&team, nt);
            for (int j = t; j < R * H; j += nt) {
                int r = j / H, e = j % H, b = r / T;
                long kv = b * seq + (long)(e / group) * cap * hd;
                attend(qkv + (long)r * qkv_out + (long)e * hd, Kl + kv, Vl + kv, kpos + b * cap, slot + r % T + 1, hd,
                       m->scale, probs + (long)j * cap, att + (long)r * H * hd + (long)e * hd);
            }
            team_wait(&team, nt);
            Job o_job = {&w->o, NULL, att, H * hd, H * hd, R, x, D, D, 1}; /* x += attention output */
            run_jobs(&team, &o_job, 1, t, nt);
            /* feed-forward: silu(gate) * up for a range of columns needs only that range of both products */
            for (int r = 0; r < R; r++) rms_norm(x + r * D, w->ffn_norm, D, m->eps, h + r * D);
            Job ffn_job = {&w->gate, &w->up, h, D, D, R, act, F, F, 0};
            run_jobs(&team, &ffn_job, 1, t, nt);
            Job down_job = {&w->down, NULL, act, F, F, R, x, D, D, 1}; /* x += feed-forward output */
            run_jobs(&team, &down_job, 1, t, nt);
        }
        int rows = all_logits ? R : B; /* the head on every row, or on each sequence's last token */
        for (int k = 0; k < rows; k++)
            rms_norm(x + (all_logits ? k : k * T + T - 1) * D, m->final_norm, D, m->eps, h + k * D);
        Job head_job = {&m->head, NULL, h, D, D, rows, logits, m->vocab, m->vocab, 0};
        run_jobs(&team, &head_job, 1, t, nt);
    }
    return 0;
}

/* Reads n float arrays once on n_threads threads, each thread a static share of every array, in one parallel
   region; returns their sum. What no decode step can beat: every weight crossing the memory bus once
   (bench/generate.py reports it beside the steps). */
double lm_read(const float *const *arrays, const long *lengths, int n, int n_threads) {
    double total = 0.0;
#pragma omp parallel num_threads(n_threads) reduction(+ : total)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int k = 0; k < n; k++) {
            const float *a = arrays[k];
            long lo = lengths[k] * t / nt, hi = lengths[k] * (t + 1) / nt;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (long i = lo; i < hi; i++) s += a[i];
            total += s;
        }
    }
    return total;
}
