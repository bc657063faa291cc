/* Optional C twin of lightning_stream.reader.decode_records_py: TFRecord framing, CRC32C checks and
 * the hand decoder of scalar Events, straight into per-tag columns (and of series._breaks_python,
 * the restart check of every stored batch: step_breaks below; and the JSON of a steps column for
 * encoding.py: int64_json).
 *
 * It follows the Python reference rule for rule (same bounds checks, same declines, same errors),
 * and the tests run both on the same inputs and compare. Why it exists: the pure-Python decoder
 * reads ~0.5 M scalars/s; this one ~18 M/s (benchmarks/bench_ingest.py), which is what makes a
 * million-point logdir queryable in well under a second.
 *
 * decode(buf, pos, scalar_tags, resync) -> (pos, stop, resync, records, {tag: (steps, wall_times,
 * values)}, [(kind, offset), ...]); see reader.decode_records_py for the meaning of each item.
 *
 * The GIL is released while records only touch C memory (framing, CRCs, known tags' points): the
 * server's loop keeps answering during a big read, and `lightning-stream serve` reads its logdir
 * while the rest of it imports (cli.py). A record that needs Python (a tag seen for the first time
 * in this call, a tensor, an error to report, no memory) is decoded again with the GIL held: a
 * decode has no effect until its points are pushed, so the second pass is the only one that counts.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_SIZE 12
#define FOOTER_SIZE 4
#define MASK_DELTA 0xA282EAD8u
#define STOP_END 0
#define STOP_FALLBACK 1
#define KEEP_GIL_RECORDS 64 /* records decoded holding the GIL before it is released (see decode) */

#define DT_FLOAT 1
#define DT_DOUBLE 2
#define DT_INT32 3
#define DT_INT64 9
#define DT_HALF 19

/* ---------------------------------------------------------------- CRC32C (Castagnoli) */

