/* The log-loss gradient of a batch for logistic regression, and a set's loss and correct count, each
   in one call.

   Why by hand: with a handful of classes, a training step in eager PyTorch is about a dozen small
   kernels (gather, convert, two thin GEMMs, softmax, gathers, sums), each with its dispatch cost, and
   large batches go through memory several times. Here rows are read straight from the data set (by
   index), a block of BLOCK_ROWS at a time: converted once, scored against every class, turned into
   residuals and added to the gradient while still in cache. Nothing in proportion to the batch is
   allocated or written: each thread's buffers hold one block, and a batch cut into parts adds one
   gradient per part (at most MAX_PARTS), so the time per row is about the same for a batch of 10
   rows as for the whole set. Helper threads are kept between calls (see `run_call`).

   Arithmetic: float32 products with float32 accumulators (as BLAS), the softmax's exponentials in
   float32 (as torch's; a vector at a time, within 2 ulp: `exp_lanes`), their sum, the log and the
   loss in float64. Rows are visited in order, and
   each row's scores depend only on that row, so a row's residual does not depend on the batch it is
   in; the gradient sums a block of rows in registers before adding it, so its rounding depends on
   how the rows fall into blocks. A batch is cut into parts (by its size and width alone), each summed
   into its own gradient, then added in order, and `threads` threads share out the parts: the same
   result for any number of threads. The version (avx512, avx2 or baseline: four-float vectors) is
   the best this CPU has, or the one named by the environment variable TORCHLOGREG_CPU_CAPABILITY;
   their sums run in different orders, so results differ between versions at float32's rounding, as
   BLAS's do between CPUs.

   Entry points: gradient(...) and sums(...), keyword arguments only, every array a buffer (NumPy
   arrays; the fused module passes views of the tensors); instruction_sets(), instruction_set_in_use()
   and use_instruction_set(name) list and pick the versions. Dtypes, shapes, contiguity, writability,
   every row index and every label are checked before anything is read or written: a mismatch raises
   ValueError (IndexError for an index or label), never an out-of-bounds access. The products exist
   once per instruction set (_fused_kernel.h, included once per version below), picked at run time. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#define CAPABILITY_VARIABLE "TORCHLOGREG_CPU_CAPABILITY"
#define MAX_THREADS 64
#define MAX_PARTS 64
/* How a batch is cut into parts (part_count), by its rows, classes and features alone. A large batch:
   parts of MIN_PART_ROWS rows (up to MAX_PARTS; each adds its own copy of the gradient) ... */
#define MIN_PART_ROWS 2048
/* ... or of wide rows, up to WIDE_PARTS parts of MIN_PART_WORK multiply-adds (a row's features x its
   classes; MIN_PART_ROWS of MNIST's) and WIDE_PART_ROWS rows (a 100-class model of 28 x 56 pictures
   at batch 1,024: 8 parts) ... */
#define MIN_PART_WORK ((int64_t)MIN_PART_ROWS * 784 * 10)
#define WIDE_PARTS 8
#define WIDE_PART_ROWS 64
/* ... and a mini-batch step, up to STEP_PARTS parts of STEP_PART_WORK multiply-adds and STEP_PART_ROWS
   rows: a 256-row MNIST step is 2 parts of 128, 100 rows 2 of 50 (each part costs a gradient to
   clear and add, and its own start, which showed on one thread with 4 parts of 64 rows). */
#define STEP_PART_WORK ((int64_t)32 * 784 * 10)
#define STEP_PARTS 2
#define STEP_PART_ROWS 32
/* Blank chunks (0 in every row of a group) are skipped from this many classes up: with fewer, a
   chunk's products cost less than finding out whether it is blank (measured on MNIST's rows: with one
   logit to six classes taking every chunk was faster, from ten classes skipping) */
#define SKIP_BLANK_CLASSES 8

struct batch {
    const void *x;        /* rows of features: uint8 or float32, C-contiguous */
    int is_uint8;
    int64_t rows;         /* rows in this batch */
    int64_t x_rows;       /* rows of x, labels and weights: the bound of index's values */
    int64_t x_stride;     /* elements between rows of x */
    int64_t features;
    const int64_t *index; /* the batch's rows of x, labels and weights; NULL: rows 0 .. rows-1 */
    const int64_t *labels;
    const float *weights; /* per-row sample weights, or NULL */
};

struct model {
    const float *w;       /* (classes, features) weights, rows w_stride apart */
    int64_t w_stride;
    const float *b;
    int64_t classes;      /* 1: one logit (binary) */
    double scale;         /* the features are x * scale */
    double share;         /* each row's gradient is added times this */
    double threshold_logit; /* one logit: sums() counts a row positive where its logit is above this */
};

/* One thread's rows, buffers and results. */
struct work {
    int64_t first, last;  /* the thread's rows of the batch: [first, last) */
    float *rows;          /* a block's uint8 rows, converted */
    double *scores;       /* a block's rows of scores */
    float *residuals;     /* a block's rows of residuals */
    int32_t *live;        /* offsets of the chunks of features where a group of rows has a nonzero */
    int32_t *block_live;  /* the same for the whole block */
    uint8_t *mask;        /* per chunk: whether some group of the block has a nonzero there */
    int skip_blank;       /* 0: every chunk is taken (under SKIP_BLANK_CLASSES classes, or weights
                             holding a NaN or inf, which 0 x w must spread) */
    float *gw;            /* the gradient this thread adds to, rows gw_stride apart */
    int64_t gw_stride;
    float *gb;
    double loss;          /* results */
    int64_t correct;
};

static inline int64_t batch_at(const struct batch *in, int64_t row) {
    return in->index ? in->index[row] : row;
}

/* The sum of e[0..classes) in float64, in four interleaved running sums (a single running sum waits
   on each add in turn); the same order for every row. */
static inline double sum_of(const float *e, int64_t classes) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t c = 0;
    for (; c + 4 <= classes; c += 4) s0 += e[c], s1 += e[c + 1], s2 += e[c + 2], s3 += e[c + 3];
    for (; c < classes; c++) s0 += e[c];
    return (s0 + s1) + (s2 + s3);
}

/* Ask for row `row` of the batch ahead of its use: read by index, rows are scattered and the hardware
   prefetcher cannot guess them; in order, it starts too late for rows of a few cache lines. */
static inline void prefetch_row(const struct batch *in, int64_t row) {
    if (row >= in->rows) return;
    size_t size = in->is_uint8 ? 1 : sizeof(float), bytes = (size_t)in->features * size;
    const char *start = (const char *)in->x + batch_at(in, row) * in->x_stride * size;
    for (size_t line = 0; line < bytes; line += 64) __builtin_prefetch(start + line);
}

/* The next block's rows, asked for a cache line at a time between the products (a burst of requests
   fills the core's few line buffers and stalls it): the line at `line` of the row at `start`, then
   the rest of rows [row, last). */
struct ahead {
    const char *start;
    size_t line, bytes;
    int64_t row, last;
};

/* Asks for the next line; 0 when none is left. */
static inline int prefetch_line(const struct batch *in, struct ahead *ahead) {
    if (ahead->line >= ahead->bytes) {
        if (ahead->row >= ahead->last) return 0;
        size_t size = in->is_uint8 ? 1 : sizeof(float);
        ahead->start = (const char *)in->x + batch_at(in, ahead->row) * in->x_stride * size;
        ahead->bytes = (size_t)in->features * size;
        ahead->line = 0;
        ahead->row++;
    }
    __builtin_prefetch(ahead->start + ahead->line, 0, 1); /* to L2: a line buffer is free sooner */
    ahead->line += 64;
    return 1;
}

/* Rows per block: every version's (BLOCK_ROWS rows, in groups of ROWS rows). ROWS x CLASS_BLOCK
   accumulators, the group's rows and a weight fit 32 registers (AVX-512) or 16 (AVX2, SSE);
   GRAD_BLOCK gradient chunks, a row and a broadcast residual fit either. */
#define MAX_BLOCK 10 /* the largest CLASS_BLOCK or GRAD_BLOCK that BY_BLOCKS dispatches */
#ifndef MAX_ROWS      /* (overridable, for the tests that the checks below fail a bad value) */
#define MAX_ROWS 4
#endif
#ifndef BLOCK_ROWS
#define BLOCK_ROWS 32
#endif
#define PREFETCH_ROWS 4

/* `call` once per block of `size` classes, with `cb` a constant so that the accumulators are
   registers; a switch case above `size` is never taken (cb <= size) and compiles to nothing. */
#define BY_BLOCKS_CASE(n, size, call) \
    case n: if (n <= size) { const int cb = n <= size ? n : size; call; } break;
