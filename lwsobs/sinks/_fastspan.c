/*
 * The span export path in C: the push on the request path, the sampling pass, the status page's
 * recent-connections bookkeeping and the OTLP encoding of the common transaction and connection
 * spans.
 *
 * Why: with spans on, a request cost ~73,700 instructions more than with metrics only, nearly all
 * of it Python bytecode run once per transaction (a push through two Python calls, a sampling
 * decision through three, an OrderedDict/deque update, and a byte template filled by ~30 Python
 * operations). Here the same per-fact work is a few C API calls. A connection span (~15
 * attributes built as a dict, then encoded one by one) cost the export worker more than the four
 * transactions of its connection together; it is written here from cached fragments as well.
 *
 * The Python modules keep the reference implementation and stay in charge of everything unusual:
 * each entry point takes the Python callables it hands such facts to (a trace not decided yet, a
 * joined traceparent, span events, an int out of range, a string that is not plain UTF-8, a
 * cache miss), so results are those of the pure path by construction, and tests compare the two.
 *
 * Transaction, Wsi, Context and _Entry fields are read by attribute name (ConnectionFact, a
 * NamedTuple, by index). When a type stores a field as a
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
/* Wsi's properties (id, created_ns, parent, attrs) have no offset: they are read by getattr */
enum {
    W_SAMPLED,
    W_SERIAL,
    W_ID,
    W_CONTEXT,
    W_CREATED,
    W_PEER,
    W_LOCAL,
    W_PARENT,
    W_ATTRS,
    N_WSI
};
static const char *const WSI_FIELDS[N_WSI] = {
    "sampled", "serial", "id", "context", "created_ns", "peer", "local", "parent", "attrs",
};
enum { C_SOURCE, C_NAME, N_CTX };
static const char *const CTX_FIELDS[N_CTX] = {"source", "name"};
enum { E_TXNS, E_SEEN, N_ENTRY };
static const char *const ENTRY_FIELDS[N_ENTRY] = {"txns", "seen"};

static layout_t txn_layout, wsi_layout, ctx_layout, entry_layout;

/* ConnectionFact is a NamedTuple: its fields are read by index, in this order (Encoder checks
   the type's _fields when it is built). */
enum { F_WSI, F_ROLE, F_END, F_TRANSACTIONS, F_END_REASON, F_LEAK, F_EVENTS, N_FACT };
static const char *const FACT_FIELDS[N_FACT] = {
    "wsi", "role", "span_end_ns", "transactions", "end_reason", "leak", "events",
};

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

/* fast_decision for a ConnectionFact: SpanBuilder.decide(fact) is wsi_sampled(fact.wsi), the
 * wsi's answer once it has one. */
static int connection_decision(PyObject *fact) {
    if (!PyTuple_Check(fact) || PyTuple_GET_SIZE(fact) != N_FACT)
        return 2;
    PyObject *wsi = PyTuple_GET_ITEM(fact, F_WSI);
    layout_for(&wsi_layout, wsi);
    PyObject *sampled = get(&wsi_layout, W_SAMPLED, wsi);
    if (sampled == NULL) { /* the Python decide meets the same error and counts it */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear();
        return 2;
    }
    int keep = sampled == Py_None ? 2 : PyObject_IsTrue(sampled);
    Py_DECREF(sampled);
    return keep;
}

/* 1 keep, 0 sampled out, 2 not decided here (the Python decide must judge it), -1 error.
 * Exactly SpanBuilder.transaction_sampled for a transaction whose connection trace is decided. */