static uint32_t crc_table[8][256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = crc_table[7][w & 0xFF] ^ crc_table[6][(w >> 8) & 0xFF] ^ crc_table[5][(w >> 16) & 0xFF] ^
              crc_table[4][(w >> 24) & 0xFF] ^ crc_table[3][(w >> 32) & 0xFF] ^ crc_table[2][(w >> 40) & 0xFF] ^
              crc_table[1][(w >> 48) & 0xFF] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW_CRC 1
/* SSE4.2 has a CRC32C instruction; chosen at run time so the module still loads on older CPUs. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static int use_hw_crc = 0;

static inline uint32_t masked_crc32c(const uint8_t *p, size_t n) {
    uint32_t crc;
#ifdef HAVE_HW_CRC
    if (use_hw_crc)
        crc = ~crc_hw(0xFFFFFFFFu, p, n);
    else
#endif
        crc = ~crc_sw(0xFFFFFFFFu, p, n);
    return ((crc >> 15) | (crc << 17)) + MASK_DELTA;
}

static inline uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline uint64_t load_u64(const uint8_t *p) { return (uint64_t)load_u32(p) | ((uint64_t)load_u32(p + 4) << 32); }

static inline double load_f64(const uint8_t *p) {
    uint64_t u = load_u64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static inline float load_f32(const uint8_t *p) {
    uint32_t u = load_u32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static double half_to_double(uint16_t h) {
    int e = (h >> 10) & 0x1F;
    int m = h & 0x3FF;
    double v;
    if (e == 0)
        v = ldexp((double)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp((double)(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

/* ---------------------------------------------------------------- per-tag columns */

typedef struct {
    PyObject *tag; /* str */
    const char *key; /* UTF-8 of tag, owned by the str object */
    Py_ssize_t keylen;
    int64_t *steps;
    double *walls;
    double *values;
    Py_ssize_t n, cap;
} Column;

typedef struct {
    Column *cols;
    Py_ssize_t n, cap;
    Py_ssize_t *table; /* open addressing: index+1 of a column, 0 = empty */
    Py_ssize_t tcap;   /* power of two */
    Py_ssize_t last;
} Columns;

static uint64_t hash_bytes(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void columns_free(Columns *c) {
    for (Py_ssize_t i = 0; i < c->n; i++) {
        Py_XDECREF(c->cols[i].tag);
        free(c->cols[i].steps);
        free(c->cols[i].walls);
        free(c->cols[i].values);
    }
    free(c->cols);
    free(c->table);
}

static int table_rebuild(Columns *c, Py_ssize_t tcap) {
    Py_ssize_t *t = calloc((size_t)tcap, sizeof(Py_ssize_t));
    if (!t) return -1;
    for (Py_ssize_t i = 0; i < c->n; i++) {
        uint64_t h = hash_bytes((const uint8_t *)c->cols[i].key, c->cols[i].keylen) & (uint64_t)(tcap - 1);
        while (t[h]) h = (h + 1) & (uint64_t)(tcap - 1);
        t[h] = i + 1;
    }
    free(c->table);
    c->table = t;
    c->tcap = tcap;
    return 0;
}

/* Index of the column for this tag, or -1. The next column in creation order is tried first:
 * writers log their tags in the same order every step. */
static Py_ssize_t columns_find(Columns *c, const uint8_t *tag, Py_ssize_t len) {
    if (c->n == 0) return -1;
    Py_ssize_t guess = c->last + 1 < c->n ? c->last + 1 : 0;
    Column *g = &c->cols[guess];
    if (g->keylen == len && memcmp(g->key, tag, (size_t)len) == 0) return c->last = guess;
    uint64_t h = hash_bytes(tag, len) & (uint64_t)(c->tcap - 1);
    while (c->table[h]) {
        Py_ssize_t i = c->table[h] - 1;
        if (c->cols[i].keylen == len && memcmp(c->cols[i].key, tag, (size_t)len) == 0) return c->last = i;
        h = (h + 1) & (uint64_t)(c->tcap - 1);
    }
    return -1;
}

/* Adds a column for a tag (a new reference to a str); returns its index or -1 (MemoryError set). */
static Py_ssize_t columns_add(Columns *c, PyObject *tag) {
    Py_ssize_t keylen;
    const char *key = PyUnicode_AsUTF8AndSize(tag, &keylen);
    if (!key) return -1;
    if (c->n == c->cap) {
        Py_ssize_t cap = c->cap ? c->cap * 2 : 16;
        Column *cols = realloc(c->cols, (size_t)cap * sizeof(Column));
        if (!cols) {
            PyErr_NoMemory();
            return -1;
        }
        c->cols = cols;
        c->cap = cap;
    }
    Column *col = &c->cols[c->n++];
    memset(col, 0, sizeof(*col));
    Py_INCREF(tag);
    col->tag = tag;
    col->key = key;
    col->keylen = keylen;
    if (c->n * 2 > c->tcap) {
        if (table_rebuild(c, c->tcap ? c->tcap * 2 : 64) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    } else {
        uint64_t h = hash_bytes((const uint8_t *)key, keylen) & (uint64_t)(c->tcap - 1);
        while (c->table[h]) h = (h + 1) & (uint64_t)(c->tcap - 1);
        c->table[h] = c->n;
    }
    return c->last = c->n - 1;
}

static int column_push(Column *col, int64_t step, double wall, double value) {
    if (col->n == col->cap) {
        Py_ssize_t cap = col->cap ? col->cap * 2 : 256;
        int64_t *s = realloc(col->steps, (size_t)cap * sizeof(int64_t));
        if (s) col->steps = s;
        double *w = realloc(col->walls, (size_t)cap * sizeof(double));
        if (w) col->walls = w;
        double *v = realloc(col->values, (size_t)cap * sizeof(double));
        if (v) col->values = v;
        if (!s || !w || !v) return -1; /* the caller sets MemoryError, holding the GIL */
        col->cap = cap;
    }
    col->steps[col->n] = step;
    col->walls[col->n] = wall;
    col->values[col->n] = value;
    col->n++;
    return 0;
}

/* ---------------------------------------------------------------- protobuf wire format */

enum { OK = 0, DECLINE = 1, PYERR = -1, NEED_GIL = 2 };

/* Varint of at most 10 bytes ending before end, truncated to 64 bits. */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t result = 0;
    int shift = 0;
    while (p < end) {
        uint8_t b = *p++;
        if (shift < 64) result |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *out = result;
            *pp = p;
            return OK;
        }
        shift += 7;
        if (shift >= 70) break;
    }
    return DECLINE;
}

static inline int read_key(const uint8_t **pp, const uint8_t *end, uint64_t *key) {
    if (**pp < 0x80) {
        *key = *(*pp)++;
        return OK;
    }
    return read_varint(pp, end, key);
}

static inline int read_length(const uint8_t **pp, const uint8_t *end, uint64_t *n) {
    if (read_varint(pp, end, n)) return DECLINE;
    if (*n > (uint64_t)(end - *pp)) return DECLINE;
    return OK;
}

static inline int skip_field(const uint8_t **pp, const uint8_t *end, uint64_t key) {
    uint64_t n;
    switch (key & 7) {
    case 0:
        return read_varint(pp, end, &n);
    case 2:
        if (read_length(pp, end, &n)) return DECLINE;
        *pp += n;
        return OK;
    case 1:
        if (end - *pp < 8) return DECLINE;
        *pp += 8;
        return OK;
    case 5:
        if (end - *pp < 4) return DECLINE;
        *pp += 4;
        return OK;
    default:
        return DECLINE;
    }
}

static int plugin_is_scalars(const uint8_t *p, const uint8_t *end, int *found) {
    uint64_t key, n;
    *found = 0;
    while (p < end) {
        if (read_key(&p, end, &key)) return DECLINE;
        if (key != 0x0A) {
            if (skip_field(&p, end, key)) return DECLINE;
            continue;
        }
        if (read_length(&p, end, &n)) return DECLINE;
        const uint8_t *sub_end = p + n;
        *found = 0;
        while (p < sub_end) {
            if (read_key(&p, sub_end, &key)) return DECLINE;
            if (key == 0x0A) {
                if (read_length(&p, sub_end, &n)) return DECLINE;
                *found = n == 7 && memcmp(p, "scalars", 7) == 0;
                p += n;
            } else if (skip_field(&p, sub_end, key)) {
                return DECLINE;
            }
        }
    }
    return OK;
}

static int tensor_value(const uint8_t *p, const uint8_t *end, double *out) {
    uint64_t key, n, v, dtype = 0;
    const uint8_t *content = NULL;
    uint64_t content_len = 0;
    Py_ssize_t count = 0;
    double value = 0.0;
    while (p < end) {
        if (read_key(&p, end, &key)) return DECLINE;
        if (key == 0x08) {
            if (read_varint(&p, end, &dtype)) return DECLINE;
        } else if (key == 0x12) {
            if (read_length(&p, end, &n) || n) return DECLINE;
        } else if (key == 0x22) {
            if (read_length(&p, end, &n)) return DECLINE;
            content = p;
            content_len = n;
            p += n;
        } else if (key == 0x18) {
            if (read_varint(&p, end, &v)) return DECLINE;
        } else if (dtype == DT_FLOAT && key == 0x2A) {
            if (read_length(&p, end, &n) || n % 4) return DECLINE;
            for (uint64_t i = 0; i < n; i += 4, count++) value = (double)load_f32(p + i);
            p += n;
        } else if (dtype == DT_FLOAT && key == 0x2D) {
            if (end - p < 4) return DECLINE;
            value = (double)load_f32(p);
            count++;
            p += 4;
        } else if (dtype == DT_DOUBLE && key == 0x32) {
            if (read_length(&p, end, &n) || n % 8) return DECLINE;
            for (uint64_t i = 0; i < n; i += 8, count++) value = load_f64(p + i);
            p += n;
        } else if (dtype == DT_DOUBLE && key == 0x31) {
            if (end - p < 8) return DECLINE;
            value = load_f64(p);
            count++;
            p += 8;
        } else if ((dtype == DT_INT32 && key == 0x3A) || (dtype == DT_INT64 && key == 0x52) ||
                   (dtype == DT_HALF && key == 0x6A)) {
            if (read_length(&p, end, &n)) return DECLINE;
            const uint8_t *sub_end = p + n;
            while (p < sub_end) {
                if (read_varint(&p, sub_end, &v)) return DECLINE;
                value = dtype == DT_HALF ? half_to_double((uint16_t)(v & 0xFFFF)) : (double)(int64_t)v;
                count++;
            }
        } else if ((dtype == DT_INT32 && key == 0x38) || (dtype == DT_INT64 && key == 0x50) ||
                   (dtype == DT_HALF && key == 0x68)) {
            if (read_varint(&p, end, &v)) return DECLINE;
            value = dtype == DT_HALF ? half_to_double((uint16_t)(v & 0xFFFF)) : (double)(int64_t)v;
            count++;
        } else {
            return DECLINE;
        }
    }
    if (content) {
        if (count) return DECLINE;
        if (dtype == DT_FLOAT && content_len == 4)
            *out = (double)load_f32(content);
        else if (dtype == DT_DOUBLE && content_len == 8)
            *out = load_f64(content);
        else if (dtype == DT_INT32 && content_len == 4)
            *out = (double)(int32_t)load_u32(content);
        else if (dtype == DT_INT64 && content_len == 8)
            *out = (double)(int64_t)load_u64(content);
        else if (dtype == DT_HALF && content_len == 2)
            *out = half_to_double((uint16_t)(content[0] | (content[1] << 8)));
        else
            return DECLINE;
        return OK;
    }
    if (count != 1) return DECLINE;
    *out = value;
    return OK;
}

typedef struct {
    Py_ssize_t col;
    double value;
} Pending;

typedef struct {
    Pending *items;
    Py_ssize_t n, cap;
} PendingList;

static int pending_push(PendingList *l, Py_ssize_t col, double value, int nogil) {
    if (l->n == l->cap) {
        Py_ssize_t cap = l->cap ? l->cap * 2 : 64;
        Pending *items = realloc(l->items, (size_t)cap * sizeof(Pending));
        if (!items) {
            if (nogil) return NEED_GIL;
            PyErr_NoMemory();
            return PYERR;
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n].col = col;
    l->items[l->n].value = value;
    l->n++;
    return OK;
}

/* Column index for a tag, creating it (NEED_GIL without the GIL); DECLINE when the tag is not UTF-8. */
static int tag_column(Columns *cols, const uint8_t *tag, Py_ssize_t len, Py_ssize_t *index, int nogil) {
    Py_ssize_t i = columns_find(cols, tag, len);
    if (i >= 0) {
        *index = i;
        return OK;
    }
    if (nogil) return NEED_GIL;
    PyObject *name = PyUnicode_DecodeUTF8((const char *)tag, len, NULL);
    if (!name) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
            PyErr_Clear();
            return DECLINE;
        }
        return PYERR;
    }
    i = columns_add(cols, name);
    Py_DECREF(name);
    if (i < 0) return PYERR;
    *index = i;
    return OK;
}