#define BY_BLOCKS(size, call)                                          \
    for (int64_t c0 = 0; c0 < classes; c0 += size) {                   \
        switch (classes - c0 < size ? classes - c0 : size) {           \
            BY_BLOCKS_CASE(1, size, call)                              \
            BY_BLOCKS_CASE(2, size, call)                              \
            BY_BLOCKS_CASE(3, size, call)                              \
            BY_BLOCKS_CASE(4, size, call)                              \
            BY_BLOCKS_CASE(5, size, call)                              \
            BY_BLOCKS_CASE(6, size, call)                              \
            BY_BLOCKS_CASE(7, size, call)                              \
            BY_BLOCKS_CASE(8, size, call)                              \
            BY_BLOCKS_CASE(9, size, call)                              \
            default: { const int cb = size; call; } break;             \
        }                                                              \
    }
_Static_assert(MAX_BLOCK == 10, "BY_BLOCKS has cases 1 to 9 and a default of the block's size");

#if defined(__x86_64__) && defined(__GNUC__)
#define LANES 16
#define ROWS 4
#define CLASS_BLOCK 5
#define GRAD_BLOCK 10
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define SUFFIX avx512
#include "_fused_kernel.h"
#define LANES 8
#define ROWS 2
#define CLASS_BLOCK 5
#define GRAD_BLOCK 10
#define TARGET __attribute__((target("avx2,fma")))
#define SUFFIX avx2
#include "_fused_kernel.h"
#endif
#define LANES 4
#define ROWS 2
#define CLASS_BLOCK 5
#define GRAD_BLOCK 10
#define TARGET
#define SUFFIX baseline
#include "_fused_kernel.h"
#undef BY_BLOCKS
#undef BY_BLOCKS_CASE

/* Every index within x's rows and every label within the classes, checked before anything is read
   or written: a bad one raises IndexError and leaves the gradients as they were. */
static int check_rows(const struct batch *in, int64_t classes) {
    int64_t bound = classes == 1 ? 2 : classes;
    for (int64_t row = 0; row < in->rows; row++) {
        int64_t at = batch_at(in, row);
        if (at < 0 || at >= in->x_rows) {
            PyErr_Format(PyExc_IndexError, "row index %lld is out of range for %lld rows", (long long)at,
                         (long long)in->x_rows);
            return 0;
        }
        if (in->labels[at] < 0 || in->labels[at] >= bound) {
            PyErr_Format(PyExc_IndexError, "label %lld (row %lld) is out of range for %lld classes",
                         (long long)in->labels[at], (long long)at, (long long)bound);
            return 0;
        }
    }
    return 1;
}

/* Loops outside the kernels compiled once per vector width and picked at load time (GCC's
   target_clones). The steps' update loops have no sums across elements but moved_along's fixed lanes
   and use no fused multiply-adds, so each version computes the same floats. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) /* (ifuncs) */
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default"), optimize("fp-contract=off")))
#else
#define CLONES
#endif

/* Whether all weights and biases are finite: blank chunks may then be skipped, as 0 x w (and 0 x a
   residual) adds nothing. An integer test of the exponent bits, one loop a row, in the widest vectors
   (it runs before every step: at a few rows a step, in baseline vectors, it had been a tenth of one). */
CLONES static int all_finite(const struct model *m, int64_t features) {
    uint32_t bad = 0;
    for (int64_t c = 0; c < m->classes; c++) {
        const float *row = m->w + c * m->w_stride;
        for (int64_t k = 0; k < features; k++) {
            uint32_t bits;
            memcpy(&bits, row + k, sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u ? 1u : 0u;
        }
    }
    for (int64_t c = 0; c < m->classes; c++) {
        uint32_t bits;
        memcpy(&bits, m->b + c, sizeof bits);
        bad |= (bits & 0x7f800000u) == 0x7f800000u ? 1u : 0u;
    }
    return !bad;
}

typedef double (*rows_kernel)(const struct batch *, const struct model *, struct work *);

/* The kernels for each instruction set this CPU has, best first; `chosen` is the one in use. */
struct kernels {
    const char *name;
    rows_kernel gradient;
    rows_kernel sums;
};

static struct kernels supported[3];
static int n_supported;
static struct kernels chosen;

static void find_kernels(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        supported[n_supported++] = (struct kernels){"avx512", rows_gradient_avx512, rows_sums_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        supported[n_supported++] = (struct kernels){"avx2", rows_gradient_avx2, rows_sums_avx2};
#endif
    supported[n_supported++] = (struct kernels){"baseline", rows_gradient_baseline, rows_sums_baseline};
    chosen = supported[0];
}

/* --- arguments: buffers checked by name, dtype, shape and contiguity ------------------------------ */

/* A buffer's element kind from its struct-module format: 'B' uint8, 'f' float32, 'q' int64, 0 other. */
static char kind_of(const Py_buffer *view) {
    const char *format = view->format ? view->format : "B";
    if (*format == '@' || *format == '=' || *format == '<') format++;
    if (format[0] == '\0' || format[1] != '\0') return 0;
    if (*format == 'B' && view->itemsize == 1) return 'B';
    if (*format == 'f' && view->itemsize == 4) return 'f';
    if ((*format == 'q' || *format == 'l') && view->itemsize == 8) return 'q';
    if (*format == 'd' && view->itemsize == 8) return 'd';
    return 0;
}

static const char *kind_name(char kind) {
    return kind == 'B'   ? "uint8"
           : kind == 'f' ? "float32"
           : kind == 'q' ? "int64"
           : kind == 'd' ? "float64"
                         : "uint8 or float32";
}

/* The buffer of argument `name` (None allowed when `optional`): C-contiguous, `ndim` dimensions,
   elements of kind `kind` (or 'x': uint8 or float32), writable when `writable`. */
static int get_buffer(PyObject *object, const char *function, const char *name, int ndim, char kind,
                      int writable, int optional, Py_buffer *view) {
    view->obj = NULL;
    if (object == Py_None && optional) return 1;
    if (PyObject_GetBuffer(object, view, PyBUF_RECORDS_RO | (writable ? PyBUF_WRITABLE : 0)) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s(): %s must be a%s array with the buffer protocol, got %s", function,
                     name, writable ? " writable" : "n", Py_TYPE(object)->tp_name);
        return 0;
    }
    char found = kind_of(view);
    int kind_ok = kind == 'x' ? (found == 'B' || found == 'f') : found == kind;
    if (!kind_ok || view->ndim != ndim || !PyBuffer_IsContiguous(view, 'C')) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be a C-contiguous %dD %s array, got %dD of format '%s'%s",
                     function, name, ndim, kind_name(kind), view->ndim, view->format ? view->format : "B",
                     PyBuffer_IsContiguous(view, 'C') ? "" : ", not contiguous");
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    return 1;
}

static int shape_error(const char *function, const char *name, const char *what, Py_ssize_t got,
                       Py_ssize_t wanted) {
    PyErr_Format(PyExc_ValueError, "%s(): %s has %zd %s, expected %zd", function, name, got, what, wanted);
    return 0;
}

enum { X, LABELS, WEIGHT, BIAS, INDEX, SAMPLE_WEIGHT, GRAD_WEIGHT, GRAD_BIAS, N_BUFFERS };

struct job {
    struct work work;
    void *memory;
    int64_t features, classes; /* what `memory` is sized for */
};

/* One call's checked arguments: the buffers (released by `release_call`), the batch and the model,
   and the calling thread's buffers, kept over a call's steps. */
struct call {
    Py_buffer views[N_BUFFERS];
    struct batch in;
    struct model m;
    float *gw, *gb;
    int accumulate;
    int threads;
    struct job job;   /* the calling thread's work buffers */
    float *gradients; /* its parts' gradients */
    size_t floats;
    int helpers;      /* 1: the call has the helper threads; -1: it runs alone; 0: not asked yet */
    int published;    /* whether it gave the helpers a round */
};

static void release_call(struct call *call) {
    for (int i = 0; i < N_BUFFERS; i++)
        if (call->views[i].obj) PyBuffer_Release(&call->views[i]);
    free(call->job.memory);
    free(call->gradients);
}

