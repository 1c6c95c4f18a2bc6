/*
 * The span export path in C: the push on the request path, the sampling pass, the status page's
 * recent-connections bookkeeping and the OTLP encoding of the common transaction span.
 *
 * Why: with spans on, a request cost ~73,700 instructions more than with metrics only, nearly all
 * of it Python bytecode run once per transaction (a push through two Python calls, a sampling
 * decision through three, an OrderedDict/deque update, and a byte template filled by ~30 Python
 * operations). Here the same per-fact work is a few C API calls.
 *
 * The Python modules keep the reference implementation and stay in charge of everything unusual:
 * each entry point takes the Python callables it hands such facts to (a trace not decided yet, a
 * joined traceparent, a connection span, an int out of range, a path that is not plain UTF-8, a
 * cache miss), so results are those of the pure path by construction, and tests compare the two.
 *
 * Transaction, Wsi and _Entry fields are read by attribute name. When a type stores a field as a
 * plain object member (a __slots__ slot, or a C member declared T_OBJECT/T_OBJECT_EX) and uses the
 * generic getattr, the member's offset is resolved once per type (and again whenever the type
 * changes: its version tag is checked) and read directly; otherwise PyObject_GetAttr is used.
 * Nothing assumes another module's struct layout.
 *
 * Every function runs with the GIL held; errors propagate as Python exceptions.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

/* -- interned names ------------------------------------------------------------------------- */

static PyObject *str_append, *str_popleft, *str_move_to_end, *one;

/* -- field access by attribute name --------------------------------------------------------- */

#define MAX_SLOTS 16

typedef struct {
    PyObject *name;    /* interned attribute name */
    Py_ssize_t offset; /* > 0: an object member at this offset of `type`; 0: use getattr */
    int kind;          /* T_OBJECT_EX or T_OBJECT */
    int writable;
} slot_t;

typedef struct {
    PyTypeObject *type; /* the type resolved last (strong reference), or NULL */
    unsigned int version;
    int generic_get;
    int generic_set;
    Py_ssize_t n;
    slot_t slots[MAX_SLOTS];
} layout_t;

enum {
    T_WSI,
    T_TRACEPARENT,
    T_SAMPLED,
    T_METHOD,
    T_ROUTE,
    T_ROLE,
    T_STATUS,
    T_ERROR,
    T_ARRIVED,
    T_START,
    T_END,
    T_SERIAL,
    T_INDEX,
    T_PATH,
    N_TXN
};
static const char *const TXN_FIELDS[N_TXN] = {
    "wsi", "traceparent", "sampled", "method", "route", "role", "status", "error",
    "arrived_ns", "start_ns", "end_ns", "serial", "index", "path",
};
enum { W_SAMPLED, N_WSI };
static const char *const WSI_FIELDS[N_WSI] = {"sampled"};
enum { E_TXNS, E_SEEN, N_ENTRY };
static const char *const ENTRY_FIELDS[N_ENTRY] = {"txns", "seen"};

static layout_t txn_layout, wsi_layout, entry_layout;

static int layout_init(layout_t *layout, const char *const *names, Py_ssize_t n) {
    layout->type = NULL;
    layout->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        layout->slots[i].name = PyUnicode_InternFromString(names[i]);
        if (layout->slots[i].name == NULL)
            return -1;
        layout->slots[i].offset = 0;
    }
    return 0;
}

static void layout_resolve(layout_t *layout, PyTypeObject *type) {
    PyTypeObject *old = layout->type;
    layout->type = NULL; /* describes no type while it is rewritten */
    for (Py_ssize_t i = 0; i < layout->n; i++) {
        slot_t *slot = &layout->slots[i];
        slot->offset = 0;
        /* what attribute lookup finds first on the type; a member descriptor is a data
           descriptor, so nothing in an instance __dict__ can shadow it */
        PyObject *descr = _PyType_Lookup(type, slot->name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type))
            continue;
        /* a descriptor of another class (assigned as a class attribute) is not for us, and
           neither is a member with audit flags: getattr handles both */
        if (!PyType_IsSubtype(type, PyDescr_TYPE(descr)))
            continue;
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if ((member->type != T_OBJECT_EX && member->type != T_OBJECT) ||
            (member->flags & ~READONLY))
            continue;
        slot->offset = member->offset;
        slot->kind = member->type;
        slot->writable = !(member->flags & READONLY);
    }
    layout->generic_get = type->tp_getattro == PyObject_GenericGetAttr;
    layout->generic_set = type->tp_setattro == PyObject_GenericSetAttr;
    if (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
        layout->version = type->tp_version_tag;
    } else { /* no way to notice a change of this type: never read by offset */
        layout->version = 0;
        layout->generic_get = layout->generic_set = 0;
    }
    Py_INCREF(type);
    layout->type = type;
    Py_XDECREF(old); /* last: freeing a type may run Python code, which may resolve again */
}

/* Make `layout` describe the type of `obj` (cheap when it already does). */
static inline int layout_valid(const layout_t *layout, PyObject *obj);

