/* One instruction set's version of the fused kernels, included by _fused.c once per set with
   LANES (floats per vector), ROWS (rows per block), TARGET (the function attribute) and SUFFIX
   (the name's ending).

   Rows go in blocks of ROWS: each block is converted to floats once, scored against every class
   (CLASS_BLOCK classes per pass, ROWS x CLASS_BLOCK accumulators in registers), and its residuals
   added to the gradient. A block shares each load of the weights and of the gradient among its
   rows: the two (31 KB each for MNIST) do not fit L1 together, and L2 traffic bounds the step. */

#define JOIN2(a, b) a##_##b
#define JOIN(a, b) JOIN2(a, b)
#define NAME(name) JOIN(name, SUFFIX)

typedef float NAME(vfloat) __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t NAME(vint) __attribute__((vector_size(LANES * sizeof(int32_t))));
#define VFLOAT NAME(vfloat)
#define VINT NAME(vint)
#define INLINE static inline __attribute__((always_inline)) TARGET

INLINE VFLOAT NAME(load)(const float *p) {
    VFLOAT v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE void NAME(store)(float *p, VFLOAT v) { memcpy(p, &v, sizeof v); }

/* the sum of the lanes, as a tree: a chain of LANES dependent adds would cost more than the products */
INLINE float NAME(total)(VFLOAT v) {
    float t[LANES];
    memcpy(t, &v, sizeof t);
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int i = 0; i < width; i++) t[i] += t[i + width];
    return t[0];
}

/* s[r * classes + c] = w[c] . x[r] for the block's rows and classes [c0, c0 + cb) */
INLINE void NAME(score)(const float *const *x, const int32_t *live, int64_t n_live, const float *w,
                        int64_t w_stride, int64_t d, int64_t classes, int64_t c0, int cb, double *s) {
    VFLOAT a[ROWS][CLASS_BLOCK];
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < CLASS_BLOCK; c++) a[r][c] = (VFLOAT){0};
    for (int64_t j = 0; j < n_live; j++) {
        int64_t k = live[j];
        VFLOAT v[ROWS];
        for (int r = 0; r < ROWS; r++) v[r] = NAME(load)(x[r] + k);
        for (int c = 0; c < cb; c++) {
            VFLOAT wc = NAME(load)(w + (c0 + c) * w_stride + k);
            for (int r = 0; r < ROWS; r++) a[r][c] += wc * v[r];
        }
    }
    for (int r = 0; r < ROWS; r++) {
        for (int c = 0; c < cb; c++) {
            float t = NAME(total)(a[r][c]);
            const float *wc = w + (c0 + c) * w_stride;
            for (int64_t j = d / LANES * LANES; j < d; j++) t += wc[j] * x[r][j];
            s[r * classes + c0 + c] = t;
        }
    }
}

/* g[c] += sum over the block's rows of res[r * classes + c] * x[r], for classes [c0, c0 + cb) */
INLINE void NAME(add)(const float *const *x, const int32_t *live, int64_t n_live, const float *res,
                      float *g, int64_t g_stride, int64_t d, int64_t classes, int64_t c0, int cb) {
    for (int64_t j = 0; j < n_live; j++) {
        int64_t k = live[j];
        VFLOAT v[ROWS];
        for (int r = 0; r < ROWS; r++) v[r] = NAME(load)(x[r] + k);
        for (int c = 0; c < cb; c++) {
            float *gc = g + (c0 + c) * g_stride + k;
            VFLOAT sum = NAME(load)(gc);
            for (int r = 0; r < ROWS; r++) sum += res[r * classes + c0 + c] * v[r];
            NAME(store)(gc, sum);
        }
    }
    for (int c = 0; c < cb; c++) {
        float *gc = g + (c0 + c) * g_stride;
        for (int64_t j = d / LANES * LANES; j < d; j++)
            for (int r = 0; r < ROWS; r++) gc[j] += res[r * classes + c0 + c] * x[r][j];
    }
}

/* `call` once per block of classes, with `cb` a constant so that the accumulators are registers */
#define BY_BLOCKS(call)                                                    \
    for (int64_t c0 = 0; c0 < classes; c0 += CLASS_BLOCK) {                \
        switch (classes - c0 < CLASS_BLOCK ? classes - c0 : CLASS_BLOCK) { \
            case 1: { const int cb = 1; call; } break;                     \
            case 2: { const int cb = 2; call; } break;                     \
            case 3: { const int cb = 3; call; } break;                     \
            case 4: { const int cb = 4; call; } break;                     \
            default: { const int cb = CLASS_BLOCK; call; } break;          \
        }                                                                  \
    }

/* The offsets of the chunks of LANES features where some row of the block is nonzero; the products
   skip the others, which would add exact zeros (MNIST's digits leave about a quarter blank), unless
   a weight is NaN or inf (then 0 x w is NaN, and every chunk is taken). */
