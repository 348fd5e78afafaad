/* The log-loss gradient of a batch for logistic regression, in one call and one pass per pair of rows.

   Why by hand: with a handful of classes, a training step in eager PyTorch is about a dozen small
   kernels (gather, convert, two thin GEMMs, softmax, gathers, sums) at a few microseconds of dispatch
   each. Here each pair of rows is read straight from the data set (by index), converted once into an
   L1-resident buffer, scored against every class, turned into its residual and added to the gradient
   while still in cache: nothing is written but the gradient, and there is one call per batch.

   Arithmetic: float32 products with float32 accumulators (as BLAS), the softmax's exponentials in
   float32 (as torch's), their sum, the log and the loss in float64. Rows are visited in order, and
   each row's scores depend only on that row, so a row's contribution does not depend on the batch
   it is in. The CPU picks the version (AVX-512, AVX2 or SSE): their sums run in different orders,
   so results differ between versions at float32's rounding, as BLAS's do between CPUs.

   One function, `gradient`; torchlogreg/fused.py is its Python side and documents the arguments.
   Tensors come as addresses (`tensor.data_ptr()`), so nothing here depends on torch's headers. The
   products exist once per instruction set (_fused_kernel.h), picked at run time. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct batch {
    const void *x;        /* rows of features: uint8 or float32 */
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
    float *gw;            /* gradients, added to */
    int64_t gw_stride;
    float *gb;
    int accumulate;       /* 0: gw and gb are overwritten */
};

struct work {
    float *rows;          /* a block's rows, converted */
    double *scores;       /* a block's rows of scores */
    float *residuals;     /* a block's rows of residuals */
    int32_t *live;        /* offsets of the chunks of features where the block has a nonzero */
    int skip_blank;       /* 0 when the weights hold a NaN or inf, which 0 x w must spread */
};

/* The (weighted) loss of one row from its raw scores z, with d(loss)/d(score) x weight x share in r. */
static inline double row_loss(const struct batch *in, const struct model *m, int64_t row, double *z,
                              float *r) {
    int64_t at = in->index ? in->index[row] : row, label = in->labels[at], classes = m->classes;
    double weight = in->weights ? in->weights[at] : 1.0, factor = weight * m->share;
    for (int64_t c = 0; c < classes; c++) z[c] = z[c] * m->scale + m->b[c];
    if (classes == 1) { /* sigmoid and binary cross-entropy */
        double y = (double)label, p = 1.0 / (1.0 + exp(-z[0]));
        r[0] = (float)((p - y) * factor);
        return weight * (fmax(z[0], 0.0) - z[0] * y + log1p(exp(-fabs(z[0]))));
    }
    double top = z[0], sum = 0.0;
    for (int64_t c = 1; c < classes; c++) top = z[c] > top ? z[c] : top;
    double label_score = z[label] - top;
    for (int64_t c = 0; c < classes; c++) sum += (z[c] = expf((float)(z[c] - top)));
    for (int64_t c = 0; c < classes; c++) r[c] = (float)((z[c] / sum - (c == label)) * factor);
    return weight * (log(sum) - label_score);
}

/* The (weighted) loss of one row of C >= 2 classes from its raw scores z, and a count in *correct
   when its first top score (NaN counted largest, as torch's max) is its label's. */
static inline double row_sums(const struct batch *in, const struct model *m, int64_t row, double *z,
                              int64_t *correct) {
    int64_t at = in->index ? in->index[row] : row, label = in->labels[at], classes = m->classes;
    double weight = in->weights ? in->weights[at] : 1.0;
    int64_t top = 0;
    for (int64_t c = 0; c < classes; c++) {
        z[c] = (double)(float)(z[c] * m->scale + m->b[c]); /* the float32 logits torch would have */
        if (!isnan(z[top]) && (isnan(z[c]) || z[c] > z[top])) top = c;
    }
    *correct += top == label;
    double peak = z[top], sum = 0.0;
    for (int64_t c = 0; c < classes; c++) sum += expf((float)(z[c] - peak));
    return weight * (log(sum) - (z[label] - peak));
}

/* Rows per block: ROWS x CLASS_BLOCK accumulators, the rows and a weight fit 32 registers (AVX-512)
   or 16 (AVX2, SSE). */
#define MAX_ROWS 4
#if defined(__x86_64__) && defined(__GNUC__)
#define LANES 16
#define ROWS 4
#define CLASS_BLOCK 5
#define TARGET __attribute__((target("avx512f,avx2,fma")))
#define SUFFIX avx512
#include "_fused_kernel.h"
#undef LANES
#undef ROWS
#undef CLASS_BLOCK
#undef TARGET
#undef SUFFIX
#define LANES 8
#define ROWS 2
#define CLASS_BLOCK 5
#define TARGET __attribute__((target("avx2,fma")))
#define SUFFIX avx2
#include "_fused_kernel.h"
#undef LANES
#undef ROWS
#undef CLASS_BLOCK
#undef TARGET
#undef SUFFIX
#endif
#define LANES 4
#define ROWS 2
#define CLASS_BLOCK 5
#define TARGET
#define SUFFIX baseline
#include "_fused_kernel.h"

/* Every index within x's rows and every label within the classes, checked before anything is read
   or written: a bad one raises IndexError and leaves the gradients as they were. */