static inline void layout_for(layout_t *layout, PyObject *obj) {
    if (!layout_valid(layout, obj))
        layout_resolve(layout, Py_TYPE(obj));
}

/* True when `layout` describes the type of `obj` as it is now: only then are offsets used, so
 * Python code run in between (a property, a callback) can never make a read go astray. */
static inline int layout_valid(const layout_t *layout, PyObject *obj) {
    PyTypeObject *type = Py_TYPE(obj);
    return type == layout->type && (type->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) &&
           type->tp_version_tag == layout->version;
}

/* obj.<field> as a new reference; by offset when layout_for(layout, obj) resolved it. */
static inline PyObject *get(const layout_t *layout, int field, PyObject *obj) {
    const slot_t *slot = &layout->slots[field];
    if (slot->offset && layout->generic_get && layout_valid(layout, obj)) {
        PyObject *value = *(PyObject **)((char *)obj + slot->offset);
        if (value != NULL)
            return Py_NewRef(value);
        if (slot->kind == T_OBJECT)
            Py_RETURN_NONE;
    }
    return PyObject_GetAttr(obj, slot->name); /* also raises the AttributeError of an unset slot */
}

static inline int set(const layout_t *layout, int field, PyObject *obj, PyObject *value) {
    const slot_t *slot = &layout->slots[field];
    if (slot->offset && slot->writable && layout->generic_set && layout_valid(layout, obj)) {
        PyObject **p = (PyObject **)((char *)obj + slot->offset);
        Py_INCREF(value);
        Py_XSETREF(*p, value);
        return 0;
    }
    return PyObject_SetAttr(obj, slot->name, value);
}

/* -- Pusher: SpanSink.transaction_ended on the request path ---------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *queue;    /* the deque the worker drains */
    PyObject *append;   /* queue.append */
    PyObject *wake;     /* called when the queue reaches batch_size */
    PyObject *overflow; /* called with a fact the full queue cannot take (counts the drop) */
    Py_ssize_t max_queue;
    Py_ssize_t batch_size;
} PusherObject;

static PyObject *pusher_push(PusherObject *self, PyObject *fact) {
    Py_ssize_t n = PyObject_Size(self->queue);
    if (n < 0)
        return NULL;
    if (n >= self->max_queue)
        return PyObject_CallOneArg(self->overflow, fact);
    PyObject *res = PyObject_CallOneArg(self->append, fact);
    if (res == NULL)
        return NULL;
    Py_DECREF(res);
    n = PyObject_Size(self->queue);
    if (n < 0)
        return NULL;
    if (n == self->batch_size)
        return PyObject_CallNoArgs(self->wake);
    Py_RETURN_NONE;
}

static PyObject *pusher_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "Pusher takes exactly one positional argument");
        return NULL;
    }
    return pusher_push((PusherObject *)self, args[0]);
}

static PyObject *pusher_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"queue", "max_queue", "batch_size", "wake", "overflow", NULL};
    PyObject *queue, *wake, *overflow;
    Py_ssize_t max_queue, batch_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnOO:Pusher", kwlist, &queue, &max_queue,
                                     &batch_size, &wake, &overflow))
        return NULL;
    if (!PyCallable_Check(wake) || !PyCallable_Check(overflow)) {
        PyErr_SetString(PyExc_TypeError, "wake and overflow must be callable");
        return NULL;
    }
    PyObject *append = PyObject_GetAttr(queue, str_append);
    if (append == NULL)
        return NULL;
    PusherObject *self = (PusherObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(append);
        return NULL;
    }
    self->vectorcall = pusher_vectorcall;
    self->queue = Py_NewRef(queue);
    self->append = append;
    self->wake = Py_NewRef(wake);
    self->overflow = Py_NewRef(overflow);
    self->max_queue = max_queue;
    self->batch_size = batch_size;
    return (PyObject *)self;
}

static int pusher_traverse(PusherObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->queue);
    Py_VISIT(self->append);
    Py_VISIT(self->wake);
    Py_VISIT(self->overflow);
    return 0;
}

static int pusher_clear(PusherObject *self) {
    Py_CLEAR(self->queue);
    Py_CLEAR(self->append);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->overflow);
    return 0;
}