/* Fills `call` from the objects, checking everything the kernels will read or write. */
static int check_call(struct call *call, PyObject **objects, const char *function, int sums, double scale,
                      double share, int accumulate, int threads) {
    static const char *names[N_BUFFERS] = {"x", "labels", "weight", "bias", "index", "sample_weight",
                                           "grad_weight", "grad_bias"};
    static const int ndims[N_BUFFERS] = {2, 1, 2, 1, 1, 1, 2, 1};
    static const char kinds[N_BUFFERS] = {'x', 'q', 'f', 'f', 'q', 'f', 'f', 'f'};
    Py_buffer *v = call->views;
    for (int i = 0; i < N_BUFFERS; i++) v[i].obj = NULL;
    call->job = (struct job){.memory = NULL};
    call->gradients = NULL;
    call->floats = 0;
    call->helpers = call->published = 0;
    for (int i = 0; i < N_BUFFERS; i++) {
        if (sums && (i == GRAD_WEIGHT || i == GRAD_BIAS)) continue;
        int writable = i == GRAD_WEIGHT || i == GRAD_BIAS, optional = i == INDEX || i == SAMPLE_WEIGHT;
        if (!get_buffer(objects[i], function, names[i], ndims[i], kinds[i], writable, optional, &v[i])) return 0;
    }
    Py_ssize_t x_rows = v[X].shape[0], features = v[X].shape[1], classes = v[WEIGHT].shape[0];
    if (v[LABELS].shape[0] != x_rows) return shape_error(function, "labels", "rows", v[LABELS].shape[0], x_rows);
    if (v[SAMPLE_WEIGHT].obj && v[SAMPLE_WEIGHT].shape[0] != x_rows)
        return shape_error(function, "sample_weight", "rows", v[SAMPLE_WEIGHT].shape[0], x_rows);
    if (v[WEIGHT].shape[1] != features)
        return shape_error(function, "weight", "features", v[WEIGHT].shape[1], features);
    if (v[BIAS].shape[0] != classes) return shape_error(function, "bias", "classes", v[BIAS].shape[0], classes);
    if (classes < 1) return shape_error(function, "weight", "classes", classes, 1);
    if (!sums && (v[GRAD_WEIGHT].shape[0] != classes || v[GRAD_WEIGHT].shape[1] != features)) {
        PyErr_Format(PyExc_ValueError, "%s(): grad_weight has shape (%zd, %zd), expected weight's (%zd, %zd)",
                     function, v[GRAD_WEIGHT].shape[0], v[GRAD_WEIGHT].shape[1], classes, features);
        return 0;
    }
    if (!sums && v[GRAD_BIAS].shape[0] != classes)
        return shape_error(function, "grad_bias", "classes", v[GRAD_BIAS].shape[0], classes);
    if (threads < 1) {
        PyErr_Format(PyExc_ValueError, "%s(): threads must be >= 1, got %d", function, threads);
        return 0;
    }
    call->in = (struct batch){v[X].buf, kind_of(&v[X]) == 'B', v[INDEX].obj ? v[INDEX].shape[0] : x_rows,
                              x_rows, features, features, v[INDEX].obj ? v[INDEX].buf : NULL,
                              v[LABELS].buf, v[SAMPLE_WEIGHT].obj ? v[SAMPLE_WEIGHT].buf : NULL};
    call->m = (struct model){v[WEIGHT].buf, features, v[BIAS].buf, classes, scale, share, 0.5};
    call->gw = sums ? NULL : v[GRAD_WEIGHT].buf;
    call->gb = sums ? NULL : v[GRAD_BIAS].buf;
    call->accumulate = accumulate;
    call->threads = threads;
    return check_rows(&call->in, classes);
}

/* --- running: the calling thread and helper threads kept between calls ---------------------------

   A batch is cut into parts by its size alone (`part_count`), each part's gradient summed on its own,
   then the parts added in order: the result depends on the rows alone, not on the threads or on which
   thread took a part. The calling thread takes parts from the first, helpers from the last. Helpers
   are started once and kept, waiting a while for the next round of parts and then asleep: starting
   a thread per call cost about as much as a mini-batch step's part, so steps ran on one thread.
   The caller does not wait long for a helper's part: a part a helper still holds when the caller has
   run out of parts is waited for about as long as a part took the caller, then computed by it too (a
   helper that another program holds off its core would otherwise stall every step; the first result
   counts, and both are the same), and the helpers then sit out a number of rounds that doubles while
   they keep being held up. Before a call returns, the caller waits for every helper to leave the
   call's arrays. One call at a time has the helpers; a call made meanwhile from another Python
   thread runs its parts on its own thread. A forked child starts helpers of its own.

   Two races are left on purpose, both harmless on the compilers and CPUs this builds for, though a
   race detector reports them: a late helper still reads the weights while the caller's next step
   writes them (its part is thrown away: the round is over), and a helper copies the round (`now`)
   with plain loads, then checks the sequence number around the copy (a seqlock). */

/* A thread's buffers in one allocation, sized by the features and classes (never by the batch).
   malloc, not calloc: each block writes what it reads (load_rows its converted rows and the group's
   padding pointers; score every class of every whole group; row_loss every residual of its n rows,
   and row_sums uses a row's residuals as its exponentials' scratch;
   find_live each live[] entry it counts; score_block the mask and block_live[] up to its count); a
   thread that gets no part, or a batch of no rows, reads none of them. Kept while the sizes fit. */
static int prepare_job(struct job *job, int64_t d, int64_t classes, int skip_blank) {
    if (!job->memory || job->features != d || job->classes != classes) {
        const int64_t chunks = d / 4 + 1, block = BLOCK_ROWS + MAX_ROWS;
        size_t floats = (size_t)(block * d + block * classes);
        size_t bytes = sizeof(double) * (size_t)(block * classes) + sizeof(float) * floats +
                       sizeof(int32_t) * (size_t)(2 * chunks) + (size_t)chunks;
        free(job->memory);
        job->memory = malloc(bytes);
        job->features = job->classes = 0;
        if (!job->memory) return 0;
        job->features = d, job->classes = classes;
        double *scores = (double *)job->memory;
        float *rows = (float *)(scores + block * classes), *residuals = rows + block * d;
        int32_t *live = (int32_t *)(rows + floats);
        job->work = (struct work){0, 0, rows, scores, residuals, live, live + chunks,
                                  (uint8_t *)(live + 2 * chunks), 0, NULL, d, NULL, 0.0, 0};
    }
    job->work.skip_blank = skip_blank;
    return 1;
}

/* The thread's floating-point mode for the kernels: subnormal inputs read as 0 and results flushed
   to 0 (x86's DAZ and FTZ). Adam leaves weights of rarely lit features around 1e-38, and each
   product with one took a microcode assist, which made a step several times slower; such a weight
   changes no logit in float32. Returns the mode to restore. */
static unsigned int flush_subnormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned int before = _mm_getcsr();
    _mm_setcsr(before | 0x8040u);
    return before;
#else
    return 0;
#endif
}

static void restore_mode(unsigned int before) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(before);
#else
    (void)before;
#endif
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
}

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* How many parts a batch is cut into, from its rows, classes and features alone. */
static int part_count(int64_t rows, int64_t classes, int64_t d) {
    int64_t work = rows * classes * d, by_rows = rows / MIN_PART_ROWS;
    int64_t wide = work / MIN_PART_WORK, step = work / STEP_PART_WORK;
    wide = wide > WIDE_PARTS ? WIDE_PARTS : wide;
    wide = wide > rows / WIDE_PART_ROWS ? rows / WIDE_PART_ROWS : wide;
    step = step > STEP_PARTS ? STEP_PARTS : step;
    step = step > rows / STEP_PART_ROWS ? rows / STEP_PART_ROWS : step;
    int64_t count = by_rows > wide ? by_rows : wide;
    count = count > step ? count : step;
    return (int)(count < 1 ? 1 : count > MAX_PARTS ? MAX_PARTS : count);
}

/* What a helper reads of a round, copied under the round's sequence number (a seqlock). */
struct round {
    struct batch in;
    struct model m;
    rows_kernel kernel;
    int sums, count, helpers, skip_blank;
    int64_t rows_each;
};

/* A part's state in a round: round << 8 | owner << 2 | status (owner 0: the caller). */
enum { FREE = 0, TAKEN = 1, DONE = 2 };
#define PART_STATE(round, owner, status) ((round) << 8 | (int64_t)(owner) << 2 | (status))

struct helper {
    int owner; /* 1 .. MAX_THREADS - 1 */
    int64_t seen; /* the last sequence number it looked at */
    int spin;     /* whether it waits for the next round spinning (it took part in the last) */
    int asleep;   /* atomic: waiting on pool.wake */
    struct job job;
    float *slots[MAX_PARTS]; /* its parts' gradients, one buffer of slot_size floats each, kept */
    int64_t slot_size;
    int slot_of[MAX_PARTS];  /* the slot of each part it took in the round */
    double loss[MAX_PARTS];
    int64_t correct[MAX_PARTS];
};

#define LINE __attribute__((aligned(64))) /* a cache line of its own: spinning helpers poll these */

