/* One instruction set's version of the fused kernels, included by _fused.c once per set with
   LANES (floats per vector), ROWS (rows scored together), CLASS_BLOCK (classes scored together),
   GRAD_BLOCK (classes whose gradients are summed together), TARGET (the function attribute) and
   SUFFIX (the name's ending), which it undefines at its end for the next set's.

   A thread's rows go in blocks of BLOCK_ROWS. Each block's rows are made floats once (uint8 rows
   converted into work->rows, float32 rows read in place), then scored in groups of ROWS rows against
   CLASS_BLOCK classes at a time (ROWS x CLASS_BLOCK accumulators in registers, each load of a weight
   shared by the group's rows), then turned into residuals, then added to the gradient a chunk of
   LANES features at a time: GRAD_BLOCK classes' gradient chunks stay in registers while every row of
   the block adds to them, so the gradient is read and written once per block, not once per row.
   The products are the step's cost; the weights (31 KB for MNIST) and the block's rows stay in
   L1/L2 for them. */

#define JOIN2(a, b) a##_##b
#define JOIN(a, b) JOIN2(a, b)
#define NAME(name) JOIN(name, SUFFIX)

_Static_assert(CLASS_BLOCK >= 1 && CLASS_BLOCK <= MAX_BLOCK, "BY_BLOCKS covers blocks of 1 to MAX_BLOCK");
_Static_assert(GRAD_BLOCK >= 1 && GRAD_BLOCK <= MAX_BLOCK, "BY_BLOCKS covers blocks of 1 to MAX_BLOCK");
_Static_assert(ROWS >= 1 && ROWS <= MAX_ROWS, "struct work's buffers are sized for MAX_ROWS");
_Static_assert(BLOCK_ROWS % ROWS == 0, "a block is whole groups of ROWS rows");
_Static_assert((LANES & (LANES - 1)) == 0, "total() halves the lanes");

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

/* the sum of the lanes, as a tree (lane i plus lane i + width, the width halving): a chain of LANES
   dependent adds would cost more than the products. In registers, by shuffles: summed through an
   array in memory, each level waited for its stores. */
#if LANES == 16
#define HIGHER(v, w)                                                                                  \
    (w == 8 ? __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15) \
     : w == 4 ? __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7)           \
     : w == 2 ? __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3)           \
              : __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1))
#elif LANES == 8
#define HIGHER(v, w)                                                         \
    (w == 4 ? __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7)           \
     : w == 2 ? __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3)         \
              : __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1))
#elif LANES == 4
#define HIGHER(v, w) \
    (w == 2 ? __builtin_shufflevector(v, v, 2, 3, 2, 3) : __builtin_shufflevector(v, v, 1, 1, 1, 1))
#endif
INLINE float NAME(total)(VFLOAT v) {
#if defined(HIGHER) && defined(__has_builtin) && __has_builtin(__builtin_shufflevector)
    if (LANES >= 16) v += HIGHER(v, 8);
    if (LANES >= 8) v += HIGHER(v, 4);
    v += HIGHER(v, 2);
    v += HIGHER(v, 1);
    return v[0];
#else
    float t[LANES];
    memcpy(t, &v, sizeof t);
    for (int width = LANES / 2; width > 0; width /= 2)
        for (int i = 0; i < width; i++) t[i] += t[i + width];
    return t[0];
#endif
}
#undef HIGHER

/* e^x lane by lane for the softmax's shifted scores x <= 0 (or NaN, which stays NaN): Cephes' expf, a
   degree-6 polynomial in x - n ln 2 times 2^n made from the exponent bits, within 2 ulp of e^x; 0
   below ln(FLT_MIN) (as subnormals are flushed). By hand: C has no vector expf, and a call to the
   library's per class was a tenth of a pass over rows of 256 features. */
INLINE VFLOAT NAME(exp_lanes)(VFLOAT x) {
    const VFLOAT low = (VFLOAT){0} - 87.33654475f, shift = (VFLOAT){0} + 12582912.0f; /* 1.5 x 2^23 */
    VINT under = x < low;
    x = (VFLOAT)(((VINT)x & ~under) | ((VINT)low & under));
    VFLOAT n = x * 1.44269504088896341f + shift; /* round(x / ln 2) in the low bits */
    VINT whole = (VINT)n - (VINT)shift;
    n -= shift;
    VFLOAT r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    VFLOAT p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    VFLOAT power = (VFLOAT)((whole + 127) << 23);
    return (VFLOAT)((VINT)(p * power) & ~under);
}