static void pusher_dealloc(PusherObject *self) {
    PyObject_GC_UnTrack(self);
    pusher_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef pusher_members[] = {
    {"max_queue", T_PYSSIZET, offsetof(PusherObject, max_queue), 0, "facts queued at most"},
    {"batch_size", T_PYSSIZET, offsetof(PusherObject, batch_size), 0, "queue length that wakes"},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(PusherObject, vectorcall), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject PusherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lwsobs.sinks._fastspan.Pusher",
    .tp_doc = PyDoc_STR("Pusher(queue, max_queue, batch_size, wake, overflow): call it with a "
                        "fact to queue it, as SpanSink._push does."),
    .tp_basicsize = sizeof(PusherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = pusher_new,
    .tp_dealloc = (destructor)pusher_dealloc,
    .tp_traverse = (traverseproc)pusher_traverse,
    .tp_clear = (inquiry)pusher_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(PusherObject, vectorcall),
    .tp_members = pusher_members,
};

/* -- sampling --------------------------------------------------------------------------------- */

/* 1 keep, 0 sampled out, 2 not decided here (the Python decide must judge it), -1 error.
 * Exactly SpanBuilder.transaction_sampled for a transaction whose connection trace is decided. */
static int fast_decision(PyObject *fact, PyObject *connection_type, int join) {
    if ((PyObject *)Py_TYPE(fact) == connection_type)
        return 2;
    layout_for(&txn_layout, fact);
    PyObject *sampled = get(&txn_layout, T_SAMPLED, fact);
    if (sampled == NULL)
        return -1;
    if (sampled == Py_None) {
        Py_DECREF(sampled);
        if (join) {
            PyObject *traceparent = get(&txn_layout, T_TRACEPARENT, fact);
            if (traceparent == NULL)
                return -1;
            Py_DECREF(traceparent);
            if (traceparent != Py_None)
                return 2; /* joins the caller's trace: the sampler decides */
        }
        PyObject *wsi = get(&txn_layout, T_WSI, fact);
        if (wsi == NULL)
            return -1;
        layout_for(&wsi_layout, wsi);
        sampled = get(&wsi_layout, W_SAMPLED, wsi);
        Py_DECREF(wsi);
        if (sampled == NULL)
            return -1;
        if (sampled == Py_None) {
            Py_DECREF(sampled);
            return 2; /* first of its trace: the sampler decides */
        }
        if (set(&txn_layout, T_SAMPLED, fact, sampled) < 0) {
            Py_DECREF(sampled);
            return -1;
        }
    }
    int keep = PyObject_IsTrue(sampled);
    Py_DECREF(sampled);
    return keep;
}

PyDoc_STRVAR(sample_doc,
             "sample(queue, take, join, decide, connection_type) -> (kept, sampled_out)\n\n"
             "Pop `take` facts off the left of `queue` and keep those the sampler keeps, in "
             "order. Facts whose trace is already decided are judged here; `decide(fact)` "
             "judges the others, counts what it drops itself, and returns whether to keep.");

static PyObject *fs_sample(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "sample() takes 5 arguments");
        return NULL;
    }
    PyObject *queue = args[0], *decide = args[3], *connection_type = args[4];
    Py_ssize_t take = PyLong_AsSsize_t(args[1]);
    if (take == -1 && PyErr_Occurred())
        return NULL;
    int join = PyObject_IsTrue(args[2]);
    if (join < 0)
        return NULL;
    PyObject *popleft = PyObject_GetAttr(queue, str_popleft);
    if (popleft == NULL)
        return NULL;
    PyObject *kept = PyList_New(0);
    if (kept == NULL) {
        Py_DECREF(popleft);
        return NULL;
    }
    Py_ssize_t sampled_out = 0;
    for (Py_ssize_t i = 0; i < take; i++) {
        PyObject *fact = PyObject_CallNoArgs(popleft);
        if (fact == NULL)
            goto fail;
        int keep = fast_decision(fact, connection_type, join);
        if (keep == 2) {
            PyObject *res = PyObject_CallOneArg(decide, fact);
            keep = res == NULL ? -1 : PyObject_IsTrue(res);
            Py_XDECREF(res);
            if (keep == 0)
                keep = 3; /* counted by `decide` */
        }
        if (keep < 0) {
            Py_DECREF(fact);
            goto fail;
        }
        if (keep == 1) {
            int rc = PyList_Append(kept, fact);
            Py_DECREF(fact);
            if (rc < 0)
                goto fail;
        } else {
            Py_DECREF(fact);
            sampled_out += keep == 0;
        }
    }
    Py_DECREF(popleft);
    return Py_BuildValue("(Nn)", kept, sampled_out);
fail:
    Py_DECREF(popleft);
    Py_DECREF(kept);
    return NULL;
}

/* -- RecentConnections bookkeeping ----------------------------------------------------------- */

PyDoc_STRVAR(record_doc,
             "record(pending, facts, open_entry, finish, connection_type) -> None\n\n"
             "RecentConnections.export's loop: each transaction is appended to its connection's "
             "entry in `pending` (an OrderedDict, moved to its end); `open_entry(wsi)` makes a "
             "missing entry, `finish(fact)` takes a connection fact.");