#define HPARAMS_TAG "_hparams_/session_start_info"
#define HPARAMS_TAG_LEN ((Py_ssize_t)(sizeof(HPARAMS_TAG) - 1))

static int decode_value(const uint8_t *p, const uint8_t *end, PyObject *scalar_tags, Columns *cols, PendingList *out,
                        int nogil) {
    uint64_t key, n;
    const uint8_t *tag = p; /* empty */
    Py_ssize_t taglen = 0;
    int has_simple = 0, has_tensor = 0, has_meta = 0;
    float simple = 0;
    const uint8_t *tensor = NULL, *tensor_end = NULL, *meta = NULL, *meta_end = NULL;
    while (p < end) {
        if (read_key(&p, end, &key)) return DECLINE;
        if (key == 0x0A) {
            if (read_length(&p, end, &n)) return DECLINE;
            tag = p;
            taglen = (Py_ssize_t)n;
            p += n;
        } else if (key == 0x15) {
            if (end - p < 4) return DECLINE;
            simple = load_f32(p);
            p += 4;
            has_simple = 1;
            has_tensor = 0;
        } else if (key == 0x42) {
            if (read_length(&p, end, &n)) return DECLINE;
            tensor = p;
            tensor_end = p + n;
            p += n;
            has_tensor = 1;
            has_simple = 0;
        } else if (key == 0x4A) {
            if (read_length(&p, end, &n)) return DECLINE;
            meta = p;
            meta_end = p + n;
            p += n;
            has_meta = 1;
        } else {
            if (skip_field(&p, end, key)) return DECLINE;
            if (key == 0x1A || key == 0x22 || key == 0x2A || key == 0x32) has_simple = has_tensor = 0;
        }
    }
    if (!has_simple && !has_tensor) {
        /* The hparams a run was started with (TensorBoard's hparams plugin): protobuf reads them. */
        if (has_meta && taglen == HPARAMS_TAG_LEN && memcmp(tag, HPARAMS_TAG, HPARAMS_TAG_LEN) == 0) return DECLINE;
        return OK;
    }
    Py_ssize_t col;
    int rc;
    if (has_simple) {
        if ((rc = tag_column(cols, tag, taglen, &col, nogil))) return rc;
        return pending_push(out, col, (double)simple, nogil);
    }
    /* A tensor: a scalar when this tag carried plugin "scalars" (TF2 writes the metadata only once). */
    if (nogil) return NEED_GIL;
    PyObject *name;
    Py_ssize_t found = columns_find(cols, tag, taglen);
    if (found >= 0) {
        name = cols->cols[found].tag;
        Py_INCREF(name);
    } else {
        name = PyUnicode_DecodeUTF8((const char *)tag, taglen, NULL);
        if (!name) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return DECLINE;
            }
            return PYERR;
        }
    }
    if (has_meta) {
        int is_scalars;
        if (plugin_is_scalars(meta, meta_end, &is_scalars)) {
            Py_DECREF(name);
            return DECLINE;
        }
        if (is_scalars && PySet_Add(scalar_tags, name) < 0) {
            Py_DECREF(name);
            return PYERR;
        }
    }
    int member = PySet_Contains(scalar_tags, name);
    if (member <= 0) {
        Py_DECREF(name);
        return member < 0 ? PYERR : OK;
    }
    double value;
    if (tensor_value(tensor, tensor_end, &value)) {
        Py_DECREF(name);
        return DECLINE;
    }
    if (found < 0) {
        found = columns_add(cols, name);
        if (found < 0) {
            Py_DECREF(name);
            return PYERR;
        }
    }
    Py_DECREF(name);
    return pending_push(out, found, value, 0);
}