static int fast_decision(PyObject *fact, PyObject *connection_type, int join) {
    if ((PyObject *)Py_TYPE(fact) == connection_type)
        return connection_decision(fact);
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

static inline char *put_be64(char *p, uint64_t n) {
    for (int shift = 56; shift >= 0; shift -= 8)
        *p++ = (char)((n >> shift) & 0xFF);
    return p;
}

static inline char *put_bytes(char *p, PyObject *bytes) {
    Py_ssize_t len = PyBytes_GET_SIZE(bytes);
    memcpy(p, PyBytes_AS_STRING(bytes), (size_t)len);
    return p + len;
}

/* Span.flags (fixed32): W3C sampled 0x01 plus OTLP's "has is_remote" 0x100, not remote; the
 * last field of every span these encoders write (6 bytes). */
static inline char *put_local_span_flags(char *p) {
    memcpy(p, "\x85\x01\x01\x01\x00\x00", 6);
    return p + 6;
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
    uint64_t trace_hi;         /* Ids.trace_hi: the high half of every connection trace id */
    PyObject *resource;        /* encoded Resource */
    PyObject *scope;           /* encoded InstrumentationScope */
    PyObject *index_key;       /* encoded KeyValue.key fields */
    PyObject *queue_key;
    PyObject *path_key;
    PyObject *wsi_id_key;      /* lws.wsi.id */
    PyObject *shapes;          /* FactEncoder._shapes: (method, route, role, status, error) -> */
    PyObject *shape;           /* FactEncoder._shape(txn) -> (head, attrs, status) on a miss */
    PyObject *connection;      /* FactEncoder._connection(wsi) -> (trace, parent, wsi attr) */
    PyObject *path;            /* FactEncoder._path(path) -> url.path attribute bytes */
    PyObject *span;            /* FactEncoder._span(fact, conns) -> span bytes, the pure way */
    PyObject *connection_type; /* ConnectionFact: the unusual ones are encoded by `span` */
    PyObject *connection_shapes; /* connection_span.Shapes.cache: shape_key -> Shape */
    PyObject *connection_shape;  /* connection_span.Shapes(fact) -> Shape on a miss */
    PyObject *built_keys;        /* connection_span.BUILT_KEYS: no wsi attribute may be one */
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

/* -- attributes ------------------------------------------------------------------------------ */

/* The UTF-8 of an exact str: OK; SLOW when it has lone surrogates (Python writes those its own
 * way, or raises); ERR for any other error. */
static int utf8(PyObject *str, const char **s, Py_ssize_t *len) {
    *s = PyUnicode_AsUTF8AndSize(str, len);
    if (*s != NULL)
        return OK;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return ERR;
    PyErr_Clear();
    return SLOW;
}

/* An attribute value as otlp_encode.any_value writes it. */
enum { V_STR, V_BOOL, V_INT, V_DOUBLE };
typedef struct {
    int kind;
    const char *s; /* V_STR: UTF-8 */
    Py_ssize_t len;
    uint64_t u; /* V_BOOL 0 or 1, V_INT an int64 as its two's complement */
    double d;
} value_t;

/* OK with *out set for a str, bool, int64 or float; SLOW for anything else. */
static int read_value(PyObject *v, value_t *out) {
    if (PyUnicode_CheckExact(v)) {
        out->kind = V_STR;
        return utf8(v, &out->s, &out->len);
    }
    if (PyBool_Check(v)) {
        out->kind = V_BOOL;
        out->u = v == Py_True;
        return OK;
    }
    if (PyLong_CheckExact(v)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow) /* varint writes more than 64 bits: Python */
            return SLOW;
        if (n == -1 && PyErr_Occurred())
            return ERR;
        out->kind = V_INT;
        out->u = (uint64_t)n;
        return OK;
    }
    if (PyFloat_CheckExact(v)) {
        out->kind = V_DOUBLE;
        out->d = PyFloat_AS_DOUBLE(v);
        return OK;
    }
    return SLOW;
}

/* The length of AnyValue{<v>}. */
static Py_ssize_t value_len(const value_t *v) {
    switch (v->kind) {
    case V_STR:
        return 1 + varint_len((uint64_t)v->len) + v->len;
    case V_BOOL:
        return 2;
    case V_INT:
        return 1 + varint_len(v->u);
    default:
        return 9;
    }
}

static char *put_value(char *p, const value_t *v) {
    switch (v->kind) {
    case V_STR:
        *p++ = 0x0a; /* AnyValue.string_value */
        p = put_varint(p, (uint64_t)v->len);
        memcpy(p, v->s, (size_t)v->len);
        return p + v->len;
    case V_BOOL:
        *p++ = 0x10; /* AnyValue.bool_value */
        *p++ = (char)v->u;
        return p;
    case V_INT:
        *p++ = 0x18; /* AnyValue.int_value */
        return put_varint(p, v->u);
    default: {
        *p++ = 0x21; /* AnyValue.double_value: IEEE 754, little-endian like struct "<d" */
        uint64_t bits;
        memcpy(&bits, &v->d, sizeof bits);
        return put_fixed64(p, bits);
    }
    }
}

/* A Span.attributes field, KeyValue{key, value = AnyValue}: its key is given as an encoded
 * KeyValue.key field (`key_field`), or as UTF-8 (`key`, `key_len`) when key_field is NULL. */
static Py_ssize_t key_field_len(PyObject *key_field, Py_ssize_t key_len) {
    return key_field != NULL ? PyBytes_GET_SIZE(key_field)
                             : 1 + varint_len((uint64_t)key_len) + key_len;
}

static Py_ssize_t attr_len(PyObject *key_field, Py_ssize_t key_len, const value_t *v) {
    Py_ssize_t any = value_len(v);
    Py_ssize_t kv = key_field_len(key_field, key_len) + 1 + varint_len((uint64_t)any) + any;
    return 1 + varint_len((uint64_t)kv) + kv;
}

static char *put_attr(char *p, PyObject *key_field, const char *key, Py_ssize_t key_len,
                      const value_t *v) {
    Py_ssize_t any = value_len(v);
    Py_ssize_t kv = key_field_len(key_field, key_len) + 1 + varint_len((uint64_t)any) + any;
    *p++ = 0x4a; /* Span.attributes */
    p = put_varint(p, (uint64_t)kv);
    if (key_field != NULL) {
        p = put_bytes(p, key_field);
    } else {
        *p++ = 0x0a; /* KeyValue.key */
        p = put_varint(p, (uint64_t)key_len);
        memcpy(p, key, (size_t)key_len);
        p += key_len;
    }
    *p++ = 0x12; /* KeyValue.value */
    p = put_varint(p, (uint64_t)any);
    return put_value(p, v);
}

/* -- Encoder: a connection's fragments (FactEncoder._connection) ----------------------------- */

#define MAX_NESTING 64 /* a deeper chain of parent wsis is left to Python */

/* FactEncoder._connection(wsi) in C, with the ids core.ids.Ids derives: a new (trace id field,
 * span id as a parent field, lws.wsi.id attribute) triple; or NULL, with an error set, or
 * without one when Python is to make it (a value of another type, a read that failed). */
static PyObject *make_triple(EncoderObject *self, PyObject *wsi) {
    PyObject *serial = NULL, *root = Py_NewRef(wsi), *parent = NULL, *id = NULL, *triple = NULL;
    layout_for(&wsi_layout, wsi);
    serial = get(&wsi_layout, W_SERIAL, wsi);
    if (serial == NULL)
        goto read_failed;
    if (!PyLong_CheckExact(serial))
        goto done;
    uint64_t span_id = mix64(self->salt + 2 * (uint64_t)PyLong_AsUnsignedLongLongMask(serial));
    if (span_id == 0)
        span_id = 1;
    for (int depth = 0;; depth++) { /* Ids.wsi_trace_id: the root wsi's trace */
        layout_for(&wsi_layout, root);
        parent = get(&wsi_layout, W_PARENT, root);
        if (parent == NULL)
            goto read_failed;
        if (parent == Py_None || depth == MAX_NESTING)
            break;
        Py_SETREF(root, parent);
        parent = NULL;
    }
    if (parent != Py_None)
        goto done;
    Py_SETREF(serial, get(&wsi_layout, W_SERIAL, root));
    if (serial == NULL)
        goto read_failed;
    if (!PyLong_CheckExact(serial))
        goto done;
    uint64_t trace_lo =
        mix64(self->salt + 2 * (uint64_t)PyLong_AsUnsignedLongLongMask(serial) + 1);
    layout_for(&wsi_layout, wsi);
    id = get(&wsi_layout, W_ID, wsi);
    if (id == NULL)
        goto read_failed;
    const char *raw;
    Py_ssize_t len;
    if (!PyUnicode_CheckExact(id) || utf8(id, &raw, &len) != OK)
        goto done;
    value_t value = {.kind = V_STR, .s = raw, .len = len};
    PyObject *trace_field = PyBytes_FromStringAndSize(NULL, 18);
    PyObject *span_field = PyBytes_FromStringAndSize(NULL, 10);
    PyObject *attr = PyBytes_FromStringAndSize(NULL, attr_len(self->wsi_id_key, 0, &value));
    if (trace_field != NULL && span_field != NULL && attr != NULL) {
        char *p = PyBytes_AS_STRING(trace_field);
        memcpy(p, "\x0a\x10", 2); /* Span.trace_id, 16 bytes big-endian */
        p = put_be64(put_be64(p + 2, self->trace_hi), trace_lo);
        p = PyBytes_AS_STRING(span_field);
        memcpy(p, "\x22\x08", 2); /* Span.parent_span_id, 8 bytes big-endian */
        put_be64(p + 2, span_id);
        put_attr(PyBytes_AS_STRING(attr), self->wsi_id_key, NULL, 0, &value);
        triple = PyTuple_Pack(3, trace_field, span_field, attr);
    }
    Py_XDECREF(trace_field);
    Py_XDECREF(span_field);
    Py_XDECREF(attr);
    goto done;
read_failed:
    if (PyErr_ExceptionMatches(PyExc_Exception))
        PyErr_Clear(); /* Python reads it again and raises it */
done:
    Py_XDECREF(serial);
    Py_XDECREF(root);
    Py_XDECREF(parent);
    Py_XDECREF(id);
    return triple;
}

/* `wsi`'s connection triple: from `conns`, else made (in C, or by FactEncoder._connection),
 * and kept in `conns` when `keep`. A new reference, or NULL with an error. */
static PyObject *connection_triple(EncoderObject *self, PyObject *wsi, PyObject *conns, int keep) {
    PyObject *conn = PyDict_GetItemWithError(conns, wsi);
    if (conn != NULL)
        return Py_NewRef(conn);
    if (PyErr_Occurred())
        return NULL;
    conn = make_triple(self, wsi);
    if (conn == NULL) {
        if (PyErr_Occurred())
            return NULL;
        conn = PyObject_CallOneArg(self->connection, wsi);
        if (conn == NULL)
            return NULL;
    }
    if (check_triple(conn, "_connection") < 0 || (keep && PyDict_SetItem(conns, wsi, conn) < 0)) {
        Py_DECREF(conn);
        return NULL;
    }
    return conn;
}

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

    conn = connection_triple(self, v[T_WSI], conns, 1);
    if (conn == NULL)
        goto done;

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
    p = put_local_span_flags(p);
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

/* -- Encoder: the common connection span (connection_span.encode) ---------------------------- */

enum {
    S_HEAD,
    S_IDENT,
    S_TRANSACTIONS_KEY,
    S_ENDING,
    S_PEER_ADDRESS_KEY,
    S_PEER_PORT_KEY,
    S_LOCAL_ADDRESS_KEY,
    S_LOCAL_PORT_KEY,
    S_PROTOCOL,
    S_STATUS,
    N_SHAPE /* connection_span.Shape */
};

/* A socket address as span_builder.address_attrs reads it: no attribute, an address, or an
 * address and a port. */
typedef struct {
    int has_address, has_port;
    value_t address, port;
} address_t;

/* OK with *out set; SLOW where address_attrs would call str() or int() on other types, or where
 * a port is a Unicode digit or beyond int64. */
static int read_address(PyObject *addr, address_t *out) {
    out->has_address = out->has_port = 0;
    out->address.kind = V_STR;
    out->port.kind = V_INT;
    if (PyTuple_CheckExact(addr)) { /* a getpeername() tuple: (host, port, ...) */
        if (PyTuple_GET_SIZE(addr) < 2)
            return OK;
        PyObject *host = PyTuple_GET_ITEM(addr, 0), *port = PyTuple_GET_ITEM(addr, 1);
        if (!PyUnicode_CheckExact(host) || !PyLong_CheckExact(port))
            return SLOW;
        int rc = read_value(port, &out->port);
        if (rc != OK)
            return rc;
        out->has_address = out->has_port = 1;
        return utf8(host, &out->address.s, &out->address.len);
    }
    if (PyUnicode_CheckExact(addr)) { /* "host:port", "[v6]:port", or an address alone */
        const char *s;
        Py_ssize_t n;
        int rc = utf8(addr, &s, &n);
        if (rc != OK || n == 0)
            return rc;
        out->has_address = 1;
        out->address.s = s;
        out->address.len = n;
        Py_ssize_t colon = n - 1; /* rpartition(":"); UTF-8 has no ':' byte inside a char */
        while (colon >= 0 && s[colon] != ':')
            colon--;
        if (colon < 0)
            return OK;
        int digits = colon + 1 < n;
        uint64_t port = 0;
        for (Py_ssize_t i = colon + 1; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x80) /* str.isdigit() may hold, and int() may not: Python */
                return SLOW;
            if (c < '0' || c > '9') {
                digits = 0;
            } else if (digits) {
                if (port > ((uint64_t)INT64_MAX - (c - '0')) / 10)
                    return SLOW; /* beyond int64: Python */
                port = port * 10 + (c - '0');
            }
        }
        if (!digits || (colon > 0 && s[colon - 1] == ':'))
            return OK; /* the whole text is the address */
        Py_ssize_t a = 0, b = colon; /* host.strip("[]") */
        while (a < b && (s[a] == '[' || s[a] == ']'))
            a++;
        while (b > a && (s[b - 1] == '[' || s[b - 1] == ']'))
            b--;
        out->address.s = s + a;
        out->address.len = b - a;
        out->has_port = 1;
        out->port.u = port;
        return OK;
    }
    if (PyTuple_Check(addr) || PyUnicode_Check(addr))
        return SLOW; /* subclasses: Python */
    return OK; /* None, or anything else address_attrs ignores */
}