static PyObject *fs_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "record() takes 5 arguments");
        return NULL;
    }
    PyObject *pending = args[0], *open_entry = args[2], *finish = args[3];
    PyObject *connection_type = args[4];
    if (!PyDict_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "pending must be an OrderedDict");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[1], "facts must be a sequence");
    if (seq == NULL)
        return NULL;
    PyObject *move_to_end = PyObject_GetAttr(pending, str_move_to_end);
    if (move_to_end == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *wsi = NULL, *entry = NULL, *value = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fact = items[i];
        if ((PyObject *)Py_TYPE(fact) == connection_type) {
            value = PyObject_CallOneArg(finish, fact);
            if (value == NULL)
                goto fail;
            Py_CLEAR(value);
            continue;
        }
        layout_for(&txn_layout, fact);
        wsi = get(&txn_layout, T_WSI, fact);
        if (wsi == NULL)
            goto fail;
        entry = PyDict_GetItemWithError(pending, wsi);
        if (entry != NULL) {
            Py_INCREF(entry);
            value = PyObject_CallOneArg(move_to_end, wsi);
            if (value == NULL)
                goto fail;
            Py_CLEAR(value);
        } else {
            if (PyErr_Occurred())
                goto fail;
            entry = PyObject_CallOneArg(open_entry, wsi);
            if (entry == NULL)
                goto fail;
        }
        Py_CLEAR(wsi);
        layout_for(&entry_layout, entry);
        PyObject *txns = get(&entry_layout, E_TXNS, entry);
        if (txns == NULL)
            goto fail;
        PyObject *call[2] = {txns, fact};
        value = PyObject_VectorcallMethod(str_append, call, 2, NULL);
        Py_DECREF(txns);
        if (value == NULL)
            goto fail;
        Py_CLEAR(value);
        PyObject *seen = get(&entry_layout, E_SEEN, entry);
        if (seen == NULL)
            goto fail;
        value = PyNumber_Add(seen, one);
        Py_DECREF(seen);
        if (value == NULL || set(&entry_layout, E_SEEN, entry, value) < 0)
            goto fail;
        Py_CLEAR(value);
        Py_CLEAR(entry);
    }
    Py_DECREF(move_to_end);
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(wsi);
    Py_XDECREF(entry);
    Py_XDECREF(value);
    Py_DECREF(move_to_end);
    Py_DECREF(seq);
    return NULL;
}

/* -- protobuf writing ------------------------------------------------------------------------ */

static inline Py_ssize_t varint_len(uint64_t n) {
    Py_ssize_t len = 1;
    while (n > 0x7F) {
        n >>= 7;
        len++;
    }
    return len;
}