static struct {
    pthread_mutex_t busy;       /* held by the call that has the helpers */
    pthread_mutex_t sleep_lock; /* with `wake`: helpers asleep between rounds */
    pthread_cond_t wake;
    int started;                /* helpers running (only the caller holding `busy` starts more) */
    int skip, backoff;          /* rounds to run without helpers, and the next such pause (see run_call) */
    LINE int64_t sequence;      /* atomic: odd while `now` is written; the round is sequence / 2 */
    LINE int inside;            /* atomic: helpers reading a round's arrays */
    LINE int64_t state[MAX_PARTS]; /* atomic */
    LINE struct round now;
    struct helper helpers[MAX_THREADS];
} pool = {.busy = PTHREAD_MUTEX_INITIALIZER, .sleep_lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER};

/* A helper waits this long for the next round before it sleeps, yielding its core now and then: long
   enough to span the Python between two full-batch L-BFGS evaluations (a helper woken from sleep
   came too late for the first parts) */
#define SPIN_SECONDS 1e-3
#define MAX_PAUSE 256 /* rounds without helpers, at most, after a helper was held up */

/* The next published sequence number after h->seen: spinning first if h->spin, then asleep. */
static int64_t next_round(struct helper *h) {
    const int64_t seen = h->seen;
    double until = seconds_now() + (h->spin ? SPIN_SECONDS : 0.0);
    int64_t sequence;
    for (int i = 0; h->spin; i++) {
        sequence = __atomic_load_n(&pool.sequence, __ATOMIC_ACQUIRE);
        if (sequence != seen && !(sequence & 1)) return sequence;
        if ((i & 63) == 63) {
            if (seconds_now() > until) break;
            sched_yield();
        }
        relax();
    }
    pthread_mutex_lock(&pool.sleep_lock);
    __atomic_store_n(&h->asleep, 1, __ATOMIC_SEQ_CST);
    while ((sequence = __atomic_load_n(&pool.sequence, __ATOMIC_SEQ_CST)) == seen || (sequence & 1))
        pthread_cond_wait(&pool.wake, &pool.sleep_lock);
    __atomic_store_n(&h->asleep, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&pool.sleep_lock);
    return sequence;
}

/* Part `p` of round `r` on `work`, its gradient into `gradient` (cleared first; NULL for sums), its
   loss and correct count into loss[p] and correct[p]: the caller's and a helper's alike. */
static void run_part(const struct round *r, struct work *work, float *gradient, int p, double *loss,
                     int64_t *correct) {
    const int64_t classes = r->m.classes, size = classes * r->in.features + classes;
    work->first = p * r->rows_each;
    work->last = p + 1 == r->count ? r->in.rows : work->first + r->rows_each;
    work->correct = 0;
    if (gradient) {
        work->gw = gradient;
        work->gb = gradient + size - classes;
        memset(gradient, 0, sizeof(float) * (size_t)size);
    }
    loss[p] = r->kernel(&r->in, &r->m, work);
    correct[p] = work->correct;
}

/* A helper's share of one round: parts from the last, while they are free, at most an even share of
   them (so that the helpers' gradients add up to about one batch's parts, not one each). */
static void help(struct helper *h, const struct round *r, int64_t round) {
    const int64_t classes = r->m.classes, size = classes * r->in.features + classes;
    if (!r->sums && h->slot_size != size) {
        for (int k = 0; k < MAX_PARTS; k++) {
            free(h->slots[k]);
            h->slots[k] = NULL;
        }
        h->slot_size = size;
    }
    if (!prepare_job(&h->job, r->in.features, classes, r->skip_blank)) return;
    struct work *work = &h->job.work;
    const int share = (r->count + r->helpers) / (r->helpers + 1);
    for (int p = r->count - 1, taken = 0; p >= 0 && taken < share; p--) {
        if (!r->sums && !h->slots[taken] && !(h->slots[taken] = malloc(sizeof(float) * (size_t)size))) return;
        int64_t expected = PART_STATE(round, 0, FREE);
        if (!__atomic_compare_exchange_n(&pool.state[p], &expected, PART_STATE(round, h->owner, TAKEN), 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            if (expected >> 8 != round) return; /* the round is over */
            continue;
        }
        h->slot_of[p] = taken;
        run_part(r, work, r->sums ? NULL : h->slots[taken], p, h->loss, h->correct);
        taken++;
        expected = PART_STATE(round, h->owner, TAKEN);
        if (!__atomic_compare_exchange_n(&pool.state[p], &expected, PART_STATE(round, h->owner, DONE), 0,
                                         __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            return; /* the caller moved on */
    }
}

static void *helper_main(void *argument) {
    struct helper *h = argument;
    flush_subnormals(); /* for good: this thread runs only the kernels */
    for (;;) {
        int64_t sequence = next_round(h);
        __atomic_add_fetch(&pool.inside, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&pool.sequence, __ATOMIC_SEQ_CST) == sequence) {
            struct round r = pool.now;
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&pool.sequence, __ATOMIC_RELAXED) == sequence && r.count) {
                h->spin = h->owner <= r.helpers; /* a helper the rounds do not use sleeps */
                if (h->spin) help(h, &r, sequence / 2);
            }
        }
        __atomic_sub_fetch(&pool.inside, 1, __ATOMIC_SEQ_CST);
        h->seen = sequence;
    }
    return NULL;
}

/* Publish `r` (NULL: no work, the round that ends a call's). */
static void publish(const struct round *r) {
    int64_t sequence = __atomic_load_n(&pool.sequence, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.sequence, sequence + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    int64_t round = (sequence + 2) / 2;
    pool.now = r ? *r : (struct round){.count = 0};
    for (int p = 0; p < pool.now.count; p++) __atomic_store_n(&pool.state[p], PART_STATE(round, 0, FREE), __ATOMIC_RELAXED);
    __atomic_store_n(&pool.sequence, sequence + 2, __ATOMIC_SEQ_CST);
    for (int i = 0; i < pool.now.helpers; i++) { /* (the round that ends a call wakes no one) */
        if (__atomic_load_n(&pool.helpers[i].asleep, __ATOMIC_SEQ_CST)) {
            pthread_mutex_lock(&pool.sleep_lock);
            pthread_cond_broadcast(&pool.wake);
            pthread_mutex_unlock(&pool.sleep_lock);
            break;
        }
    }
}

/* The child has none of the parent's threads, which may have been anywhere (writing `now`, or
   between freeing a buffer and storing its replacement): it starts afresh, leaking their buffers. */
static void forked_child(void) {
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.sleep_lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pool.started = pool.inside = pool.skip = pool.backoff = 0;
    pool.sequence += pool.sequence & 1;
    memset(pool.state, 0, sizeof pool.state);
    memset(&pool.now, 0, sizeof pool.now);
    memset(pool.helpers, 0, sizeof pool.helpers);
}

/* Up to `count` helpers running (as many as could be started). */
static int start_helpers(int count) {
    while (pool.started < count) {
        struct helper *h = &pool.helpers[pool.started];
        h->owner = pool.started + 1;
        h->spin = 1;
        h->seen = __atomic_load_n(&pool.sequence, __ATOMIC_RELAXED); /* (rounds to come, not the last) */
        pthread_attr_t attributes;
        pthread_t id;
        pthread_attr_init(&attributes);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&id, &attributes, helper_main, h);
        pthread_attr_destroy(&attributes);
        if (failed) break;
        pool.started++;
    }
    return pool.started < count ? pool.started : count;
}

/* Whether the call has the helper threads: asked for the first batch of more than one part, then
   kept to its end (`release_helpers`); a call made while another has them runs alone. */
static int has_helpers(struct call *call) {
    if (!call->helpers) call->helpers = call->threads > 1 && pthread_mutex_trylock(&pool.busy) == 0 ? 1 : -1;
    return call->helpers > 0;
}

/* Ends a call: no helper reads its arrays after this returns. */
static void release_helpers(struct call *call) {
    if (call->helpers <= 0) return;
    if (call->published) {
        publish(NULL);
        while (__atomic_load_n(&pool.inside, __ATOMIC_SEQ_CST)) sched_yield();
    }
    pthread_mutex_unlock(&pool.busy);
    call->helpers = call->published = 0;
}

/* Runs the checked call's batch (on the helper threads too where it can have them); the loss, and
   the correct count in *correct. */