static int decode_event(const uint8_t *p, const uint8_t *end, PyObject *scalar_tags, Columns *cols, PendingList *out,
                        int64_t *step_out, double *wall_out, int nogil) {
    uint64_t key, n, step = 0;
    double wall = 0.0;
    int rc;
    while (p < end) {
        if (read_key(&p, end, &key)) return DECLINE;
        if (key == 0x09) {
            if (end - p < 8) return DECLINE;
            wall = load_f64(p);
            p += 8;
        } else if (key == 0x10) {
            if (read_varint(&p, end, &step)) return DECLINE;
        } else if (key == 0x2A) {
            if (read_length(&p, end, &n)) return DECLINE;
            const uint8_t *sub_end = p + n;
            while (p < sub_end) {
                if (read_key(&p, sub_end, &key)) return DECLINE;
                if (key == 0x0A) {
                    if (read_length(&p, sub_end, &n)) return DECLINE;
                    if ((rc = decode_value(p, p + n, scalar_tags, cols, out, nogil))) return rc;
                    p += n;
                } else if (skip_field(&p, sub_end, key)) {
                    return DECLINE;
                }
            }
        } else if (skip_field(&p, end, key)) {
            return DECLINE;
        }
    }
    *step_out = (int64_t)step;
    *wall_out = wall;
    return OK;
}