static inline char *put_varint(char *p, uint64_t n) {
    while (n > 0x7F) {
        *p++ = (char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    *p++ = (char)n;
    return p;
}

static inline char *put_fixed64(char *p, uint64_t n) {
    for (int i = 0; i < 8; i++) {
        *p++ = (char)(n & 0xFF);
        n >>= 8;
    }
    return p;
}

static inline char *put_bytes(char *p, PyObject *bytes) {
    Py_ssize_t len = PyBytes_GET_SIZE(bytes);
    memcpy(p, PyBytes_AS_STRING(bytes), (size_t)len);
    return p + len;
}

static inline uint64_t mix64(uint64_t x) {
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* -- Encoder: FactEncoder.encode ------------------------------------------------------------- */

#define SHAPE_KEY 5   /* method, route, role, status, error */
#define SHAPE_WAYS 16 /* a power of two */

typedef struct {
    PyObject_HEAD
    uint64_t salt;
    PyObject *resource;        /* encoded Resource */
    PyObject *scope;           /* encoded InstrumentationScope */
    PyObject *index_key;       /* encoded KeyValue.key fields */
    PyObject *queue_key;
    PyObject *path_key;
    PyObject *shapes;          /* FactEncoder._shapes: (method, route, role, status, error) -> */
    PyObject *shape;           /* FactEncoder._shape(txn) -> (head, attrs, status) on a miss */
    PyObject *connection;      /* FactEncoder._connection(wsi) -> (trace, parent, wsi attr) */
    PyObject *path;            /* FactEncoder._path(path) -> url.path attribute bytes */
    PyObject *span;            /* FactEncoder._span(fact, conns) -> span bytes, the pure way */
    PyObject *connection_type; /* ConnectionFact: always encoded by `span` */
    char *spare;               /* the buffer of the last batch, reused by the next one */
    Py_ssize_t spare_cap;
    /* Shapes by the identity of their key objects (the server hands the same method, route and
       status objects again and again): a hit skips building and hashing the key tuple. An
       identical object is an equal value, and the entries hold their keys alive. */
    struct {
        PyObject *key[SHAPE_KEY];
        PyObject *shape;
    } recent[SHAPE_WAYS];
} EncoderObject;

/* The spans of the batch being encoded, each framed as a ScopeSpans.spans field. */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} spans_t;

static int reserve(spans_t *self, Py_ssize_t extra) {
    if (self->len + extra <= self->cap)
        return 0;
    Py_ssize_t cap = self->cap ? self->cap : 65536;
    while (cap < self->len + extra) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *buf = PyMem_Realloc(self->buf, (size_t)cap);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buf = buf;
    self->cap = cap;
    return 0;
}

/* Append ScopeSpans.spans = <span> (the bytes of one encoded span). */
static int append_span(spans_t *self, PyObject *span) {
    if (!PyBytes_Check(span)) {
        PyErr_SetString(PyExc_TypeError, "an encoded span must be bytes");
        return -1;
    }
    Py_ssize_t len = PyBytes_GET_SIZE(span);
    if (reserve(self, 1 + varint_len((uint64_t)len) + len) < 0)
        return -1;
    char *p = self->buf + self->len;
    *p++ = 0x12;
    p = put_varint(p, (uint64_t)len);
    p = put_bytes(p, span);
    self->len = p - self->buf;
    return 0;
}

/* A tuple of three bytes objects, or an error. */
static int check_triple(PyObject *triple, const char *what) {
    if (!PyTuple_CheckExact(triple) || PyTuple_GET_SIZE(triple) != 3 ||
        !PyBytes_Check(PyTuple_GET_ITEM(triple, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(triple, 1)) ||
        !PyBytes_Check(PyTuple_GET_ITEM(triple, 2))) {
        PyErr_Format(PyExc_TypeError, "%s must return a tuple of three bytes", what);
        return -1;
    }
    return 0;
}

static inline int is_exact_or_none(PyObject *v, PyTypeObject *type) {
    return v == Py_None || Py_IS_TYPE(v, type);
}

/* A non-negative int below 2**64 (exact int): 1 and *out set, 0 when not (no error left). */
static int as_u64(PyObject *v, uint64_t *out) {
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(v, &overflow); /* a digit loop: cheap */
    if (overflow == 0 && n >= 0) {
        *out = (uint64_t)n;
        return 1;
    }
    if (overflow <= 0) /* negative: the pure path raises the error it always did */
        return 0;
    unsigned long long u = PyLong_AsUnsignedLongLong(v); /* 2**63 and up: rare, and slower */
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = (uint64_t)u;
    return 1;
}

enum { OK, SLOW, ERR };

/* Write the common transaction span (FactEncoder._fast_transaction) as one ScopeSpans.spans
 * field; SLOW when a value is unusual (the pure path then encodes the transaction). */
static int write_transaction(EncoderObject *self, spans_t *out, PyObject *txn, PyObject *conns) {
    PyObject *v[N_TXN] = {NULL};
    PyObject *key = NULL, *shape = NULL, *conn = NULL, *path_attr = NULL;
    int result = ERR;
    static const int needed[] = {T_WSI,    T_METHOD, T_ROUTE,  T_ROLE,  T_STATUS, T_ERROR,
                                 T_ARRIVED, T_START, T_END,    T_SERIAL, T_INDEX, T_PATH};
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        v[needed[i]] = get(&txn_layout, needed[i], txn);
        if (v[needed[i]] == NULL)
            goto done;
    }
    result = SLOW;
    uint64_t arrived, start, end, serial;
    long long index;
    if (!as_u64(v[T_ARRIVED], &arrived) || !as_u64(v[T_START], &start))
        goto done;
    if (v[T_END] == Py_None)
        end = start;
    else if (!as_u64(v[T_END], &end))
        goto done;
    if (!PyLong_CheckExact(v[T_SERIAL]) || !PyLong_CheckExact(v[T_INDEX]))
        goto done;
    int overflow;
    index = PyLong_AsLongLongAndOverflow(v[T_INDEX], &overflow);
    if (overflow || (index == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        goto done;
    }
    serial = (uint64_t)PyLong_AsUnsignedLongLongMask(v[T_SERIAL]);
    if (serial == (uint64_t)-1 && PyErr_Occurred())
        goto err;
    /* the shape cache is keyed by values; only plain str/int/None keys are looked up here */
    if (!is_exact_or_none(v[T_METHOD], &PyUnicode_Type) ||
        !is_exact_or_none(v[T_ROUTE], &PyUnicode_Type) ||
        !is_exact_or_none(v[T_ERROR], &PyUnicode_Type) ||
        !is_exact_or_none(v[T_STATUS], &PyLong_Type) ||
        !is_exact_or_none(v[T_PATH], &PyUnicode_Type))
        goto done;
    result = ERR;

    PyObject *const parts[SHAPE_KEY] = {v[T_METHOD], v[T_ROUTE], v[T_ROLE], v[T_STATUS],
                                        v[T_ERROR]};
    uintptr_t h = 0;
    for (int i = 0; i < SHAPE_KEY; i++)
        h = (h ^ (uintptr_t)parts[i]) * (uintptr_t)0x9E3779B97F4A7C15u;
    int way = (int)((h >> 40) & (SHAPE_WAYS - 1));
    int hit = self->recent[way].shape != NULL;
    for (int i = 0; hit && i < SHAPE_KEY; i++)
        hit = self->recent[way].key[i] == parts[i];
    if (hit) {
        shape = Py_NewRef(self->recent[way].shape);
    } else {
        key = PyTuple_Pack(SHAPE_KEY, parts[0], parts[1], parts[2], parts[3], parts[4]);
        if (key == NULL)
            goto done;
        shape = PyDict_GetItemWithError(self->shapes, key);
        if (shape != NULL) {
            Py_INCREF(shape);
        } else {
            if (PyErr_Occurred())
                goto done;
            shape = PyObject_CallOneArg(self->shape, txn);
            if (shape == NULL)
                goto done;
        }
        if (check_triple(shape, "_shape") < 0)
            goto done;
        for (int i = 0; i < SHAPE_KEY; i++)
            Py_XSETREF(self->recent[way].key[i], Py_NewRef(parts[i]));
        Py_XSETREF(self->recent[way].shape, Py_NewRef(shape));
    }

    conn = PyDict_GetItemWithError(conns, v[T_WSI]);
    if (conn != NULL) {
        Py_INCREF(conn);
    } else {
        if (PyErr_Occurred())
            goto done;
        conn = PyObject_CallOneArg(self->connection, v[T_WSI]);
        if (conn == NULL || check_triple(conn, "_connection") < 0 ||
            PyDict_SetItem(conns, v[T_WSI], conn) < 0)
            goto done;
    }

    /* url.path: the path without its query, as key_values writes it */
    const char *raw = NULL;
    Py_ssize_t raw_len = 0, path_len = 0, kv_len = 0, any_len = 0;
    if (v[T_PATH] != Py_None) {
        raw = PyUnicode_AsUTF8AndSize(v[T_PATH], &raw_len);
        if (raw == NULL) { /* lone surrogates: the pure path writes them as "?" */
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                goto done;
            PyErr_Clear();
            path_attr = PyObject_CallOneArg(self->path, v[T_PATH]);
            if (path_attr == NULL)
                goto done;
            if (!PyBytes_Check(path_attr)) {
                PyErr_SetString(PyExc_TypeError, "_path must return bytes");
                goto done;
            }
            path_len = PyBytes_GET_SIZE(path_attr);
        } else {
            const char *query = memchr(raw, '?', (size_t)raw_len);
            if (query != NULL)
                raw_len = query - raw;
            any_len = 1 + varint_len((uint64_t)raw_len) + raw_len;
            kv_len = PyBytes_GET_SIZE(self->path_key) + 1 + varint_len((uint64_t)any_len) + any_len;
            path_len = 1 + varint_len((uint64_t)kv_len) + kv_len;
        }
    }

    uint64_t waited = start > arrived ? start - arrived : 0;
    uint64_t number = (uint64_t)index; /* a negative int64 takes its two's complement */
    Py_ssize_t index_kv = PyBytes_GET_SIZE(self->index_key) + 3 + varint_len(number);
    Py_ssize_t queue_kv = PyBytes_GET_SIZE(self->queue_key) + 3 + varint_len(waited);
    PyObject *trace_field = PyTuple_GET_ITEM(conn, 0), *parent_field = PyTuple_GET_ITEM(conn, 1);
    PyObject *wsi_attr = PyTuple_GET_ITEM(conn, 2);
    PyObject *head = PyTuple_GET_ITEM(shape, 0), *attrs = PyTuple_GET_ITEM(shape, 1);
    PyObject *status_field = PyTuple_GET_ITEM(shape, 2);
    Py_ssize_t span_len = PyBytes_GET_SIZE(trace_field) + 10 + PyBytes_GET_SIZE(parent_field) +
                          PyBytes_GET_SIZE(head) + 18 + PyBytes_GET_SIZE(wsi_attr) +
                          PyBytes_GET_SIZE(attrs) + 1 + varint_len((uint64_t)index_kv) +
                          index_kv + 1 + varint_len((uint64_t)queue_kv) + queue_kv + path_len +
                          PyBytes_GET_SIZE(status_field) + 6;
    if (reserve(out, 1 + varint_len((uint64_t)span_len) + span_len) < 0)
        goto done;
    char *p = out->buf + out->len;
    *p++ = 0x12; /* ScopeSpans.spans */
    p = put_varint(p, (uint64_t)span_len);
    p = put_bytes(p, trace_field);
    *p++ = 0x12; /* Span.span_id, 8 bytes big-endian */
    *p++ = 0x08;
    uint64_t span_id = mix64(self->salt ^ (serial << 1) ^ UINT64_C(0xA5A5A5A5A5A5A5A5));
    if (span_id == 0)
        span_id = 1;
    for (int shift = 56; shift >= 0; shift -= 8)
        *p++ = (char)((span_id >> shift) & 0xFF);
    p = put_bytes(p, parent_field);
    p = put_bytes(p, head);
    *p++ = 0x39; /* Span.start_time_unix_nano, fixed64 */
    p = put_fixed64(p, arrived);
    *p++ = 0x41; /* Span.end_time_unix_nano, fixed64 */
    p = put_fixed64(p, end);
    p = put_bytes(p, wsi_attr);
    p = put_bytes(p, attrs);
    *p++ = 0x4a; /* Span.attributes: {key, value = AnyValue{int_value}} */
    p = put_varint(p, (uint64_t)index_kv);
    p = put_bytes(p, self->index_key);
    *p++ = 0x12;
    *p++ = (char)(1 + varint_len(number));
    *p++ = 0x18;
    p = put_varint(p, number);
    *p++ = 0x4a;
    p = put_varint(p, (uint64_t)queue_kv);
    p = put_bytes(p, self->queue_key);
    *p++ = 0x12;
    *p++ = (char)(1 + varint_len(waited));
    *p++ = 0x18;
    p = put_varint(p, waited);
    if (path_attr != NULL) {
        p = put_bytes(p, path_attr);
    } else if (raw != NULL) {
        *p++ = 0x4a; /* Span.attributes: {key, value = AnyValue{string_value}} */
        p = put_varint(p, (uint64_t)kv_len);
        p = put_bytes(p, self->path_key);
        *p++ = 0x12;
        p = put_varint(p, (uint64_t)any_len);
        *p++ = 0x0a;
        p = put_varint(p, (uint64_t)raw_len);
        memcpy(p, raw, (size_t)raw_len);
        p += raw_len;
    }
    p = put_bytes(p, status_field);
    /* Span.flags (fixed32): W3C sampled 0x01 plus OTLP's "has is_remote" 0x100, not remote */
    memcpy(p, "\x85\x01\x01\x01\x00\x00", 6);
    p += 6;
    out->len = p - out->buf;
    result = OK;
    goto done;
err:
    result = ERR;
done:
    for (int i = 0; i < N_TXN; i++)
        Py_XDECREF(v[i]);
    Py_XDECREF(key);
    Py_XDECREF(shape);
    Py_XDECREF(conn);
    Py_XDECREF(path_attr);
    return result;
}

static PyObject *encoder_encode(EncoderObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "encode(facts, join, conns: dict) takes 3 arguments");
        return NULL;
    }
    int join = PyObject_IsTrue(args[1]);
    if (join < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(args[0], "facts must be a sequence");
    if (seq == NULL)
        return NULL;
    PyObject *conns = args[2];
    /* the spare buffer, unless another thread's encode holds it (then a buffer of our own) */
    spans_t spans = {self->spare, 0, self->spare_cap};
    self->spare = NULL;
    self->spare_cap = 0;
    PyObject *out = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fact = items[i];
        int rc = SLOW;
        if ((PyObject *)Py_TYPE(fact) != self->connection_type) {
            layout_for(&txn_layout, fact);
            rc = OK;
            if (join) {
                PyObject *traceparent = get(&txn_layout, T_TRACEPARENT, fact);
                if (traceparent == NULL)
                    goto done;
                Py_DECREF(traceparent);
                if (traceparent != Py_None)
                    rc = SLOW;
            }
            if (rc == OK)
                rc = write_transaction(self, &spans, fact, conns);
        }
        if (rc == ERR)
            goto done;
        if (rc == SLOW) {
            PyObject *call[2] = {fact, conns};
            PyObject *span = PyObject_Vectorcall(self->span, call, 2, NULL);
            if (span == NULL)
                goto done;
            rc = append_span(&spans, span);
            Py_DECREF(span);
            if (rc < 0)
                goto done;
        }
    }
    /* ExportTraceServiceRequest{resource_spans = 1: ResourceSpans{resource = 1, scope_spans = 2:
       ScopeSpans{scope = 1, spans = 2 (already framed in buf)}}} */
    Py_ssize_t scope_len = PyBytes_GET_SIZE(self->scope);
    Py_ssize_t resource_len = PyBytes_GET_SIZE(self->resource);
    Py_ssize_t ss_len = 1 + varint_len((uint64_t)scope_len) + scope_len + spans.len;
    Py_ssize_t rs_len = 1 + varint_len((uint64_t)resource_len) + resource_len + 1 +
                        varint_len((uint64_t)ss_len) + ss_len;
    Py_ssize_t total = 1 + varint_len((uint64_t)rs_len) + rs_len;
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto done;
    char *p = PyBytes_AS_STRING(out);
    *p++ = 0x0a;
    p = put_varint(p, (uint64_t)rs_len);
    *p++ = 0x0a;
    p = put_varint(p, (uint64_t)resource_len);
    p = put_bytes(p, self->resource);
    *p++ = 0x12;
    p = put_varint(p, (uint64_t)ss_len);
    *p++ = 0x0a;
    p = put_varint(p, (uint64_t)scope_len);
    p = put_bytes(p, self->scope);
    if (spans.len)
        memcpy(p, spans.buf, (size_t)spans.len);
done:
    /* kept for the next batch, unless it is unusually large or another buffer came back */
    if (self->spare == NULL && spans.cap <= (1 << 22)) {
        self->spare = spans.buf;
        self->spare_cap = spans.cap;
    } else {
        PyMem_Free(spans.buf);
    }
    Py_DECREF(seq);
    return out;
}

static PyObject *encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"salt",       "resource",   "scope", "index_key", "queue_key",
                             "path_key",   "shapes",     "shape", "connection", "path",
                             "span",       "connection_type", NULL};
    PyObject *salt, *resource, *scope, *index_key, *queue_key, *path_key, *shapes, *shape;
    PyObject *connection, *path, *span, *connection_type;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OSSSSSO!OOOOO:Encoder", kwlist, &salt,
                                     &resource, &scope, &index_key, &queue_key, &path_key,
                                     &PyDict_Type, &shapes, &shape, &connection, &path, &span,
                                     &connection_type))
        return NULL;
    if (!PyCallable_Check(shape) || !PyCallable_Check(connection) || !PyCallable_Check(path) ||
        !PyCallable_Check(span)) {
        PyErr_SetString(PyExc_TypeError, "shape, connection, path and span must be callable");
        return NULL;
    }
    if (!PyLong_Check(salt)) {
        PyErr_SetString(PyExc_TypeError, "salt must be an int");
        return NULL;
    }
    uint64_t salt_value = (uint64_t)PyLong_AsUnsignedLongLongMask(salt);
    if (salt_value == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    EncoderObject *self = (EncoderObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->salt = salt_value;
    self->resource = Py_NewRef(resource);
    self->scope = Py_NewRef(scope);
    self->index_key = Py_NewRef(index_key);
    self->queue_key = Py_NewRef(queue_key);
    self->path_key = Py_NewRef(path_key);
    self->shapes = Py_NewRef(shapes);
    self->shape = Py_NewRef(shape);
    self->connection = Py_NewRef(connection);
    self->path = Py_NewRef(path);
    self->span = Py_NewRef(span);
    self->connection_type = Py_NewRef(connection_type);
    return (PyObject *)self;
}

static int encoder_traverse(EncoderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->resource);
    Py_VISIT(self->scope);
    Py_VISIT(self->index_key);
    Py_VISIT(self->queue_key);
    Py_VISIT(self->path_key);
    Py_VISIT(self->shapes);
    Py_VISIT(self->shape);
    Py_VISIT(self->connection);
    Py_VISIT(self->path);
    Py_VISIT(self->span);
    Py_VISIT(self->connection_type);
    for (int way = 0; way < SHAPE_WAYS; way++) {
        for (int i = 0; i < SHAPE_KEY; i++)
            Py_VISIT(self->recent[way].key[i]);
        Py_VISIT(self->recent[way].shape);
    }
    return 0;
}