static Py_ssize_t address_len(const address_t *a, PyObject *address_key, PyObject *port_key) {
    Py_ssize_t len = 0;
    if (a->has_address)
        len += attr_len(address_key, 0, &a->address);
    if (a->has_port)
        len += attr_len(port_key, 0, &a->port);
    return len;
}

static char *put_address(char *p, const address_t *a, PyObject *address_key, PyObject *port_key) {
    if (a->has_address)
        p = put_attr(p, address_key, NULL, 0, &a->address);
    if (a->has_port)
        p = put_attr(p, port_key, NULL, 0, &a->port);
    return p;
}

/* The length of the wsi's own attributes as key_values writes them: OK, or SLOW for a key that
 * is not a plain str, one SpanBuilder writes itself (dict.update would replace it in place),
 * or a value of another type. */
static int wsi_attrs_len(EncoderObject *self, PyObject *attrs, Py_ssize_t *len) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return SLOW;
        int built = PySet_Contains(self->built_keys, key);
        if (built != 0)
            return built < 0 ? ERR : SLOW;
        const char *k;
        Py_ssize_t key_len;
        value_t v;
        int rc = utf8(key, &k, &key_len);
        if (rc == OK)
            rc = read_value(value, &v);
        if (rc != OK)
            return rc;
        *len += attr_len(NULL, key_len, &v);
    }
    return OK;
}