INLINE int64_t NAME(find_live)(const float *const *x, int64_t d, int skip_blank, int32_t *live) {
    int64_t n = 0;
    VFLOAT zero = {0};
    for (int64_t k = 0; k + LANES <= d; k += LANES) {
        VINT nonzero = NAME(load)(x[0] + k) != zero;
        for (int r = 1; r < ROWS; r++) nonzero |= NAME(load)(x[r] + k) != zero;
        uint64_t bits[sizeof nonzero / sizeof(uint64_t)], any = 0;
        memcpy(bits, &nonzero, sizeof nonzero);
        for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) any |= bits[i];
        live[n] = (int32_t)k;
        n += any != 0 || !skip_blank;
    }
    return n;
}

/* row `row` of the batch as floats: a pointer into x, or converted into `buffer` */
INLINE const float *NAME(row_floats)(const struct batch *in, int64_t row, float *buffer) {
    int64_t at = in->index ? in->index[row] : row;
    if (!in->is_uint8) return (const float *)in->x + at * in->x_stride;
    const uint8_t *pixels = (const uint8_t *)in->x + at * in->x_stride;
    for (int64_t k = 0; k < in->features; k++) buffer[k] = pixels[k];
    return buffer;
}

/* Ask for the rows of the block at `row`: read by index they are scattered, and the hardware
   prefetcher cannot guess them; in order, it starts too late for rows of a few cache lines. */
INLINE void NAME(prefetch)(const struct batch *in, int64_t row) {
    size_t bytes = in->features * (in->is_uint8 ? 1 : sizeof(float));
    for (int64_t ahead = row; ahead < row + ROWS && ahead < in->rows; ahead++) {
        int64_t at = in->index ? in->index[ahead] : ahead;
        const char *start = (const char *)in->x + at * in->x_stride * (in->is_uint8 ? 1 : 4);
        for (size_t line = 0; line < bytes; line += 64) __builtin_prefetch(start + line);
    }
}

/* The block's rows as floats in x[]; a short last block repeats its first row. Returns its rows. */
INLINE int NAME(block)(const struct batch *in, int64_t row, struct work *work, const float **x) {
    int rows = in->rows - row < ROWS ? (int)(in->rows - row) : ROWS;
    NAME(prefetch)(in, row + 2 * ROWS);
    for (int r = 0; r < ROWS; r++)
        x[r] = r < rows ? NAME(row_floats)(in, row + r, work->rows + r * in->features) : x[0];
    return rows;
}

/* The block of rows at `row` as floats in x[], its live chunks in work->live (*n_live of them) and its
   raw scores in work->scores; returns its number of rows. */
INLINE int NAME(score_block)(const struct batch *in, const struct model *m, int64_t row,
                             struct work *work, const float **x, int64_t *n_live) {
    const int64_t classes = m->classes, d = in->features;
    int rows = NAME(block)(in, row, work, x);
    *n_live = NAME(find_live)(x, d, work->skip_blank, work->live);
    BY_BLOCKS(NAME(score)(x, work->live, *n_live, m->w, m->w_stride, d, classes, c0, cb, work->scores));
    return rows;
}

TARGET static double NAME(batch_gradient)(const struct batch *in, const struct model *m,
                                          struct work *work) {
    const int64_t classes = m->classes, d = in->features;
    double *z = work->scores;
    float *res = work->residuals;
    const float *x[ROWS];
    double loss = 0.0;
    if (!m->accumulate) {
        for (int64_t c = 0; c < classes && d > 0; c++) memset(m->gw + c * m->gw_stride, 0, sizeof(float) * d);
        memset(m->gb, 0, sizeof(float) * (size_t)classes);
    }
    NAME(prefetch)(in, 0);
    NAME(prefetch)(in, ROWS);
    for (int64_t row = 0; row < in->rows; row += ROWS) {
        int64_t n_live;
        int rows = NAME(score_block)(in, m, row, work, x, &n_live);
        for (int r = 0; r < ROWS; r++) {
            float *rr = res + r * classes;
            if (r < rows) {
                loss += row_loss(in, m, row + r, z + r * classes, rr);
            } else {
                for (int64_t c = 0; c < classes; c++) rr[c] = 0.0f;
            }
            for (int64_t c = 0; c < classes; c++) {
                m->gb[c] += rr[c];
                rr[c] *= (float)m->scale;
            }
        }
        BY_BLOCKS(NAME(add)(x, work->live, n_live, res, m->gw, m->gw_stride, d, classes, c0, cb));
    }
    return loss;
}

/* The summed (weighted) loss of the rows, and in *correct how many rows' top score is their label's. */
TARGET static double NAME(batch_sums)(const struct batch *in, const struct model *m, struct work *work,
                                      int64_t *correct) {
    const int64_t classes = m->classes;
    double *z = work->scores;
    const float *x[ROWS];
    double loss = 0.0;
    NAME(prefetch)(in, 0);
    NAME(prefetch)(in, ROWS);
    for (int64_t row = 0; row < in->rows; row += ROWS) {
        int64_t n_live;
        int rows = NAME(score_block)(in, m, row, work, x, &n_live);
        for (int r = 0; r < rows; r++) loss += row_sums(in, m, row + r, z + r * classes, correct);
    }
    return loss;
}

#undef BY_BLOCKS
#undef INLINE
#undef VFLOAT
#undef VINT
#undef NAME
#undef JOIN
#undef JOIN2