static int encoder_clear(EncoderObject *self) {
    Py_CLEAR(self->resource);
    Py_CLEAR(self->scope);
    Py_CLEAR(self->index_key);
    Py_CLEAR(self->queue_key);
    Py_CLEAR(self->path_key);
    Py_CLEAR(self->shapes);
    Py_CLEAR(self->shape);
    Py_CLEAR(self->connection);
    Py_CLEAR(self->path);
    Py_CLEAR(self->span);
    Py_CLEAR(self->connection_type);
    for (int way = 0; way < SHAPE_WAYS; way++) {
        for (int i = 0; i < SHAPE_KEY; i++)
            Py_CLEAR(self->recent[way].key[i]);
        Py_CLEAR(self->recent[way].shape);
    }
    return 0;
}

static void encoder_dealloc(EncoderObject *self) {
    PyObject_GC_UnTrack(self);
    encoder_clear(self);
    PyMem_Free(self->spare);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef encoder_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))encoder_encode, METH_FASTCALL,
     PyDoc_STR("encode(facts, join, conns) -> ExportTraceServiceRequest bytes; `conns` "
               "caches the connection fragments of the batch (wsi -> the `connection` triple)")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lwsobs.sinks._fastspan.Encoder",
    .tp_doc = PyDoc_STR("FactEncoder.encode in C for the common transaction span; the rest "
                        "goes through the callables it is given."),
    .tp_basicsize = sizeof(EncoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = encoder_new,
    .tp_dealloc = (destructor)encoder_dealloc,
    .tp_traverse = (traverseproc)encoder_traverse,
    .tp_clear = (inquiry)encoder_clear,
    .tp_methods = encoder_methods,
};