static int run_call(struct call *call, int sums, double *loss, int64_t *correct) {
    const struct batch *in = &call->in;
    const int64_t classes = call->m.classes, d = in->features, size = classes * d + classes;
    struct round r = {.in = *in, .m = call->m, .kernel = sums ? chosen.sums : chosen.gradient, .sums = sums,
                      .count = part_count(in->rows, classes, d)};
    r.rows_each = in->rows / r.count;
    r.skip_blank = classes >= SKIP_BLANK_CLASSES && all_finite(&call->m, d);
    int helpers = (call->threads < r.count ? call->threads : r.count) - 1;
    helpers = helpers > MAX_THREADS - 1 ? MAX_THREADS - 1 : helpers;
    r.helpers = helpers > 0 && has_helpers(call) ? start_helpers(helpers) : 0;
    if (r.helpers && pool.skip > 0) { /* a helper was held up lately: alone for a while */
        pool.skip--;
        r.helpers = 0;
    }
    struct job *job = &call->job;
    if (!prepare_job(job, d, classes, r.skip_blank)) return 0;
    if (!sums && !call->accumulate) {
        memset(call->gw, 0, sizeof(float) * (size_t)(classes * d));
        memset(call->gb, 0, sizeof(float) * (size_t)classes);
    }
    *loss = 0.0;
    *correct = 0;
    if (r.count == 1) { /* one part: straight into the caller's gradient */
        job->work.first = 0, job->work.last = in->rows, job->work.correct = 0;
        job->work.gw = call->gw, job->work.gb = call->gb;
        *loss = r.kernel(&r.in, &r.m, &job->work);
        *correct = job->work.correct;
        return 1;
    }
    if (!sums && call->floats < (size_t)(r.count * size)) {
        free(call->gradients);
        call->floats = 0;
        if (!(call->gradients = malloc(sizeof(float) * (size_t)(r.count * size)))) return 0;
        call->floats = (size_t)(r.count * size);
    }
    double losses[MAX_PARTS];
    int64_t counts[MAX_PARTS], round = 0;
    int mine[MAX_PARTS] = {0}, waiting[MAX_PARTS], pending = 0, held_up = 0;
    if (r.helpers) {
        publish(&r);
        call->published = 1;
        round = __atomic_load_n(&pool.sequence, __ATOMIC_RELAXED) / 2;
    }
    double started = seconds_now();
    for (int p = 0; p < r.count; p++) {
        int64_t expected = PART_STATE(round, 0, FREE);
        if (r.helpers && !__atomic_compare_exchange_n(&pool.state[p], &expected, PART_STATE(round, 0, TAKEN), 0,
                                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            waiting[pending++] = p; /* a helper's */
            continue;
        }
        run_part(&r, &job->work, sums ? NULL : call->gradients + p * size, p, losses, counts);
        mine[p] = 1;
    }
    if (pending) {
        int own = r.count - pending;
        double now = seconds_now(), until = now + (own ? (now - started) / own : SPIN_SECONDS);
        for (int i = 0; i < pending; i++) {
            int p = waiting[i];
            for (int spin = 0;; spin++) {
                if ((__atomic_load_n(&pool.state[p], __ATOMIC_ACQUIRE) & 3) == DONE) break;
                if ((spin & 63) == 63 && seconds_now() > until) {
                    /* held up: ours too */
                    run_part(&r, &job->work, sums ? NULL : call->gradients + p * size, p, losses, counts);
                    mine[p] = 1;
                    held_up = 1;
                    break;
                }
                relax();
            }
        }
    }
    if (r.helpers) { /* held up: pause the helpers for twice as many rounds as last time (at most
                        MAX_PAUSE); a round they served halves the next pause */
        int doubled = pool.backoff ? 2 * pool.backoff : 1;
        pool.backoff = held_up ? (doubled > MAX_PAUSE ? MAX_PAUSE : doubled) : pool.backoff / 2;
        pool.skip = held_up ? pool.backoff : 0;
    }
    for (int p = 0; p < r.count; p++) {
        const float *g = NULL;
        if (mine[p]) {
            *loss += losses[p];
            *correct += counts[p];
            g = sums ? NULL : call->gradients + p * size;
        } else {
            int64_t state = __atomic_load_n(&pool.state[p], __ATOMIC_ACQUIRE); /* done by a helper */
            const struct helper *h = &pool.helpers[((state >> 2) & 63) - 1];
            *loss += h->loss[p];
            *correct += h->correct[p];
            g = sums ? NULL : h->slots[h->slot_of[p]];
        }
        if (sums) continue;
        for (int64_t i = 0; i < classes * d; i++) call->gw[i] += g[i];
        for (int64_t c = 0; c < classes; c++) call->gb[c] += g[classes * d + c];
    }
    return 1;
}

/* --- many steps in one call: the mini-batch loop's inner part ---------------------------------------

   Why by hand: a mini-batch step driven from Python costs tens of microseconds (the call, the
   penalty's and the centring's kernels, the update's), while the products of a step of a few rows
   cost a few: under a few hundred rows a batch, Python was most of the time. steps() takes K
   consecutive steps, each the fused gradient of its rows (run_call, as gradient() computes it), the
   penalty's gradient, the centring and an update by optimizers.SGD's or optimizers.Adam's formulas
   in float32 (tests run both paths side by side). The results equal the step-by-step path's up to
   float32's rounding, not to the bit: torch's kernels fuse multiply-adds where these loops do not,
   and the engine's centring adds and subtracts W @ mean where the bias here moves by the change. */

struct rule {
    int adam;                /* 0: SGD (momentum, Nesterov) */
    double momentum;         /* SGD: 0 for none */
    int nesterov;
    double beta1, beta2, eps; /* Adam */
    double steps;            /* Adam's steps taken before the call (a short step adds its share) */
    double prox_l1, prox_l2; /* after each update, W's proximal map for step h = lr x share x prox_scale ... */
    double prox_scale;       /* ... (optimizers.Proximal): soft threshold h l1, then / (1 + h l2) */
};

struct stepping {
    const int64_t *sizes;    /* rows of each step, taken from the batch's index in turn */
    const double *lrs;       /* each step's learning rate */
    int64_t batch;           /* a whole batch's rows: a shorter step is rows / batch of a step (0: none is) */
    double *losses;          /* out: each step's mean loss */
    int64_t count;
    double weight_decay, l1;
    double ceiling;          /* stop after a step whose loss is above this (or not finite) */
    const float *mean;       /* the centre of the features (gradient.Centring), or NULL */
    int step_bias;
    float *first_w, *first_b, *second_w, *second_b; /* SGD: momentum buffers in first_*; Adam: both */
    double *moved;           /* scratch: (classes) the weights' move along the mean */
    float *before;           /* scratch: (features) a row of weights before its update */
};

/* One step's scalars of the rule, in float32 as torch's kernels take them. */
struct scalars {
    float momentum;          /* what the momentum buffer keeps: momentum ^ share */
    float taken;             /* the gradient's weight into it: 1 for a whole step (optimizers.fractional) */
    float step_lr;           /* -lr x share */
    float grad_lr;           /* Nesterov's along the gradient: -lr x share x taken */
    float nesterov_lr;       /* -lr x share x momentum ^ share */
    float adam_lr;           /* -lr x share / c1, or -lr x share where that overflows (c1 then divides) */
    float fold;              /* 1, or c1 where it divides */
    float c2_sqrt, keep1, keep2, take2, eps;
};

/* optimizers.fractional: what a buffer that keeps `rate` a whole step keeps in `share` of one, and the
   gradient's weight into it (as a share of a whole step's); a whole step's exactly (rate, 1). */
static void fractional(double rate, double share, double *kept, double *taken) {
    if (share == 1.0) {
        *kept = rate, *taken = 1.0;
        return;
    }
    if (rate == 0.0) {
        *kept = 0.0, *taken = 1.0;
        return;
    }
    *kept = pow(rate, share); /* 1 - kept as -expm1: the plain difference cancels where kept is near 1 */
    *taken = rate != 1.0 ? -expm1(share * log(rate)) / (1.0 - rate) : share;
}

/* Step scalars for learning rate lr, a step of `share` of a whole one, Adam's count `step` after it. */
static struct scalars scalars_of(const struct rule *r, double lr, double share, double step) {
    double kept, taken;
    fractional(r->momentum, share, &kept, &taken);
    const double step_lr = -lr * share;
    struct scalars k = {(float)kept, (float)taken, (float)step_lr, (float)(step_lr * taken), (float)(step_lr * kept),
                        0.0f,        1.0f,         1.0f,           0.0f,                     0.0f,
                        0.0f,        0.0f};
    if (r->adam) {
        double correction1 = 1.0 - pow(r->beta1, step), keep1 = pow(r->beta1, share), keep2 = pow(r->beta2, share);
        double moving = lr * share;
        int folded = moving / correction1 > FLT_MAX; /* as optimizers.Adam */
        k.adam_lr = folded ? (float)-moving : (float)(-moving / correction1);
        k.fold = folded ? (float)correction1 : 1.0f;
        k.c2_sqrt = (float)sqrt(1.0 - pow(r->beta2, step));
        k.keep1 = (float)(1.0 - keep1), k.keep2 = (float)keep2, k.take2 = (float)(1.0 - keep2);
        k.eps = (float)r->eps;
    }
    return k;
}

/* The change of n parameters p from their gradient g by the rule, as torch's kernels compute it, with
   their buffers (SGD: first is the momentum buffer or NULL; Adam: first and second moments). One loop
   per rule, so that each vectorises, in the widest vectors the CPU has (CLONES): element by element,
   with no fused multiply-adds, so every version gives the same floats. */
CLONES static void update(const struct rule *r, const struct scalars *k, float *restrict p, const float *restrict g,
                   float *restrict first, float *restrict second, int64_t n) {
    if (r->adam) {
        for (int64_t i = 0; i < n; i++) {
            first[i] = first[i] + k->keep1 * (g[i] - first[i]); /* lerp_ with a weight under 0.5 */
            float moment = second[i] * k->keep2;
            second[i] = moment + k->take2 * (g[i] * g[i]);
            float denominator = (__builtin_sqrtf(second[i]) / k->c2_sqrt + k->eps) * k->fold;
            p[i] = p[i] + k->adam_lr * first[i] / denominator; /* addcdiv_: value x t1, then / t2 */
        }
    } else if (first == NULL) {
        for (int64_t i = 0; i < n; i++) p[i] = p[i] + k->step_lr * g[i];
    } else if (k->taken != 1.0f) { /* a short step's buffer: first x kept + g x taken, as mul_ and add_ */
        for (int64_t i = 0; i < n; i++) {
            first[i] = first[i] * k->momentum + k->taken * g[i];
            p[i] = r->nesterov ? (p[i] + k->grad_lr * g[i]) + k->nesterov_lr * first[i] : p[i] + k->step_lr * first[i];
        }
    } else if (r->nesterov) {
        for (int64_t i = 0; i < n; i++) {
            first[i] = g[i] + k->momentum * first[i];
            float after = p[i] + k->grad_lr * g[i];
            p[i] = after + k->nesterov_lr * first[i];
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            first[i] = g[i] + k->momentum * first[i];
            p[i] = p[i] + k->step_lr * first[i];
        }
    }
}

/* sum((after - before) x mean) over n entries, in LANES_SUM float lanes (which vectorise: a double
   sum in order would wait on each add) added in double at the end. */
#define LANES_SUM 16
CLONES static double moved_along(const float *restrict after, const float *restrict before, const float *restrict mean,
                          int64_t n) {
    float lanes[LANES_SUM] = {0.0f};
    int64_t i = 0;
    for (; i + LANES_SUM <= n; i += LANES_SUM)
        for (int j = 0; j < LANES_SUM; j++) lanes[j] += (after[i + j] - before[i + j]) * mean[i + j];
    double total = 0.0;
    for (int j = 0; j < LANES_SUM; j++) total += lanes[j];
    for (; i < n; i++) total += (double)(after[i] - before[i]) * mean[i];
    return total;
}

/* A row's gradient g of n entries with the penalty's gradient at its weights w added (decay: L2, l1:
   L1's sign) and, centred, the bias's gradient gb times the mean taken off, each as its torch op (here
   rather than in apply_step: in the widest vectors, as the update's loops). */
CLONES static void penalise(float *restrict g, const float *restrict w, const float *restrict mean, float gb,
                            float decay, float l1, int64_t n) {
    if (decay != 0.0f)
        for (int64_t i = 0; i < n; i++) g[i] = g[i] + decay * w[i];
    if (l1 != 0.0f)
        for (int64_t i = 0; i < n; i++) g[i] = g[i] + l1 * (float)((w[i] > 0.0f) - (w[i] < 0.0f));
    if (mean)
        for (int64_t i = 0; i < n; i++) g[i] = g[i] - gb * mean[i];
}

/* optimizers.Proximal's map on n weights after their update, for step h, as its torch ops compute it. */
CLONES static void proximal(const struct rule *r, float *restrict w, int64_t n, double h) {
    if (r->prox_l1 != 0.0) {
        const float threshold = (float)(h * r->prox_l1);
        for (int64_t i = 0; i < n; i++) {
            float shrunk = fabsf(w[i]) - threshold;
            shrunk = shrunk > 0.0f ? shrunk : 0.0f;
            w[i] = (float)((w[i] > 0.0f) - (w[i] < 0.0f)) * shrunk;
        }
    }
    if (r->prox_l2 != 0.0) {
        const float divisor = (float)(1.0 + h * r->prox_l2);
        for (int64_t i = 0; i < n; i++) w[i] = w[i] / divisor;
    }
}

/* Step k's penalty and centring on the gradient, then its update of the weights and (step_bias) the
   bias. Centred (gradient.Centring), the step is taken on b + W @ mean: the bias then moves by its own
   step less the weights' move along the mean. A short batch is a step of `share` (the engine's):
   its learning rate and the buffers' decay follow it (scalars_of), the proximal map's step too; Adam's
   count after it is `adam_step`. */
static void apply_step(const struct call *call, const struct rule *r, const struct stepping *s, int64_t k,
                       double share, double adam_step) {
    const int64_t classes = call->m.classes, d = call->in.features;
    float *w = (float *)call->m.w, *b = (float *)call->m.b, *gw = call->gw, *gb = call->gb;
    const float decay = (float)s->weight_decay, l1 = (float)s->l1;
    const float *mean = s->step_bias ? s->mean : NULL;
    if (decay != 0.0f || l1 != 0.0f || mean)
        for (int64_t c = 0; c < classes; c++) penalise(gw + c * d, w + c * d, mean, gb[c], decay, l1, d);
    const struct scalars scalars = scalars_of(r, s->lrs[k], share, adam_step);
    for (int64_t c = 0; c < classes; c++) {
        float *row = w + c * d, *first = s->first_w ? s->first_w + c * d : NULL;
        float *second = s->second_w ? s->second_w + c * d : NULL;
        if (mean) memcpy(s->before, row, sizeof(float) * (size_t)d); /* for the move along the mean */
        update(r, &scalars, row, gw + c * d, first, second, d);
        if (r->prox_scale != 0.0) proximal(r, row, d, s->lrs[k] * share * r->prox_scale);
        if (mean) s->moved[c] = moved_along(row, s->before, mean, d);
    }
    if (!s->step_bias) return;
    update(r, &scalars, b, gb, s->first_b, s->second_b, classes);
    if (mean)
        for (int64_t c = 0; c < classes; c++) b[c] = (float)((double)b[c] - s->moved[c]);
}

/* The checked call's steps: the batch's index holds their rows one step after another. Stops after
   the first step whose loss is not finite or above s->ceiling (the engine's divergence rule: that
   step is taken, as the step-by-step path takes it before its check); *taken counts the steps. */
static int run_steps(struct call *call, const struct rule *r, const struct stepping *s, int64_t *taken) {
    const int64_t *index = call->in.index;
    unsigned int mode = flush_subnormals(); /* as the kernel's threads: the update meets Adam's tiny weights */
    int ok = 1;
    double adam_step = r->steps; /* each step's share added in turn, as optimizers.Adam adds them */
    *taken = 0;
    for (int64_t k = 0; k < s->count; k++) {
        double loss = 0.0;
        int64_t correct = 0, rows = s->sizes[k];
        call->in.index = index;
        call->in.rows = rows;
        const double share = s->batch > rows ? (double)rows / (double)s->batch : 1.0;
        call->m.share = 1.0 / (double)rows;
        if (!(ok = run_call(call, 0, &loss, &correct))) break;
        s->losses[k] = loss / (double)rows;
        adam_step += share;
        apply_step(call, r, s, k, share, adam_step);
        *taken = k + 1;
        if (!isfinite(s->losses[k]) || s->losses[k] > s->ceiling) break;
        index += rows;
    }
    restore_mode(mode);
    return ok;
}

enum { SIZES, LRS, LOSSES, MEAN, FIRST_W, FIRST_B, SECOND_W, SECOND_B, N_STEP_BUFFERS };

static void release_views(Py_buffer *views, int count) {
    for (int i = 0; i < count; i++)
        if (views[i].obj) PyBuffer_Release(&views[i]);
}

/* The buffers steps() adds to gradient()'s, checked against the call's shapes. */
static int check_steps(const struct call *call, PyObject **objects, const struct rule *r, int step_bias,
                       Py_buffer *v, struct stepping *s) {
    static const char *names[N_STEP_BUFFERS] = {"sizes", "lrs", "losses", "mean", "first_weight", "first_bias",
                                                "second_weight", "second_bias"};
    static const int ndims[N_STEP_BUFFERS] = {1, 1, 1, 1, 2, 1, 2, 1};
    static const char kinds[N_STEP_BUFFERS] = {'q', 'd', 'd', 'f', 'f', 'f', 'f', 'f'};
    const int64_t classes = call->m.classes, d = call->in.features;
    const int64_t lengths[N_STEP_BUFFERS] = {-1, -1, -1, d, classes, classes, classes, classes};
    for (int i = 0; i < N_STEP_BUFFERS; i++) v[i].obj = NULL;
    for (int i = 0; i < N_STEP_BUFFERS; i++) {
        int writable = i == LOSSES || i >= FIRST_W, optional = i >= MEAN;
        if (!get_buffer(objects[i], "steps", names[i], ndims[i], kinds[i], writable, optional, &v[i])) return 0;
        if (v[i].obj && lengths[i] >= 0 && v[i].shape[0] != lengths[i])
            return shape_error("steps", names[i], i == MEAN ? "features" : "classes", v[i].shape[0], lengths[i]);
        if (v[i].obj && ndims[i] == 2 && v[i].shape[1] != d)
            return shape_error("steps", names[i], "features", v[i].shape[1], d);
    }
    int64_t count = v[SIZES].shape[0], rows = 0;
    if (v[LRS].shape[0] != count) return shape_error("steps", "lrs", "steps", v[LRS].shape[0], count);
    if (v[LOSSES].shape[0] != count) return shape_error("steps", "losses", "steps", v[LOSSES].shape[0], count);
    const int64_t *sizes = v[SIZES].buf;
    for (int64_t k = 0; k < count; k++) {
        if (sizes[k] < 1) {
            PyErr_Format(PyExc_ValueError, "steps(): sizes[%lld] is %lld, must be >= 1", (long long)k,
                         (long long)sizes[k]);
            return 0;
        }
        rows += sizes[k];
    }
    if (rows != call->in.rows) return shape_error("steps", "index", "rows", call->in.rows, rows);
    int needs_first = r->adam || r->momentum != 0.0f, needs_second = r->adam;
    if ((needs_first && (!v[FIRST_W].obj || (step_bias && !v[FIRST_B].obj))) ||
        (needs_second && (!v[SECOND_W].obj || (step_bias && !v[SECOND_B].obj)))) {
        PyErr_SetString(PyExc_ValueError, "steps(): momentum needs first_weight (and first_bias with step_bias);"
                                          " adam needs first_* and second_*");
        return 0;
    }
    if (call->views[WEIGHT].readonly || call->views[BIAS].readonly) {
        PyErr_SetString(PyExc_ValueError, "steps(): weight and bias must be writable arrays");
        return 0;
    }
    *s = (struct stepping){sizes, v[LRS].buf, 0, v[LOSSES].buf, count, 0.0, 0.0, INFINITY,
                           v[MEAN].obj ? v[MEAN].buf : NULL, step_bias,
                           needs_first ? v[FIRST_W].buf : NULL, needs_first && step_bias ? v[FIRST_B].buf : NULL,
                           needs_second ? v[SECOND_W].buf : NULL, needs_second && step_bias ? v[SECOND_B].buf : NULL,
                           NULL, NULL};
    return 1;
}

/* Whether two buffers share memory. */
static int overlap(const Py_buffer *a, const Py_buffer *b) {
    if (!a->obj || !b->obj || a->len == 0 || b->len == 0) return 0;
    const char *a0 = a->buf, *b0 = b->buf;
    return a0 < b0 + b->len && b0 < a0 + a->len;
}

/* No buffer steps() writes shares memory with another of its arguments (the loops assume so). */
static int check_apart(const struct call *call, const Py_buffer *step_views) {
    static const char *names[N_BUFFERS + N_STEP_BUFFERS] = {
        "x", "labels", "weight", "bias", "index", "sample_weight", "grad_weight", "grad_bias", "sizes", "lrs",
        "losses", "mean", "first_weight", "first_bias", "second_weight", "second_bias"};
    const Py_buffer *all[N_BUFFERS + N_STEP_BUFFERS];
    for (int i = 0; i < N_BUFFERS; i++) all[i] = &call->views[i];
    for (int i = 0; i < N_STEP_BUFFERS; i++) all[N_BUFFERS + i] = &step_views[i];
    static const int written[] = {WEIGHT, BIAS, GRAD_WEIGHT, GRAD_BIAS, N_BUFFERS + LOSSES, N_BUFFERS + FIRST_W,
                                  N_BUFFERS + FIRST_B, N_BUFFERS + SECOND_W, N_BUFFERS + SECOND_B};
    for (size_t w = 0; w < sizeof written / sizeof *written; w++)
        for (int j = 0; j < N_BUFFERS + N_STEP_BUFFERS; j++)
            if (j != written[w] && overlap(all[written[w]], all[j])) {
                PyErr_Format(PyExc_ValueError, "steps(): %s and %s share memory; each must be its own array",
                             names[written[w]], names[j]);
                return 0;
            }
    return 1;
}

static PyObject *steps(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    static char *keywords[] = {"x", "labels", "weight", "bias", "grad_weight", "grad_bias", "index", "sizes",
                               "lrs", "losses", "sample_weight", "mean", "first_weight", "first_bias",
                               "second_weight", "second_bias", "scale", "weight_decay", "l1", "step_bias",
                               "adam", "momentum", "nesterov", "beta1", "beta2", "eps", "adam_steps", "threads",
                               "ceiling", "prox_l1", "prox_l2", "prox_scale", "batch", NULL};
    PyObject *objects[N_BUFFERS] = {NULL}, *extra[N_STEP_BUFFERS] = {NULL};
    objects[SAMPLE_WEIGHT] = Py_None;
    for (int i = MEAN; i < N_STEP_BUFFERS; i++) extra[i] = Py_None;
    double scale = 1.0, weight_decay = 0.0, l1 = 0.0, momentum = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
           ceiling = INFINITY, prox_l1 = 0.0, prox_l2 = 0.0, prox_scale = 0.0;
    int step_bias = 1, adam = 0, nesterov = 0, threads = 1;
    double adam_steps = 0.0;
    long long batch = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOOOOOOOOOOdddppdpddddiddddL:steps", keywords, &objects[X],
                                     &objects[LABELS], &objects[WEIGHT], &objects[BIAS], &objects[GRAD_WEIGHT],
                                     &objects[GRAD_BIAS], &objects[INDEX], &extra[SIZES], &extra[LRS],
                                     &extra[LOSSES], &objects[SAMPLE_WEIGHT], &extra[MEAN], &extra[FIRST_W],
                                     &extra[FIRST_B], &extra[SECOND_W], &extra[SECOND_B], &scale, &weight_decay,
                                     &l1, &step_bias, &adam, &momentum, &nesterov, &beta1, &beta2, &eps,
                                     &adam_steps, &threads, &ceiling, &prox_l1, &prox_l2, &prox_scale, &batch))
        return NULL;
    for (int i = 0; i < N_BUFFERS; i++)
        if (!objects[i]) goto missing;
    for (int i = 0; i < MEAN; i++)
        if (!extra[i]) goto missing;
    if (objects[INDEX] == Py_None) {
        PyErr_SetString(PyExc_ValueError, "steps(): index must be the steps' rows, not None");
        return NULL;
    }
    if (batch < 0) {
        PyErr_Format(PyExc_ValueError, "steps(): batch must be >= 0, got %lld", batch);
        return NULL;
    }
    if (!(adam_steps >= 0.0) || !isfinite(adam_steps)) {
        char given[32];
        snprintf(given, sizeof given, "%g", adam_steps);
        PyErr_Format(PyExc_ValueError, "steps(): adam_steps must be a finite number >= 0, got %s", given);
        return NULL;
    }
    struct rule r = {adam,  momentum, nesterov && momentum > 0.0, beta1, beta2, eps, adam_steps,
                     prox_l1, prox_l2, prox_scale};
    struct call call;
    Py_buffer views[N_STEP_BUFFERS];
    struct stepping s;
    for (int i = 0; i < N_STEP_BUFFERS; i++) views[i].obj = NULL;
    int64_t taken = 0;
    int ok = check_call(&call, objects, "steps", 0, scale, 1.0, 0, threads) &&
             check_steps(&call, extra, &r, step_bias, views, &s) && check_apart(&call, views);
    if (ok) {
        s.weight_decay = weight_decay, s.l1 = l1, s.ceiling = ceiling, s.batch = (int64_t)batch;
        s.moved = malloc(sizeof(double) * (size_t)call.m.classes);
        s.before = malloc(sizeof(float) * (size_t)(call.in.features + 1)); /* (+ 1: never malloc(0)) */
        Py_BEGIN_ALLOW_THREADS
        ok = s.moved && s.before && run_steps(&call, &r, &s, &taken);
        release_helpers(&call);
        Py_END_ALLOW_THREADS
        free(s.moved);
        free(s.before);
        if (!ok) PyErr_NoMemory();
    }
    release_views(views, N_STEP_BUFFERS);
    release_call(&call);
    if (!ok) return NULL;
    return PyLong_FromLongLong((long long)taken);