/* e[c] = exp((float)(z[c] - top)) for c < classes, LANES at a time (the last vector padded); under
   LANES / 2 classes one at a time (the library's expf), where a vector would be mostly padding */
INLINE void NAME(exponentials)(const double *z, double top, int64_t classes, float *e) {
    if (2 * classes < LANES) {
        for (int64_t c = 0; c < classes; c++) e[c] = expf((float)(z[c] - top));
        return;
    }
    float t[LANES];
    for (int64_t c = 0; c < classes; c += LANES) {
        int64_t n = classes - c < LANES ? classes - c : LANES;
        for (int i = 0; i < LANES; i++) t[i] = i < n ? (float)(z[c + i] - top) : 0.0f;
        VFLOAT v = NAME(exp_lanes)(NAME(load)(t));
        if (n == LANES) {
            NAME(store)(e + c, v);
        } else {
            NAME(store)(t, v);
            memcpy(e + c, t, (size_t)n * sizeof(float));
        }
    }
}

/* The (weighted) loss of one row from its raw scores z, with d(loss)/d(score) x weight x share in r. */
INLINE double NAME(row_loss)(const struct batch *in, const struct model *m, int64_t row, double *z, float *r) {
    int64_t at = in->index ? in->index[row] : row, label = in->labels[at], classes = m->classes;
    double weight = in->weights ? in->weights[at] : 1.0, factor = weight * m->share;
    for (int64_t c = 0; c < classes; c++) z[c] = z[c] * m->scale + m->b[c];
    if (classes == 1) { /* sigmoid and binary cross-entropy, from one exponential */
        double y = (double)label, e = exp(-fabs(z[0])), p = z[0] >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        r[0] = (float)((p - y) * factor);
        return weight * (fmax(z[0], 0.0) - z[0] * y + log1p(e));
    }
    double top = z[0];
    for (int64_t c = 1; c < classes; c++) top = z[c] > top ? z[c] : top;
    double label_score = z[label] - top;
    NAME(exponentials)(z, top, classes, r);
    double sum = sum_of(r, classes), inverse = 1.0 / sum, each = factor * inverse; /* one division */
    double label_share = r[label] * inverse;
    for (int64_t c = 0; c < classes; c++) r[c] = (float)(r[c] * each);
    r[label] = (float)((label_share - 1.0) * factor);
    return weight * (log(sum) - label_score);
}

/* The (weighted) loss of one row from its raw scores z, and a count in *correct when its prediction
   is its label: C >= 2 classes, the first top score (NaN counted largest, as torch's max); one logit,
   positive where the float32 logit is above the threshold's logit (as model.decide). `e`: room for
   `classes` floats. */
INLINE double NAME(row_sums)(const struct batch *in, const struct model *m, int64_t row, double *z,
                             int64_t *correct, float *e) {
    int64_t at = in->index ? in->index[row] : row, label = in->labels[at], classes = m->classes;
    double weight = in->weights ? in->weights[at] : 1.0;
    if (classes == 1) {
        double logit = (double)(float)(z[0] * m->scale + m->b[0]), y = (double)label;
        *correct += ((float)logit > (float)m->threshold_logit) == (label == 1);
        return weight * (fmax(logit, 0.0) - logit * y + log1p(exp(-fabs(logit))));
    }
    int64_t top = 0;
    for (int64_t c = 0; c < classes; c++) {
        z[c] = (double)(float)(z[c] * m->scale + m->b[c]); /* the float32 logits torch would have */
        if (!isnan(z[top]) && (isnan(z[c]) || z[c] > z[top])) top = c;
    }
    *correct += top == label;
    double peak = z[top];
    NAME(exponentials)(z, peak, classes, e);
    return weight * (log(sum_of(e, classes)) - (z[label] - peak));
}

/* s[r * classes + c] = w[c] . x[r] for the group's ROWS rows and classes [c0, c0 + cb); asks for a line
   of the next block's rows (`ahead`) with each chunk while lines are left, then runs the rest of the
   chunks without asking (with many classes, most of a block's chunks come after its lines are all
   asked for, and the asking's loads and branches had taken registers from the products) */
#define SCORE_CHUNK(j)                                                           \
    {                                                                            \
        int64_t k = live[j];                                                     \
        VFLOAT v[ROWS];                                                          \
        for (int r = 0; r < ROWS; r++) v[r] = NAME(load)(x[r] + k);              \
        for (int c = 0; c < cb; c++) {                                           \
            VFLOAT wc = NAME(load)(w + (c0 + c) * w_stride + k);                 \
            for (int r = 0; r < ROWS; r++) a[r][c] += wc * v[r];                 \
        }                                                                        \
    }