/* Writes what wsi_attrs_len measured (no Python code may run in between). */
static char *put_wsi_attrs(char *p, PyObject *attrs) {
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attrs, &pos, &key, &value)) {
        const char *k;
        Py_ssize_t key_len;
        value_t v;
        utf8(key, &k, &key_len); /* measured: both succeed, from the str's own cache */
        read_value(value, &v);
        p = put_attr(p, NULL, k, key_len, &v);
    }
    return p;
}

/* The shape of `fact` (connection_span.Shape): from the cache, else from connection_shape. */
static PyObject *connection_shape(EncoderObject *self, PyObject *fact, PyObject *source,
                                  PyObject *name) {
    PyObject *key = PyTuple_Pack(5, PyTuple_GET_ITEM(fact, F_ROLE), source, name,
                                 PyTuple_GET_ITEM(fact, F_LEAK),
                                 PyTuple_GET_ITEM(fact, F_END_REASON));
    if (key == NULL)
        return NULL;
    PyObject *shape = PyDict_GetItemWithError(self->connection_shapes, key);
    Py_DECREF(key);
    if (shape != NULL)
        return Py_NewRef(shape);
    if (PyErr_Occurred())
        return NULL;
    shape = PyObject_CallOneArg(self->connection_shape, fact);
    if (shape == NULL)
        return NULL;
    int ok = PyTuple_CheckExact(shape) && PyTuple_GET_SIZE(shape) == N_SHAPE;
    for (int i = 0; ok && i < N_SHAPE; i++)
        ok = PyBytes_Check(PyTuple_GET_ITEM(shape, i));
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "connection_shape must return a tuple of ten bytes");
        Py_DECREF(shape);
        return NULL;
    }
    return shape;
}