static int check_rows(const struct batch *in, int64_t classes) {
    int64_t bound = classes == 1 ? 2 : classes;
    for (int64_t row = 0; row < in->rows; row++) {
        int64_t at = in->index ? in->index[row] : row;
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

/* Whether all weights are finite: blank chunks may then be skipped, as 0 x w adds nothing. An
   integer test of the exponent bits, which vectorises (a float sum would be a chain of adds). */
static int all_finite(const struct model *m, int64_t features) {
    uint32_t bad = 0;
    for (int64_t c = 0; c < m->classes; c++) {
        const float *row = m->w + c * m->w_stride;
        for (int64_t k = 0; k < features; k++) {
            uint32_t bits;
            memcpy(&bits, row + k, sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
    }
    return !bad;
}

typedef double (*gradient_kernel)(const struct batch *, const struct model *, struct work *);
typedef double (*sums_kernel)(const struct batch *, const struct model *, struct work *, int64_t *);

/* The kernels for each instruction set this CPU has, best first; `chosen` is the one in use. */
struct kernels {
    const char *name;
    gradient_kernel gradient;
    sums_kernel sums;
};

static struct kernels supported[3];
static int n_supported;
static struct kernels chosen;

static void find_kernels(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        supported[n_supported++] = (struct kernels){"avx512", batch_gradient_avx512, batch_sums_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        supported[n_supported++] = (struct kernels){"avx2", batch_gradient_avx2, batch_sums_avx2};
#endif
    supported[n_supported++] = (struct kernels){"baseline", batch_gradient_baseline, batch_sums_baseline};
    chosen = supported[0];
}

#define ARGUMENTS 19

/* Both entry points take the same 19 arguments (see fused.py); `sums` ignores the gradient's. */
static PyObject *run(PyObject *const *args, Py_ssize_t nargs, int sums, const char *name) {
    if (nargs != ARGUMENTS) {
        PyErr_Format(PyExc_TypeError, "%s() takes %d arguments, got %zd", name, ARGUMENTS, nargs);
        return NULL;
    }
    long long v[ARGUMENTS];
    for (int i = 0; i < ARGUMENTS; i++) v[i] = (i == 13 || i == 14) ? 0 : PyLong_AsLongLong(args[i]);
    double scale = PyFloat_AsDouble(args[13]), share = PyFloat_AsDouble(args[14]);
    if (PyErr_Occurred()) return NULL;
    struct batch in = {(const void *)v[0], (int)v[1], v[2], v[3], v[4], v[5], (const int64_t *)v[6],
                       (const int64_t *)v[7], (const float *)v[8]};
    struct model m = {(const float *)v[9], v[10], (const float *)v[11], v[12], scale, share,
                      (float *)v[15], v[16], (float *)v[17], (int)v[18]};
    if (in.rows < 0 || in.x_rows < 0 || in.features < 0 || m.classes < (sums ? 2 : 1)) {
        PyErr_Format(PyExc_ValueError, "%s(): negative rows or features, or too few classes", name);
        return NULL;
    }
    if (!check_rows(&in, m.classes)) return NULL;
    float *floats = malloc((MAX_ROWS * in.features + MAX_ROWS * m.classes) * sizeof(float));
    double *scores = malloc(MAX_ROWS * m.classes * sizeof(double));
    int32_t *live = malloc((in.features + 1) * sizeof(int32_t));
    if (!floats || !scores || !live) {
        free(floats);
        free(scores);
        free(live);
        return PyErr_NoMemory();
    }
    struct work work = {floats, scores, floats + MAX_ROWS * in.features, live, all_finite(&m, in.features)};
    double loss;
    int64_t correct = 0;
    Py_BEGIN_ALLOW_THREADS
    loss = sums ? chosen.sums(&in, &m, &work, &correct) : chosen.gradient(&in, &m, &work);
    Py_END_ALLOW_THREADS
    free(floats);
    free(scores);
    free(live);
    return sums ? Py_BuildValue("(dL)", loss, (long long)correct) : PyFloat_FromDouble(loss);
}

static PyObject *gradient(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return run(args, nargs, 0, "gradient");
}

static PyObject *sums(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return run(args, nargs, 1, "sums");
}

static PyObject *instruction_sets(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    PyObject *names = PyTuple_New(n_supported);
    for (int i = 0; names && i < n_supported; i++)
        PyTuple_SET_ITEM(names, i, PyUnicode_FromString(supported[i].name));
    return names;
}

static PyObject *use_instruction_set(PyObject *self, PyObject *name) {
    (void)self;
    const char *wanted = PyUnicode_AsUTF8(name);
    if (!wanted) return NULL;
    for (int i = 0; i < n_supported; i++) {
        if (strcmp(supported[i].name, wanted) == 0) {
            PyObject *before = PyUnicode_FromString(chosen.name);
            chosen = supported[i];
            return before;
        }
    }
    PyErr_Format(PyExc_ValueError, "instruction set %R is not among this CPU's", name);
    return NULL;
}

static PyMethodDef methods[] = {
    {"gradient", (PyCFunction)(void (*)(void))gradient, METH_FASTCALL,
     "gradient(x, is_uint8, rows, x_rows, x_stride, features, index, labels, weights, w, w_stride, b, classes,"
     " scale, share, gw, gw_stride, gb, accumulate) -> the rows' summed (weighted) loss; adds to (or,"
     " without accumulate, writes) gw and gb"},
    {"sums", (PyCFunction)(void (*)(void))sums, METH_FASTCALL,
     "sums(the same arguments) -> (the rows' summed (weighted) loss, rows whose top score is their label's);"
     " two or more classes"},
    {"instruction_sets", instruction_sets, METH_NOARGS,
     "the instruction sets this CPU can run the kernels with, the one used by default first"},
    {"use_instruction_set", use_instruction_set, METH_O,
     "use_instruction_set(name) -> the one used until now; for tests and benchmarks of each version"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_fused", .m_size = -1,
                                    .m_methods = methods};

PyMODINIT_FUNC PyInit__fused(void) {
    find_kernels();
    return PyModule_Create(&module);
}