INLINE void NAME(score)(const float *const *x, const int32_t *live, int64_t n_live, const float *w,
                        int64_t w_stride, int64_t d, int64_t classes, int64_t c0, int cb, double *s,
                        const struct batch *in, struct ahead *ahead) {
    VFLOAT a[ROWS][CLASS_BLOCK];
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < CLASS_BLOCK; c++) a[r][c] = (VFLOAT){0};
    int64_t j = 0;
    for (; j < n_live && prefetch_line(in, ahead); j++) SCORE_CHUNK(j)
    for (; j < n_live; j++) SCORE_CHUNK(j)
    for (int r = 0; r < ROWS; r++) {
        for (int c = 0; c < cb; c++) {
            float t = NAME(total)(a[r][c]);
            const float *wc = w + (c0 + c) * w_stride;
            for (int64_t j = d / LANES * LANES; j < d; j++) t += wc[j] * x[r][j];
            s[r * classes + c0 + c] = t;
        }
    }
}

/* g[c] += sum over the block's n rows of res[r * classes + c] * x[r], for classes [c0, c0 + cb): each
   live chunk of the cb gradients is loaded once, summed over the rows in registers, stored once */
INLINE void NAME(add)(const float *const *x, int n, const int32_t *live, int64_t n_live, const float *res,
                      float *g, int64_t g_stride, int64_t d, int64_t classes, int64_t c0, int cb) {
    for (int64_t j = 0; j < n_live; j++) {
        int64_t k = live[j];
        VFLOAT sum[GRAD_BLOCK];
        for (int c = 0; c < cb; c++) sum[c] = NAME(load)(g + (c0 + c) * g_stride + k);
        for (int r = 0; r < n; r++) {
            VFLOAT v = NAME(load)(x[r] + k);
            const float *rr = res + r * classes + c0;
            for (int c = 0; c < cb; c++) sum[c] += rr[c] * v;
        }
        for (int c = 0; c < cb; c++) NAME(store)(g + (c0 + c) * g_stride + k, sum[c]);
    }
    for (int c = 0; c < cb; c++) {
        float *gc = g + (c0 + c) * g_stride;
        for (int64_t j = d / LANES * LANES; j < d; j++)
            for (int r = 0; r < n; r++) gc[j] += res[r * classes + c0 + c] * x[r][j];
    }
}

/* Marks in mask[] the chunks of LANES features where some row of the group is nonzero, and lists in
   live[] those to multiply: the others would add exact zeros (MNIST's digits leave about a quarter
   blank). With skip_blank 0 (few classes, or a weight NaN or inf: then 0 x w is NaN) every chunk. */
INLINE int64_t NAME(find_live)(const float *const *x, int64_t d, int skip_blank, int32_t *live,
                               uint8_t *mask) {
    int64_t n = 0;
    if (!skip_blank) { /* every chunk, without reading the rows */
        for (int64_t k = 0; k + LANES <= d; k += LANES) {
            mask[k / LANES] = 1;
            live[n++] = (int32_t)k;
        }
        return n;
    }
    VFLOAT zero = {0};
    for (int64_t k = 0; k + LANES <= d; k += LANES) {
        VINT nonzero = NAME(load)(x[0] + k) != zero;
        for (int r = 1; r < ROWS; r++) nonzero |= NAME(load)(x[r] + k) != zero;
        uint64_t bits[sizeof nonzero / sizeof(uint64_t)], any = 0;
        memcpy(bits, &nonzero, sizeof nonzero);
        for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) any |= bits[i];
        int take = any != 0;
        mask[k / LANES] |= (uint8_t)take;
        live[n] = (int32_t)k;
        n += take;
    }
    return n;
}

/* x[r] = the block's row r as floats, for its n rows: a pointer into the data (float32) or into
   work->rows (uint8 rows, converted); x[n .. n + ROWS) repeat its first row, so that its last group
   is whole. */