/* ---------------------------------------------------------------- the framing loop */

static PyObject *array_type = NULL;
static PyObject *str_bad_lengths = NULL;
static PyObject *str_crc_errors = NULL;

static PyObject *make_array(const char *typecode, const void *data, Py_ssize_t n, size_t itemsize) {
    PyObject *bytes = PyBytes_FromStringAndSize(data ? (const char *)data : "", n * (Py_ssize_t)itemsize);
    if (!bytes) return NULL;
    PyObject *arr = PyObject_CallFunction(array_type, "sO", typecode, bytes);
    Py_DECREF(bytes);
    return arr;
}

static int add_error(PyObject *errors, PyObject *kind, Py_ssize_t offset) {
    PyObject *item = Py_BuildValue("(On)", kind, offset);
    if (!item) return -1;
    int rc = PyList_Append(errors, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos;
    PyObject *scalar_tags;
    int resync;
    if (!PyArg_ParseTuple(args, "y*nO!p:decode", &view, &pos, &PySet_Type, &scalar_tags, &resync)) return NULL;
    const uint8_t *buf = view.buf;
    const Py_ssize_t size = view.len;
    Columns cols = {0};
    PendingList pending = {0};
    PyObject *errors = PyList_New(0);
    PyObject *series = NULL, *result = NULL;
    Py_ssize_t records = 0;
    int stop = STOP_END;
    /* GIL: released (`released` set) once KEEP_GIL_RECORDS records in a row needed no Python, taken
     * back for one that does. The first records of a call meet its tags: they keep the GIL, so a
     * call does not trade it back and forth (each take may wait for the other thread's turn). */
    PyThreadState *released = NULL;
    Py_ssize_t keep = KEEP_GIL_RECORDS;
#define HOLD_GIL()                                                                                                     \
    do {                                                                                                               \
        if (released) {                                                                                                \
            PyEval_RestoreThread(released);                                                                            \
            released = NULL;                                                                                           \
        }                                                                                                              \
    } while (0)
    if (!errors) goto done;
    if (pos < 0 || pos > size) {
        PyErr_Format(PyExc_ValueError, "pos %zd is outside the buffer of %zd bytes", pos, size);
        goto done;
    }
    for (;;) {
        if (!released && keep-- <= 0) released = PyEval_SaveThread();
        if (resync) {
            Py_ssize_t last = size - HEADER_SIZE, p = pos;
            while (p <= last && masked_crc32c(buf + p, 8) != load_u32(buf + p + 8)) p++;
            if (p > last) {
                pos = p > pos ? p : pos;
                break; /* still resyncing */
            }
            pos = p;
            resync = 0;
        }
        if (size - pos < HEADER_SIZE) break;
        const uint8_t *h = buf + pos;
        uint64_t length = load_u64(h);
        if (masked_crc32c(h, 8) != load_u32(h + 8)) {
            HOLD_GIL();
            if (add_error(errors, str_bad_lengths, pos) < 0) goto done;
            resync = 1;
            pos += 1;
            continue;
        }
        if (length > (uint64_t)(size - pos - HEADER_SIZE) || (Py_ssize_t)length > size - pos - HEADER_SIZE - FOOTER_SIZE)
            break; /* not complete in this buffer */
        const uint8_t *start = h + HEADER_SIZE, *end = start + length;
        if (masked_crc32c(start, (size_t)length) != load_u32(end)) {
            HOLD_GIL();
            if (add_error(errors, str_crc_errors, pos) < 0) goto done;
            pos += HEADER_SIZE + (Py_ssize_t)length + FOOTER_SIZE;
            records++;
            continue;
        }
        int64_t step = 0;
        double wall = 0.0;
        pending.n = 0;
        int rc = decode_event(start, end, scalar_tags, &cols, &pending, &step, &wall, released != NULL);
        if (rc == NEED_GIL) { /* nothing of it was kept: decode it again, with Python at hand */
            HOLD_GIL();
            keep = KEEP_GIL_RECORDS;
            pending.n = 0;
            rc = decode_event(start, end, scalar_tags, &cols, &pending, &step, &wall, 0);
        }
        if (rc == PYERR) goto done;
        if (rc == DECLINE) {
            stop = STOP_FALLBACK;
            break;
        }
        records++;
        pos += HEADER_SIZE + (Py_ssize_t)length + FOOTER_SIZE;
        for (Py_ssize_t i = 0; i < pending.n; i++)
            if (column_push(&cols.cols[pending.items[i].col], step, wall, pending.items[i].value) < 0) {
                HOLD_GIL();
                PyErr_NoMemory();
                goto done;
            }
    }
    HOLD_GIL();
    series = PyDict_New();
    if (!series) goto done;
    for (Py_ssize_t i = 0; i < cols.n; i++) {
        Column *c = &cols.cols[i];
        if (!c->n) continue;
        PyObject *steps = make_array("q", c->steps, c->n, sizeof(int64_t));
        PyObject *walls = steps ? make_array("d", c->walls, c->n, sizeof(double)) : NULL;
        PyObject *values = walls ? make_array("d", c->values, c->n, sizeof(double)) : NULL;
        PyObject *triple = values ? PyTuple_Pack(3, steps, walls, values) : NULL;
        Py_XDECREF(steps);
        Py_XDECREF(walls);
        Py_XDECREF(values);
        if (!triple) goto done;
        int rc = PyDict_SetItem(series, c->tag, triple);
        Py_DECREF(triple);
        if (rc < 0) goto done;
    }
    result = Py_BuildValue("(niOnOO)", pos, stop, resync ? Py_True : Py_False, records, series, errors);
done:
    HOLD_GIL(); /* every error path holds it already; this keeps it so if one ever does not */
#undef HOLD_GIL
    Py_XDECREF(series);
    Py_XDECREF(errors);
    columns_free(&cols);
    free(pending.items);
    PyBuffer_Release(&view);
    return result;
}

/* ---------------------------------------------------------------- series.py's restart check */

/* step_breaks(steps: array('q')) -> [i, ...] where steps[i] <= steps[i - 1]: series._breaks_python's
 * twin. The hub runs it on every batch it stores; in Python it costs ~30 ns a step (30 ms for the
 * first read of a million-point logdir, on the way to the first answer), here well under 1 ns. */
/* The buffer of an array of 8-byte `typecode` items ("q" steps, "d" floats), or -1 with TypeError naming `func`. */
static int array8_buffer(PyObject *arg, Py_buffer *view, const char *func, const char *typecode, const char *what) {
    if (PyObject_GetBuffer(arg, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->itemsize != 8 || !view->format || strcmp(view->format, typecode) != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s() takes an array('%s') of %s", func, typecode, what);
        return -1;
    }
    return 0;
}

static int int64_buffer(PyObject *arg, Py_buffer *view, const char *func) {
    return array8_buffer(arg, view, func, "q", "steps");
}

static int float64_buffer(PyObject *arg, Py_buffer *view, const char *func) {
    return array8_buffer(arg, view, func, "d", "floats");
}

static PyObject *step_breaks(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (int64_buffer(arg, &view, "step_breaks") < 0) return NULL;
    const int64_t *steps = view.buf;
    const Py_ssize_t n = view.len / 8;
    Py_ssize_t first = n; /* the first break, or n: the usual answer is none */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 1; i < n; i++)
        if (steps[i] <= steps[i - 1]) {
            first = i;
            break;
        }
    Py_END_ALLOW_THREADS
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = first; out && i < n; i++) {
        if (steps[i] > steps[i - 1]) continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (!index || PyList_Append(out, index) < 0) Py_CLEAR(out);
        Py_XDECREF(index);
    }
    PyBuffer_Release(&view);
    return out;
}