/* Write a connection span (FactEncoder._connection_span) as one ScopeSpans.spans field; SLOW
 * when the fact is unusual (connection_span.usual) or a value is (the Python path then encodes
 * it, and raises what it raises). */
static int write_connection(EncoderObject *self, spans_t *out, PyObject *fact, PyObject *conns) {
    PyObject *w[N_WSI] = {NULL}, *c[N_CTX] = {NULL};
    PyObject *shape = NULL, *conn = NULL, *parent_conn = NULL;
    int result = SLOW;
    if (!PyTuple_Check(fact) || PyTuple_GET_SIZE(fact) != N_FACT)
        return SLOW;
    PyObject *wsi = PyTuple_GET_ITEM(fact, F_WSI), *events = PyTuple_GET_ITEM(fact, F_EVENTS);
    if (!PyTuple_CheckExact(events) || PyTuple_GET_SIZE(events) != 0 ||
        PyUnicode_CheckExact(PyTuple_GET_ITEM(fact, F_ROLE)) || /* not a Role: see usual() */
        !is_exact_or_none(PyTuple_GET_ITEM(fact, F_LEAK), &PyUnicode_Type) ||
        !is_exact_or_none(PyTuple_GET_ITEM(fact, F_END_REASON), &PyUnicode_Type))
        return SLOW;
    uint64_t end, created;
    value_t transactions;
    if (!as_u64(PyTuple_GET_ITEM(fact, F_END), &end) ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(fact, F_TRANSACTIONS)))
        return SLOW;
    result = read_value(PyTuple_GET_ITEM(fact, F_TRANSACTIONS), &transactions);
    if (result != OK)
        return result;

    /* the wsi as it is now, as SpanBuilder.connection reads it; a read that fails is left to
       the Python path, which fails the same way */
    layout_for(&wsi_layout, wsi);
    for (int i = W_CONTEXT; i < N_WSI; i++) {
        w[i] = get(&wsi_layout, i, wsi);
        if (w[i] == NULL)
            goto read_failed;
    }
    layout_for(&ctx_layout, w[W_CONTEXT]);
    for (int i = 0; i < N_CTX; i++) {
        c[i] = get(&ctx_layout, i, w[W_CONTEXT]);
        if (c[i] == NULL)
            goto read_failed;
    }
    result = SLOW;
    PyObject *attrs = w[W_ATTRS];
    if (!as_u64(w[W_CREATED], &created) || !PyUnicode_CheckExact(c[C_SOURCE]) ||
        !PyUnicode_CheckExact(c[C_NAME]) || (attrs != Py_None && !PyDict_CheckExact(attrs)))
        goto done;

    /* the fragments, in the order the Python path asks for them */
    result = ERR;
    if (w[W_PARENT] != Py_None) { /* a live network wsi with more streams to come: kept */
        parent_conn = connection_triple(self, w[W_PARENT], conns, 1);
        if (parent_conn == NULL)
            goto done;
    }
    conn = connection_triple(self, wsi, conns, 0); /* it has ended: not kept */
    if (conn == NULL)
        goto done;
    shape = connection_shape(self, fact, c[C_SOURCE], c[C_NAME]);
    if (shape == NULL)
        goto done;
    PyObject *trace_field = PyTuple_GET_ITEM(conn, 0), *span_field = PyTuple_GET_ITEM(conn, 1);
    if (PyBytes_GET_SIZE(span_field) != 10 ||
        (parent_conn != NULL && PyBytes_GET_SIZE(PyTuple_GET_ITEM(parent_conn, 1)) != 10)) {
        PyErr_SetString(PyExc_TypeError, "_connection must return a 10-byte parent field");
        goto done;
    }

    /* the per-connection values; from here on no Python code runs until the span is written */
    address_t peer, local;
    result = read_address(w[W_PEER], &peer);
    if (result == OK)
        result = read_address(w[W_LOCAL], &local);
    Py_ssize_t attrs_len = 0;
    if (result == OK && attrs != Py_None)
        result = wsi_attrs_len(self, attrs, &attrs_len);
    if (result != OK)
        goto done;
    result = ERR;
    PyObject *const *s = &PyTuple_GET_ITEM(shape, 0);
    Py_ssize_t span_len = PyBytes_GET_SIZE(trace_field) + 10 +
                          (parent_conn != NULL ? 10 : 0) + PyBytes_GET_SIZE(s[S_HEAD]) + 18 +
                          PyBytes_GET_SIZE(PyTuple_GET_ITEM(conn, 2)) +
                          PyBytes_GET_SIZE(s[S_IDENT]) +
                          attr_len(s[S_TRANSACTIONS_KEY], 0, &transactions) +
                          PyBytes_GET_SIZE(s[S_ENDING]) +
                          address_len(&peer, s[S_PEER_ADDRESS_KEY], s[S_PEER_PORT_KEY]) +
                          address_len(&local, s[S_LOCAL_ADDRESS_KEY], s[S_LOCAL_PORT_KEY]) +
                          PyBytes_GET_SIZE(s[S_PROTOCOL]) + attrs_len +
                          PyBytes_GET_SIZE(s[S_STATUS]) + 6;
    if (reserve(out, 1 + varint_len((uint64_t)span_len) + span_len) < 0)
        goto done;
    char *p = out->buf + out->len;
    *p++ = 0x12; /* ScopeSpans.spans */
    p = put_varint(p, (uint64_t)span_len);
    p = put_bytes(p, trace_field);
    *p++ = 0x12; /* Span.span_id: the wsi's, which its parent field carries */
    *p++ = 0x08;
    memcpy(p, PyBytes_AS_STRING(span_field) + 2, 8);
    p += 8;
    if (parent_conn != NULL)
        p = put_bytes(p, PyTuple_GET_ITEM(parent_conn, 1));
    p = put_bytes(p, s[S_HEAD]);
    *p++ = 0x39; /* Span.start_time_unix_nano, fixed64 */
    p = put_fixed64(p, created);
    *p++ = 0x41; /* Span.end_time_unix_nano, fixed64 */
    p = put_fixed64(p, end);
    p = put_bytes(p, PyTuple_GET_ITEM(conn, 2));
    p = put_bytes(p, s[S_IDENT]);
    p = put_attr(p, s[S_TRANSACTIONS_KEY], NULL, 0, &transactions);
    p = put_bytes(p, s[S_ENDING]);
    p = put_address(p, &peer, s[S_PEER_ADDRESS_KEY], s[S_PEER_PORT_KEY]);
    p = put_address(p, &local, s[S_LOCAL_ADDRESS_KEY], s[S_LOCAL_PORT_KEY]);
    p = put_bytes(p, s[S_PROTOCOL]);
    if (attrs != Py_None)
        p = put_wsi_attrs(p, attrs);
    p = put_bytes(p, s[S_STATUS]);
    p = put_local_span_flags(p);
    out->len = p - out->buf;
    result = OK;
    goto done;