/* -- ids ------------------------------------------------------------------------------------- */

PyDoc_STRVAR(mix64_doc, "mix64(x) -> the splitmix64 finalizer of x mod 2**64 (core.ids.mix64)");

static PyObject *fs_mix64(PyObject *module, PyObject *arg) {
    (void)module;
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "mix64() takes an int");
        return NULL;
    }
    uint64_t x = (uint64_t)PyLong_AsUnsignedLongLongMask(arg);
    if (x == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLongLong(mix64(x));
}

/* -- module ---------------------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"sample", (PyCFunction)(void (*)(void))fs_sample, METH_FASTCALL, sample_doc},
    {"record", (PyCFunction)(void (*)(void))fs_record, METH_FASTCALL, record_doc},
    {"mix64", fs_mix64, METH_O, mix64_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastspan_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lwsobs.sinks._fastspan",
    .m_doc = "The span export path's per-fact work in C (see lwsobs/sinks/span_fastpath.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__fastspan(void) {
    if (str_append == NULL) {
        str_append = PyUnicode_InternFromString("append");
        str_popleft = PyUnicode_InternFromString("popleft");
        str_move_to_end = PyUnicode_InternFromString("move_to_end");
        one = PyLong_FromLong(1);
        if (str_append == NULL || str_popleft == NULL || str_move_to_end == NULL || one == NULL)
            return NULL;
        if (layout_init(&txn_layout, TXN_FIELDS, N_TXN) < 0 ||
            layout_init(&wsi_layout, WSI_FIELDS, N_WSI) < 0 ||
            layout_init(&entry_layout, ENTRY_FIELDS, N_ENTRY) < 0)
            return NULL;
    }
    if (PyType_Ready(&PusherType) < 0 || PyType_Ready(&EncoderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fastspan_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Pusher", (PyObject *)&PusherType) < 0 ||
        PyModule_AddObjectRef(module, "Encoder", (PyObject *)&EncoderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