/* ---------------------------------------------------------------- encoding.py's number columns (steps; floats below) */

static char *write_int64(int64_t x, char *w) { /* at most 20 bytes */
    uint64_t u = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
    if (x < 0) *w++ = '-';
    char digits[20];
    int k = 0;
    do {
        digits[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (k) *w++ = digits[--k];
    return w;
}

/* ---------------------------------------------------------------- encoding.py's float columns */

/* float_json(values: array('d')) -> b"[1.0,0.5,...]": the bytes orjson writes for json_floats(values),
 * formatted without the GIL (orjson's ~110 ms a million points holds it, and the serve path has a second
 * core to give). Digits: Ryu's shortest round-trip (d2d of the vendored _ryu/ryu/d2s.c, included below so
 * its static helpers are ours); spelling: orjson's (plain notation for 1e-5 <= |x| < 1e16 with at least
 * one decimal, "1.0"; else d.ddde-x / d.ddde+x: orjson 3.13 writes the "+", older releases did not);
 * non-finite values the SPEC's strings. */
#include "ryu/d2s.c"

#define FLOAT_JSON_MAX 25   /* "-1.2345678901234567e-308," */
#define FLOAT_JSON_SLACK 40 /* write_double's fixed-size copies may reach this far past a value's start */

static char *write_exponent(int e, char *w) {
    *w++ = e < 0 ? '-' : '+';
    if (e < 0) e = -e;
    if (e >= 100) {
        *w++ = (char)('0' + e / 100);
        e %= 100;
        memcpy(w, DIGIT_TABLE + 2 * e, 2);
        return w + 2;
    }
    if (e >= 10) {
        memcpy(w, DIGIT_TABLE + 2 * e, 2);
        return w + 2;
    }
    *w++ = (char)('0' + e);
    return w;
}

static void write8(uint32_t x, char *p) { /* x < 10^8 as exactly 8 digits: four independent table reads */
    const uint32_t hi = x / 10000, lo = x % 10000;
    memcpy(p, DIGIT_TABLE + 2 * (hi / 100), 2);
    memcpy(p + 2, DIGIT_TABLE + 2 * (hi % 100), 2);
    memcpy(p + 4, DIGIT_TABLE + 2 * (lo / 100), 2);
    memcpy(p + 6, DIGIT_TABLE + 2 * (lo % 100), 2);
}

/* Writes one double as orjson does at w, returns its end. It may scribble up to FLOAT_JSON_SLACK bytes past its
 * start (every copy has a fixed size: no memcpy call per value); later values overwrite that. */
static char *write_double(double f, char *w) {
    uint64_t bits;
    memcpy(&bits, &f, 8);
    const uint64_t mantissa = bits & ((1ull << DOUBLE_MANTISSA_BITS) - 1);
    const uint32_t exponent = (uint32_t)((bits >> DOUBLE_MANTISSA_BITS) & ((1u << DOUBLE_EXPONENT_BITS) - 1));
    if (exponent == (1u << DOUBLE_EXPONENT_BITS) - 1) {
        if (mantissa) {
            memcpy(w, "\"NaN\"", 5);
            return w + 5;
        }
        if (bits >> 63) {
            memcpy(w, "\"-Infinity\"", 11);
            return w + 11;
        }
        memcpy(w, "\"Infinity\"", 10);
        return w + 10;
    }
    if (bits >> 63) *w++ = '-';
    if (exponent == 0 && mantissa == 0) {
        memcpy(w, "0.0", 3);
        return w + 3;
    }
    const floating_decimal_64 v = d2d(mantissa, exponent);
    /* the 17 digits of v.mantissa (< 10^17), zero-padded, then 16 zeros; d: its first significant one */
    char digits[33];
    const uint64_t m = v.mantissa, q = m / 100000000;
    digits[0] = (char)('0' + q / 100000000);
    write8((uint32_t)(q % 100000000), digits + 1);
    write8((uint32_t)(m % 100000000), digits + 9);
    memset(digits + 17, '0', 16);
    const int length = (int)decimalLength17(m);
    const char *d = digits + 17 - length;
    const int k = v.exponent, kk = length + k; /* 10^(kk-1) <= |f| < 10^kk */
    if (0 <= k && kk <= 16) { /* 1234e7 -> 12340000000.0 */
        memcpy(w, d, 16); /* the digits, then zeros */
        w[kk] = '.';
        w[kk + 1] = '0';
        return w + kk + 2;
    }
    if (0 < kk && kk <= 16) { /* 1234e-2 -> 12.34 */
        memcpy(w, d, 16);
        w[kk] = '.';
        memcpy(w + kk + 1, d + kk, 16);
        return w + length + 1;
    }
    if (-5 < kk && kk <= 0) { /* 1234e-6 -> 0.001234 */
        memcpy(w, "0.00000", 8);
        memcpy(w + 2 - kk, d, 17);
        return w + 2 - kk + length;
    }
    w[0] = d[0]; /* 1e30, 1234e30 -> 1.234e33 */
    w[1] = '.';
    memcpy(w + 2, d + 1, 16);
    w += length == 1 ? 1 : length + 1;
    *w++ = 'e';
    return write_exponent(kk - 1, w);
}

/* "[" the column's items "]" (int64 or double), written without the GIL; releases view. */
static PyObject *column_json(Py_buffer *view, int floats) {
    const Py_ssize_t n = view->len / 8, item_max = floats ? FLOAT_JSON_MAX : 21; /* "-9223372036854775808," */
    PyObject *out = NULL;
    if (n > (PY_SSIZE_T_MAX - 2 - FLOAT_JSON_SLACK) / item_max)
        PyErr_NoMemory();
    else
        out = PyBytes_FromStringAndSize(NULL, 2 + item_max * n + FLOAT_JSON_SLACK);
    if (out) {
        char *start = PyBytes_AS_STRING(out), *w = start;
        const double *doubles = view->buf;
        const int64_t *ints = view->buf;
        Py_BEGIN_ALLOW_THREADS
        *w++ = '[';
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i) *w++ = ',';
            w = floats ? write_double(doubles[i], w) : write_int64(ints[i], w);
        }
        *w++ = ']';
        Py_END_ALLOW_THREADS
        if (_PyBytes_Resize(&out, w - start) < 0) out = NULL;
    }
    PyBuffer_Release(view);
    return out;
}