read_failed:
    result = ERR;
    if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        result = SLOW;
    }
done:
    for (int i = 0; i < N_WSI; i++)
        Py_XDECREF(w[i]);
    for (int i = 0; i < N_CTX; i++)
        Py_XDECREF(c[i]);
    Py_XDECREF(shape);
    Py_XDECREF(conn);
    Py_XDECREF(parent_conn);
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
        int rc;
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
        } else {
            rc = write_connection(self, &spans, fact, conns);
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

/* Whether `type` is a NamedTuple with exactly the fields write_connection reads by index. */
static int has_fact_fields(PyObject *type) {
    PyObject *fields = PyObject_GetAttrString(type, "_fields");
    if (fields == NULL) {
        PyErr_Clear();
        return 0;
    }
    int ok = PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == N_FACT &&
             PyType_Check(type) && PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type);
    for (Py_ssize_t i = 0; ok && i < N_FACT; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        ok = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, FACT_FIELDS[i]) == 0;
    }
    Py_DECREF(fields);
    return ok;
}

static PyObject *encoder_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"salt",         "resource",          "scope",
                             "index_key",    "queue_key",         "path_key",
                             "wsi_id_key",   "shapes",            "shape",
                             "connection",   "path",              "span",
                             "connection_type", "connection_shapes", "connection_shape",
                             "built_keys",   NULL};
    PyObject *salt, *resource, *scope, *index_key, *queue_key, *path_key, *wsi_id_key, *shapes;
    PyObject *shape, *connection, *path, *span, *connection_type, *connection_shapes;
    PyObject *connection_shape, *built_keys;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OSSSSSSO!OOOOOO!OO!:Encoder", kwlist, &salt,
                                     &resource, &scope, &index_key, &queue_key, &path_key,
                                     &wsi_id_key, &PyDict_Type, &shapes, &shape, &connection,
                                     &path, &span, &connection_type, &PyDict_Type,
                                     &connection_shapes, &connection_shape, &PyFrozenSet_Type,
                                     &built_keys))
        return NULL;
    if (!PyCallable_Check(shape) || !PyCallable_Check(connection) || !PyCallable_Check(path) ||
        !PyCallable_Check(span) || !PyCallable_Check(connection_shape)) {
        PyErr_SetString(PyExc_TypeError,
                        "shape, connection, path, span and connection_shape must be callable");
        return NULL;
    }
    if (!has_fact_fields(connection_type)) {
        PyErr_SetString(PyExc_TypeError,
                        "connection_type must be a NamedTuple of (wsi, role, span_end_ns, "
                        "transactions, end_reason, leak, events)");
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
    self->trace_hi = mix64(salt_value ^ UINT64_C(0x5DEECE66D));
    if (self->trace_hi == 0)
        self->trace_hi = 1;
    self->resource = Py_NewRef(resource);
    self->scope = Py_NewRef(scope);
    self->index_key = Py_NewRef(index_key);
    self->queue_key = Py_NewRef(queue_key);
    self->path_key = Py_NewRef(path_key);
    self->wsi_id_key = Py_NewRef(wsi_id_key);
    self->shapes = Py_NewRef(shapes);
    self->shape = Py_NewRef(shape);
    self->connection = Py_NewRef(connection);
    self->path = Py_NewRef(path);
    self->span = Py_NewRef(span);
    self->connection_type = Py_NewRef(connection_type);
    self->connection_shapes = Py_NewRef(connection_shapes);
    self->connection_shape = Py_NewRef(connection_shape);
    self->built_keys = Py_NewRef(built_keys);
    return (PyObject *)self;
}