missing:
    PyErr_SetString(PyExc_TypeError, "steps() needs the keyword arguments x, labels, weight, bias, grad_weight,"
                                     " grad_bias, index, sizes, lrs, losses");
    return NULL;
}

static PyObject *entry(PyObject *args, PyObject *kwargs, int sums) {
    static char *gradient_keywords[] = {"x", "labels", "weight", "bias", "grad_weight", "grad_bias", "index",
                                        "sample_weight", "scale", "share", "accumulate", "threads", NULL};
    static char *sums_keywords[] = {"x", "labels", "weight", "bias", "index", "sample_weight", "scale",
                                    "threads", "threshold", NULL};
    const char *function = sums ? "sums" : "gradient";
    PyObject *objects[N_BUFFERS] = {NULL};
    objects[INDEX] = objects[SAMPLE_WEIGHT] = Py_None;
    double scale = 1.0, share = 1.0, threshold = 0.5;
    int accumulate = 0, threads = 1;
    int parsed = sums ? PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOdid:sums", sums_keywords,
                                                    &objects[X], &objects[LABELS], &objects[WEIGHT],
                                                    &objects[BIAS], &objects[INDEX], &objects[SAMPLE_WEIGHT],
                                                    &scale, &threads, &threshold)
                      : PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOOOOOOddpi:gradient", gradient_keywords,
                                                    &objects[X], &objects[LABELS], &objects[WEIGHT],
                                                    &objects[BIAS], &objects[GRAD_WEIGHT], &objects[GRAD_BIAS],
                                                    &objects[INDEX], &objects[SAMPLE_WEIGHT], &scale, &share,
                                                    &accumulate, &threads);
    if (!parsed) return NULL;
    for (int i = 0; i < N_BUFFERS; i++) {
        if (!objects[i] && !(sums && (i == GRAD_WEIGHT || i == GRAD_BIAS))) {
            PyErr_Format(PyExc_TypeError, "%s() needs the keyword arguments x, labels, weight, bias%s", function,
                         sums ? "" : ", grad_weight, grad_bias");
            return NULL;
        }
    }
    struct call call;
    if (!check_call(&call, objects, function, sums, scale, share, accumulate, threads)) {
        release_call(&call);
        return NULL;
    }
    call.m.threshold_logit = log(threshold / (1.0 - threshold)); /* (as model.threshold_logit) */
    double loss = 0.0;
    int64_t correct = 0;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    unsigned int mode = flush_subnormals();
    ok = run_call(&call, sums, &loss, &correct);
    restore_mode(mode);
    release_helpers(&call);
    Py_END_ALLOW_THREADS
    release_call(&call);
    if (!ok) return PyErr_NoMemory();
    return sums ? Py_BuildValue("(dL)", loss, (long long)correct) : PyFloat_FromDouble(loss);
}