static PyObject *float_json(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (float64_buffer(arg, &view, "float_json") < 0) return NULL;
    return column_json(&view, 1);
}

/* int64_json(steps: array('q')) -> b"[0,1,...]": the bytes orjson writes for steps.tolist(), without a
 * Python int per step (making them cost more than writing them: ~30 ms a million). */
static PyObject *int64_json(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (int64_buffer(arg, &view, "int64_json") < 0) return NULL;
    return column_json(&view, 0);
}

#define ROW_JSON_MAX 73 /* "[-9223372036854775808,-1.2345678901234567e-308,-1.2345678901234567e-308]," */

/* rows_json(steps, wall_times, values) -> b"[[step,wall_time,value],...]": the bytes orjson writes for
 * the rows of /api/scalars (encoding.rows_json), each number as int64_json and float_json write it. */
static PyObject *rows_json(PyObject *self, PyObject *args) {
    PyObject *steps_arg, *walls_arg, *values_arg;
    if (!PyArg_ParseTuple(args, "OOO:rows_json", &steps_arg, &walls_arg, &values_arg)) return NULL;
    Py_buffer steps, walls, values;
    if (int64_buffer(steps_arg, &steps, "rows_json") < 0) return NULL;
    if (float64_buffer(walls_arg, &walls, "rows_json") < 0) {
        PyBuffer_Release(&steps);
        return NULL;
    }
    if (float64_buffer(values_arg, &values, "rows_json") < 0) {
        PyBuffer_Release(&steps);
        PyBuffer_Release(&walls);
        return NULL;
    }
    const Py_ssize_t n = steps.len / 8;
    PyObject *out = NULL;
    if (walls.len != steps.len || values.len != steps.len)
        PyErr_Format(PyExc_ValueError, "rows_json() takes three columns of one length, not %zd, %zd and %zd", n,
                     walls.len / 8, values.len / 8);
    else if (n > (PY_SSIZE_T_MAX - 2 - FLOAT_JSON_SLACK) / ROW_JSON_MAX)
        PyErr_NoMemory();
    else
        out = PyBytes_FromStringAndSize(NULL, 2 + ROW_JSON_MAX * n + FLOAT_JSON_SLACK);
    if (out) {
        const int64_t *s = steps.buf;
        const double *t = walls.buf, *v = values.buf;
        char *start = PyBytes_AS_STRING(out), *w = start;
        Py_BEGIN_ALLOW_THREADS
        *w++ = '[';
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i) *w++ = ',';
            *w++ = '[';
            w = write_int64(s[i], w);
            *w++ = ',';
            w = write_double(t[i], w);
            *w++ = ',';
            w = write_double(v[i], w);
            *w++ = ']';
        }
        *w++ = ']';
        Py_END_ALLOW_THREADS
        if (_PyBytes_Resize(&out, w - start) < 0) out = NULL;
    }
    PyBuffer_Release(&steps);
    PyBuffer_Release(&walls);
    PyBuffer_Release(&values);
    return out;
}