static int encoder_traverse(EncoderObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->resource);
    Py_VISIT(self->scope);
    Py_VISIT(self->index_key);
    Py_VISIT(self->queue_key);
    Py_VISIT(self->path_key);
    Py_VISIT(self->wsi_id_key);
    Py_VISIT(self->shapes);
    Py_VISIT(self->shape);
    Py_VISIT(self->connection);
    Py_VISIT(self->path);
    Py_VISIT(self->span);
    Py_VISIT(self->connection_type);
    Py_VISIT(self->connection_shapes);
    Py_VISIT(self->connection_shape);
    Py_VISIT(self->built_keys);
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
    Py_CLEAR(self->wsi_id_key);
    Py_CLEAR(self->shapes);
    Py_CLEAR(self->shape);
    Py_CLEAR(self->connection);
    Py_CLEAR(self->path);
    Py_CLEAR(self->span);
    Py_CLEAR(self->connection_type);
    Py_CLEAR(self->connection_shapes);
    Py_CLEAR(self->connection_shape);
    Py_CLEAR(self->built_keys);
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
    .tp_doc = PyDoc_STR("FactEncoder.encode in C for the common transaction and connection "
                        "spans; the rest goes through the callables it is given."),
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
            layout_init(&ctx_layout, CTX_FIELDS, N_CTX) < 0 ||
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