static PyObject *gradient(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return entry(args, kwargs, 0);
}

static PyObject *sums(PyObject *self, PyObject *args, PyObject *kwargs) {
    (void)self;
    return entry(args, kwargs, 1);
}

static PyObject *instruction_sets(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    PyObject *names = PyTuple_New(n_supported);
    for (int i = 0; names && i < n_supported; i++)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(supported[i].name));
    return names;
}

static PyObject *instruction_set_in_use(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyUnicode_FromString(chosen.name);
}

/* The version named `wanted`, or NULL when this CPU has none of that name. */
static const struct kernels *find_version(const char *wanted) {
    for (int i = 0; i < n_supported; i++)
        if (strcmp(supported[i].name, wanted) == 0) return &supported[i];
    return NULL;
}

static PyObject *use_instruction_set(PyObject *self, PyObject *name) {
    (void)self;
    const char *wanted = PyUnicode_AsUTF8(name);
    if (!wanted) return NULL;
    const struct kernels *version = find_version(wanted);
    if (!version) {
        PyErr_Format(PyExc_ValueError, "instruction set %R is not among this CPU's", name);
        return NULL;
    }
    PyObject *before = PyUnicode_FromString(chosen.name);
    chosen = *version;
    return before;
}

static PyMethodDef methods[] = {
    {"gradient", (PyCFunction)(void (*)(void))gradient, METH_VARARGS | METH_KEYWORDS,
     "gradient(*, x, labels, weight, bias, grad_weight, grad_bias, index=None, sample_weight=None, scale=1.0,"
     " share=1.0, accumulate=False, threads=1) -> the rows' summed (weighted) loss. Adds share x the gradient"
     " of the summed loss over rows `index` (default: all) of (x * scale, labels) to grad_weight and grad_bias"
     " (overwrites them without accumulate). x: (N, F) uint8 or float32; labels: (N,) int64; weight: (C, F)"
     " float32; bias: (C,) float32; index: (B,) int64; sample_weight: (N,) float32; C = 1: one logit"},
    {"sums", (PyCFunction)(void (*)(void))sums, METH_VARARGS | METH_KEYWORDS,
     "sums(*, x, labels, weight, bias, index=None, sample_weight=None, scale=1.0, threads=1, threshold=0.5) ->"
     " (the rows' summed (weighted) loss, rows predicted as their label: the top score's class, or for one"
     " logit positive where its sigmoid is above threshold)"},
    {"steps", (PyCFunction)(void (*)(void))steps, METH_VARARGS | METH_KEYWORDS,
     "steps(*, x, labels, weight, bias, grad_weight, grad_bias, index, sizes, lrs, losses, sample_weight=None,"
     " mean=None, first_weight=None, first_bias=None, second_weight=None, second_bias=None, scale=1.0,"
     " weight_decay=0.0, l1=0.0, step_bias=True, adam=False, momentum=0.0, nesterov=False, beta1=0.9,"
     " beta2=0.999, eps=1e-8, adam_steps=0, threads=1, ceiling=inf, prox_l1=0.0, prox_l2=0.0, prox_scale=0.0,"
     " batch=0) -> the steps taken. Takes len(sizes)"
     " mini-batch steps in place on weight and bias (and the rule's buffers): step k's rows are the next"
     " sizes[k] entries of index, its learning rate lrs[k]; writes its mean loss to losses[k] and leaves the"
     " last step's gradient (penalty and centring included) in grad_weight and grad_bias. Stops after a step"
     " whose loss is not finite or above ceiling. With prox_scale, each update of the weights is followed by"
     " the proximal map of prox_l1 |W|_1 + prox_l2 / 2 |W|^2 for the step lr x share x prox_scale (share 1 but"
     " for a short step). A step of fewer"
     " rows than batch (an epoch's short last batch) is a step of share rows / batch: it moves lr x share"
     " along its rows' mean gradient, momentum keeps momentum ^ share and takes the gradient at"
     " (1 - momentum ^ share) / (1 - momentum), Adam's moments keep beta ^ share and its count (adam_steps,"
     " which may be fractional) grows by share"},
    {"instruction_sets", instruction_sets, METH_NOARGS,
     "the instruction sets this CPU can run the kernels with, the best first"},
    {"instruction_set_in_use", instruction_set_in_use, METH_NOARGS, "the version the kernels run now"},
    {"use_instruction_set", use_instruction_set, METH_O,
     "use_instruction_set(name) -> the one used until now; for tests and benchmarks of each version"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_fused", .m_size = -1,
                                    .m_methods = methods};

/* The best version, or the one TORCHLOGREG_CPU_CAPABILITY names (for tests and bug reports); a name
   this CPU cannot run is a warning, and the best version runs. */
PyMODINIT_FUNC PyInit__fused(void) {
    find_kernels();
    pthread_atfork(NULL, NULL, forked_child);
    const char *forced = getenv(CAPABILITY_VARIABLE);
    if (forced && *forced) {
        const struct kernels *version = find_version(forced);
        if (version) {
            chosen = *version;
        } else if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                                    "%s=%s is not a version this CPU can run (%s%s%s%s%s): using %s",
                                    CAPABILITY_VARIABLE, forced, supported[0].name, n_supported > 1 ? ", " : "",
                                    n_supported > 1 ? supported[1].name : "", n_supported > 2 ? ", " : "",
                                    n_supported > 2 ? supported[2].name : "", chosen.name) < 0) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