INLINE void NAME(load_rows)(const struct batch *in, int64_t row, int n, struct work *work, const float **x) {
    const int64_t d = in->features;
    for (int r = 0; r < n; r++) {
        if (row == work->first) prefetch_row(in, row + r + PREFETCH_ROWS);
        int64_t at = batch_at(in, row + r);
        if (!in->is_uint8) {
            x[r] = (const float *)in->x + at * in->x_stride;
            continue;
        }
        const uint8_t *pixels = (const uint8_t *)in->x + at * in->x_stride;
        float *floats = work->rows + r * d;
        for (int64_t k = 0; k < d; k++) floats[k] = pixels[k];
        x[r] = floats;
    }
    for (int r = n; r < n + ROWS; r++) x[r] = x[0];
}

/* The block's n rows as floats in x[] and their raw scores in work->scores; the chunks where some
   row is nonzero (or all, with skip_blank 0) listed in work->block_live, *n_live of them. While the
   block is scored, the next block's rows are asked for, a line between products (by index, rows are
   scattered through memory: their latency would otherwise be the step's); the thread's first block
   asks for its own rows a few ahead as it converts them. */
INLINE void NAME(score_block)(const struct batch *in, const struct model *m, int64_t row, int n,
                              struct work *work, const float **x, int64_t *n_live) {
    const int64_t classes = m->classes, d = in->features, chunks = d / LANES;
    NAME(load_rows)(in, row, n, work, x);
    memset(work->mask, 0, (size_t)chunks);
    int64_t next = row + BLOCK_ROWS, after = next + BLOCK_ROWS < work->last ? next + BLOCK_ROWS : work->last;
    struct ahead ahead = {NULL, 0, 0, next, after};
    for (int r = 0; r < n; r += ROWS) {
        const float *const *group = x + r;
        double *s = work->scores + r * classes;
        int64_t live = NAME(find_live)(group, d, work->skip_blank, work->live, work->mask);
        BY_BLOCKS(CLASS_BLOCK,
                  NAME(score)(group, work->live, live, m->w, m->w_stride, d, classes, c0, cb, s, in, &ahead));
    }
    while (prefetch_line(in, &ahead)) { /* the lines the products left (more lines than live chunks) */
    }
    int64_t count = 0;
    for (int64_t i = 0; i < chunks; i++) {
        work->block_live[count] = (int32_t)(i * LANES);
        count += work->mask[i];
    }
    *n_live = count;
}

/* The summed (weighted) loss of the thread's rows [work->first, work->last); adds each row's
   gradient times m->share to work->gw and work->gb. */
TARGET static double NAME(rows_gradient)(const struct batch *in, const struct model *m, struct work *work) {
    const int64_t classes = m->classes, d = in->features;
    const float *x[BLOCK_ROWS + MAX_ROWS];
    double loss = 0.0;
    for (int64_t row = work->first; row < work->last; row += BLOCK_ROWS) {
        int n = work->last - row < BLOCK_ROWS ? (int)(work->last - row) : BLOCK_ROWS;
        int64_t n_live;
        NAME(score_block)(in, m, row, n, work, x, &n_live);
        for (int r = 0; r < n; r++) {
            float *rr = work->residuals + r * classes;
            loss += NAME(row_loss)(in, m, row + r, work->scores + r * classes, rr);
            for (int64_t c = 0; c < classes; c++) {
                work->gb[c] += rr[c];
                rr[c] *= (float)m->scale;
            }
        }
        BY_BLOCKS(GRAD_BLOCK, NAME(add)(x, n, work->block_live, n_live, work->residuals, work->gw,
                                        work->gw_stride, d, classes, c0, cb));
    }
    return loss;
}

/* The summed (weighted) loss of the thread's rows, and in work->correct how many rows' top score is
   their label's. */
TARGET static double NAME(rows_sums)(const struct batch *in, const struct model *m, struct work *work) {
    const int64_t classes = m->classes;
    const float *x[BLOCK_ROWS + MAX_ROWS];
    double loss = 0.0;
    for (int64_t row = work->first; row < work->last; row += BLOCK_ROWS) {
        int n = work->last - row < BLOCK_ROWS ? (int)(work->last - row) : BLOCK_ROWS;
        int64_t n_live;
        NAME(score_block)(in, m, row, n, work, x, &n_live);
        for (int r = 0; r < n; r++)
            loss += NAME(row_sums)(in, m, row + r, work->scores + r * classes, &work->correct,
                                   work->residuals + r * classes);
    }
    return loss;
}

#undef SCORE_CHUNK
#undef INLINE
#undef VFLOAT
#undef VINT
#undef NAME
#undef JOIN
#undef JOIN2
#undef LANES
#undef ROWS
#undef CLASS_BLOCK
#undef GRAD_BLOCK
#undef TARGET
#undef SUFFIX