static PyObject *hw_crc(PyObject *self, PyObject *unused) { return PyBool_FromLong(use_hw_crc); }

static PyObject *masked_crc(PyObject *self, PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:masked_crc32c", &view)) return NULL;
    uint32_t crc = masked_crc32c(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "decode(buf, pos, scalar_tags, resync): see reader.decode_records_py."},
    {"step_breaks", step_breaks, METH_O, "step_breaks(steps): see series._breaks_python."},
    {"int64_json", int64_json, METH_O, "int64_json(steps): the bytes of orjson.dumps(steps.tolist())."},
    {"rows_json", rows_json, METH_VARARGS, "rows_json(steps, wall_times, values): the rows of /api/scalars."},
    {"float_json", float_json, METH_O, "float_json(values): the bytes of orjson.dumps(encoding.json_floats(values))."},
    {"hw_crc", hw_crc, METH_NOARGS, "Whether CRC32C uses the CPU's instruction."},
    {"masked_crc32c", masked_crc, METH_VARARGS, "masked_crc32c(data): TFRecord's masked CRC32C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", "C decoder of TensorBoard event files.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__speedups(void) {
    crc_init();
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    use_hw_crc = __builtin_cpu_supports("sse4.2");
#endif
    PyObject *array_module = PyImport_ImportModule("array");
    if (!array_module) return NULL;
    array_type = PyObject_GetAttrString(array_module, "array");
    Py_DECREF(array_module);
    if (!array_type) return NULL;
    str_bad_lengths = PyUnicode_InternFromString("bad_lengths");
    str_crc_errors = PyUnicode_InternFromString("crc_errors");
    if (!str_bad_lengths || !str_crc_errors) return NULL;
    return PyModule_Create(&module);
}
