/* The per-request bookkeeping in C: Transaction records, Tracker.bind/drop/_end_transaction
 * and MetricsSink.transaction_ended.
 *
 * lwsobs/core/hotpath.py and lwsobs/sinks/metrics.py hold the pure-Python reference of every
 * function here; this file must behave exactly like them (tests/unit/test_fastcore.py compares
 * the two). Python spends about 18,000 instructions on one bind + drop + metrics update, mostly
 * frames and attribute lookups; this does the same work in about 1,300.
 *
 * Wsi, Context, TransactionSeries and Histogram stay Python classes with __slots__: configure()
 * resolves the offsets of the slots used here once, and every access checks the object's exact
 * type before using an offset (any other object goes through getattr/setattr).
 *
 * What keeps a request cheap besides: the metrics sink remembers its last series lookup
 * (series_for), numbers and exemplar tuples that only their container holds are rewritten in
 * place rather than replaced (store_int), and freed Transactions are reused (txn_new). Each is
 * exact: tests/unit/test_fastcore.py runs it against the reference, invalidations included.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define NS_PER_S 1e9

/* -- slots of Python classes, reached by offset ---------------------------------------------- */

typedef struct {
    PyTypeObject *type; /* the exact class the offset belongs to (a strong reference) */
    Py_ssize_t offset;
    PyObject *name; /* interned attribute name, for any other object */
} Slot;

enum {
    WSI_TXN,
    WSI_TRANSACTIONS,
    WSI_LAST,
    WSI_CONTEXT,
    WSI_ROLE,
    WSI_END_NS,
    CTX_ACTIVE,
    CTX_SOURCE,
    SERIES_BY_CLASS,
    SERIES_DURATION,
    SERIES_QUEUE_WAIT,
    HIST_BOUNDS,
    HIST_COUNTS,
    HIST_EXEMPLARS,
    HIST_SUM,
    SLOT_COUNT
};

static const char *slot_names[SLOT_COUNT] = {
    "txn",    "transactions", "_last",    "context",    "role",   "end_ns",
    "active_transactions",    "source",   "by_class",   "duration", "queue_wait",
    "bounds", "counts",       "exemplars", "sum",
};

static Slot slots[SLOT_COUNT];
static int core_configured = 0;
static int metrics_configured = 0;
static PyObject *series_class = NULL;  /* TransactionSeries, built for a new (source, role) */
static PyObject *superseded = NULL;    /* "superseded" */
static PyObject *series_name = NULL;   /* "series" */
static PyObject *get_name = NULL;      /* "get" */
static PyObject *zero = NULL, *one = NULL;

static int resolve_slot(int index, PyObject *type) {
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure expects classes");
        return -1;
    }
    PyTypeObject *tp = (PyTypeObject *)type;
    PyObject *descr = PyDict_GetItemString(tp->tp_dict, slot_names[index]);
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", tp->tp_name,
                     slot_names[index]);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot", tp->tp_name,
                     slot_names[index]);
        return -1;
    }
    PyObject *name = PyUnicode_InternFromString(slot_names[index]);
    if (name == NULL) return -1;
    Py_INCREF(type);
    Py_XSETREF(slots[index].type, tp);
    Py_XSETREF(slots[index].name, name);
    slots[index].offset = member->offset;
    return 0;
}

/* A new reference to obj's attribute, or NULL with an exception set. */
static inline PyObject *slot_get(PyObject *obj, int index) {
    const Slot *s = &slots[index];
    if (Py_IS_TYPE(obj, s->type)) {
        PyObject *value = *(PyObject **)((char *)obj + s->offset);
        if (value == NULL) {
            PyErr_SetObject(PyExc_AttributeError, s->name);
            return NULL;
        }
        return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, s->name);
}

/* Set obj's attribute to value (not stolen); -1 with an exception set on failure. */
static inline int slot_set(PyObject *obj, int index, PyObject *value) {
    const Slot *s = &slots[index];
    if (Py_IS_TYPE(obj, s->type)) {
        PyObject **field = (PyObject **)((char *)obj + s->offset);
        PyObject *old = *field;
        *field = Py_NewRef(value);
        Py_XDECREF(old);
        return 0;
    }
    return PyObject_SetAttr(obj, s->name, value);
}

/* The address of obj's slot when obj is exactly the slot's class (its value may be NULL: unset),
 * else NULL: then only slot_get/slot_set may be used. */
static inline PyObject **slot_addr(PyObject *obj, int index) {
    const Slot *s = &slots[index];
    return Py_IS_TYPE(obj, s->type) ? (PyObject **)((char *)obj + s->offset) : NULL;
}

/* -- keyword-capable argument unpacking ------------------------------------------------------ */

/* Fill out[0..count) from positional and keyword arguments; missing optionals stay NULL. */
static int unpack(const char *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, Py_ssize_t required, Py_ssize_t count,
                  PyObject **out) {
    if (nargs > count) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", func,
                     count, nargs);
        return -1;
    }
    if (kwnames == NULL && nargs >= required) { /* the hooks' calls: all positional */
        Py_ssize_t i = 0;
        for (; i < nargs; i++) out[i] = args[i];
        for (; i < count; i++) out[i] = Py_None;
        return 0;
    }
    for (Py_ssize_t i = 0; i < count; i++) out[i] = i < nargs ? args[i] : NULL;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            Py_ssize_t i = 0;
            while (i < count && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) i++;
            if (i == count) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R", func,
                             key);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             func, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", func,
                         names[i]);
            return -1;
        }
    }
    for (Py_ssize_t i = required; i < count; i++)
        if (out[i] == NULL) out[i] = Py_None;
    return 0;
}

/* -- Transaction ----------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *wsi;
    PyObject *role;
    PyObject *serial;
    PyObject *index;
    PyObject *arrived_ns;
    PyObject *start_ns;
    PyObject *method;
    PyObject *path;
    PyObject *traceparent;
    PyObject *end_ns;
    PyObject *status;
    PyObject *route;
    PyObject *error;
    PyObject *sampled;
} TxnObject;

static PyTypeObject TxnType;

#define TXN_FIELDS(X)                                                                          \
    X(wsi) X(role) X(serial) X(index) X(arrived_ns) X(start_ns) X(method) X(path)             \
        X(traceparent) X(end_ns) X(status) X(route) X(error) X(sampled)

/* Transactions are made and freed once per request: up to TXN_FREELIST freed ones are kept
 * (cleared, untracked) and reused, like CPython's own free lists of lists and tuples, sparing
 * the allocator and the collector's allocation count. */
#define TXN_FREELIST 16
static TxnObject *txn_freelist[TXN_FREELIST];
static int txn_free = 0;

/* A Transaction with every field set (references stolen), the later ones None. */
static TxnObject *txn_new(PyObject *wsi, PyObject *role, PyObject *serial, PyObject *index,
                          PyObject *arrived, PyObject *start, PyObject *method, PyObject *path,
                          PyObject *traceparent) {
    TxnObject *txn;
    if (txn_free > 0) {
        txn = txn_freelist[--txn_free];
        (void)PyObject_Init((PyObject *)txn, &TxnType); /* a reference count of 1 again */
    } else {
        txn = PyObject_GC_New(TxnObject, &TxnType);
    }
    if (txn == NULL) {
        Py_DECREF(wsi);
        Py_DECREF(role);
        Py_DECREF(serial);
        Py_DECREF(index);
        Py_DECREF(arrived);
        Py_DECREF(start);
        Py_DECREF(method);
        Py_DECREF(path);
        Py_DECREF(traceparent);
        return NULL;
    }
    txn->wsi = wsi;
    txn->role = role;
    txn->serial = serial;
    txn->index = index;
    txn->arrived_ns = arrived;
    txn->start_ns = start;
    txn->method = method;
    txn->path = path;
    txn->traceparent = traceparent;
    txn->end_ns = Py_NewRef(Py_None);
    txn->status = Py_NewRef(Py_None);
    txn->route = Py_NewRef(Py_None);
    txn->error = Py_NewRef(Py_None);
    txn->sampled = Py_NewRef(Py_None);
    PyObject_GC_Track(txn);
    return txn;
}

static PyObject *Txn_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"wsi",      "serial", "index", "arrived_ns", "start_ns",
                             "method",   "path",   "traceparent", NULL};
    PyObject *wsi, *serial, *index, *arrived, *start, *method, *path, *traceparent;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOO:Transaction", kwlist, &wsi, &serial,
                                     &index, &arrived, &start, &method, &path, &traceparent))
        return NULL;
    PyObject *role = PyObject_GetAttrString(wsi, "role");
    if (role == NULL) return NULL;
    return (PyObject *)txn_new(Py_NewRef(wsi), role, Py_NewRef(serial), Py_NewRef(index),
                               Py_NewRef(arrived), Py_NewRef(start), Py_NewRef(method),
                               Py_NewRef(path), Py_NewRef(traceparent));
}

static int Txn_traverse(TxnObject *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    TXN_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int Txn_clear(TxnObject *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    TXN_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void Txn_dealloc(TxnObject *self) {
    PyObject_GC_UnTrack(self);
    Txn_clear(self);
    if (txn_free < TXN_FREELIST)
        txn_freelist[txn_free++] = self;
    else
        PyObject_GC_Del(self);
}

/* max(0, a - b) for two ints, as a Python int; None counts as b (the Python properties). */
static PyObject *nonnegative_difference(PyObject *a, PyObject *b) {
    PyObject *diff = PyNumber_Subtract(a, b);
    if (diff == NULL) return NULL;
    int negative = PyObject_RichCompareBool(diff, zero, Py_LT);
    if (negative < 0) {
        Py_DECREF(diff);
        return NULL;
    }
    if (negative) {
        Py_DECREF(diff);
        return PyLong_FromLong(0);
    }
    return diff;
}

static PyObject *Txn_queue_ns(TxnObject *self, void *Py_UNUSED(closure)) {
    return nonnegative_difference(self->start_ns, self->arrived_ns);
}

static PyObject *Txn_duration_ns(TxnObject *self, void *Py_UNUSED(closure)) {
    PyObject *end = self->end_ns != Py_None ? self->end_ns : self->start_ns;
    return nonnegative_difference(end, self->arrived_ns);
}

static PyMemberDef Txn_members[] = {
#define MEMBER(f) {#f, T_OBJECT, offsetof(TxnObject, f), 0, NULL},
    TXN_FIELDS(MEMBER)
#undef MEMBER
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Txn_getset[] = {
    {"queue_ns", (getter)Txn_queue_ns, NULL,
     "Time the request waited behind earlier pipelined requests before handling began.", NULL},
    {"duration_ns", (getter)Txn_duration_ns, NULL,
     "Arrival to end: what the client experienced on this connection.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TxnType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lwsobs.core._fastcore.Transaction",
    .tp_doc = "One HTTP request/response on a wsi (HTTP_BIND_PROTOCOL .. HTTP_DROP_PROTOCOL).",
    .tp_basicsize = sizeof(TxnObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Txn_new,
    .tp_dealloc = (destructor)Txn_dealloc,
    .tp_traverse = (traverseproc)Txn_traverse,
    .tp_clear = (inquiry)Txn_clear,
    .tp_members = Txn_members,
    .tp_getset = Txn_getset,
};

/* Set a transaction's field; the exact C type is written directly. */
static int txn_set(PyObject *txn, PyObject **field, const char *name, PyObject *value) {
    if (Py_IS_TYPE(txn, &TxnType)) {
        Py_SETREF(*field, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttrString(txn, name, value);
}

/* -- HotPath: the base class of Tracker ------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    long long epoch_ns;
    long long txn_serial;
    PyObject *on_txn; /* list of callables: the sinks' transaction_ended */
} HotPathObject;

/* CPython 3.11's int layout: 30-bit digits in ob_digit, the sign and digit count in ob_size. */
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
#define LONG_DIGITS 1
#endif

/* 1 and *out = its value when `value` is an exact int in the 64-bit range, else 0 (no error).
 * Timestamps are three 30-bit digits: on CPython 3.11 they are read straight from the digits;
 * PyLong_AsLongAndOverflow costs four times more, PyLong_AsLongLong (through
 * _PyLong_AsByteArray) twenty. */
static inline int exact_value(PyObject *value, long long *out) {
    if (!PyLong_CheckExact(value)) return 0;
#ifdef LONG_DIGITS
    Py_ssize_t size = Py_SIZE(value);
    const digit *d = ((PyLongObject *)value)->ob_digit;
    if (size == 3 && d[2] < 8) { /* a timestamp, below 2**63 */
        *out = (long long)(d[0] | (unsigned long long)d[1] << PyLong_SHIFT |
                           (unsigned long long)d[2] << (2 * PyLong_SHIFT));
        return 1;
    }
    if (size == 1) { /* a count */
        *out = d[0];
        return 1;
    }
    if (size == 2) {
        *out = (long long)(d[0] | (unsigned long long)d[1] << PyLong_SHIFT);
        return 1;
    }
    if (size == 0) {
        *out = 0;
        return 1;
    }
#endif
    int overflow;
    long long big = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) return 0; /* an exact int cannot fail otherwise */
    *out = big;
    return 1;
}

/* A Python int as a C integer (anything with __index__, like PyLong_AsLongAndOverflow). */
static inline int as_ns(PyObject *value, long long *out) {
    if (exact_value(value, out)) return 0;
    int overflow;
    long v = PyLong_AsLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "timestamp or count out of 64-bit range");
        return -1;
    }
    *out = v;
    return 0;
}

/* Numbers that only their container references are reused in place.
 *
 * The per-request updates replace ints and floats that nothing but one slot, list item or
 * tuple item references (a wsi's _last, a histogram's counts and sum, an exemplar's value): an
 * object whose reference count is 1 is reachable from Python only through that container, so
 * writing the new value into it cannot be told apart from storing a new object, and saves an
 * allocation and a deallocation. (CPython's own float arithmetic does the same since 3.12.)
 * Any other object (shared, a subclass, a different size) is replaced as usual. Values the
 * interpreter keeps as shared small ints are never written into another object. */

/* Write v into the exact int `obj` referenced only by its container; 0 when v needs another
 * number of digits or is a small int (then the caller makes a new object). */
static inline int long_overwrite(PyObject *obj, long long v) {
#ifdef LONG_DIGITS
    if (v >= -5 && v <= 256) return 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    Py_ssize_t size = Py_SIZE(obj);
    digit *d = ((PyLongObject *)obj)->ob_digit;
    switch (size < 0 ? -size : size) { /* the same number of digits, or a new object */
    case 1:
        if (u >> PyLong_SHIFT) return 0;
        d[0] = (digit)u;
        break;
    case 2:
        if ((u >> PyLong_SHIFT) == 0 || (u >> 2 * PyLong_SHIFT)) return 0;
        d[0] = (digit)(u & PyLong_MASK);
        d[1] = (digit)(u >> PyLong_SHIFT);
        break;
    case 3:
        if ((u >> 2 * PyLong_SHIFT) == 0) return 0; /* (and u < 2**64 < 2**90) */
        d[0] = (digit)(u & PyLong_MASK);
        d[1] = (digit)((u >> PyLong_SHIFT) & PyLong_MASK);
        d[2] = (digit)(u >> 2 * PyLong_SHIFT);
        break;
    default:
        return 0;
    }
    if ((v < 0) != (size < 0)) Py_SET_SIZE(obj, -size);
    return 1;
#else
    (void)obj;
    (void)v;
    return 0;
#endif
}

/* *field = v (an owned reference to an int, or NULL), reusing the int it holds when only
 * *field references it. */
static inline int store_int(PyObject **field, long long v) {
    PyObject *old = *field;
    if (old != NULL && Py_REFCNT(old) == 1 && PyLong_CheckExact(old) && long_overwrite(old, v))
        return 0;
    PyObject *obj = PyLong_FromLongLong(v);
    if (obj == NULL) return -1;
    *field = obj;
    Py_XDECREF(old);
    return 0;
}

/* *field = value (a double; *field an owned reference to a float), reusing the float. */
static inline int store_float(PyObject **field, double value) {
    PyObject *old = *field;
    if (old != NULL && Py_REFCNT(old) == 1 && PyFloat_CheckExact(old)) {
        ((PyFloatObject *)old)->ob_fval = value;
        return 0;
    }
    PyObject *obj = PyFloat_FromDouble(value);
    if (obj == NULL) return -1;
    *field = obj;
    Py_XDECREF(old);
    return 0;
}

/* seq[i] += 1, as Python runs it; a list's exact int item is bumped in place. */
static int increment_item(PyObject *seq, Py_ssize_t i) {
    long long n;
    if (PyList_CheckExact(seq) && i < PyList_GET_SIZE(seq)) {
        PyObject *item = PyList_GET_ITEM(seq, i);
#ifdef LONG_DIGITS
        digit *d = ((PyLongObject *)item)->ob_digit;
        if (Py_REFCNT(item) == 1 && PyLong_CheckExact(item) && Py_SIZE(item) == 1 &&
            d[0] >= 256 && d[0] < PyLong_MASK) { /* store_int's rewrite, for one digit */
            d[0]++;
            return 0;
        }
#endif
        if (exact_value(item, &n) && n < LLONG_MAX)
            return store_int(&((PyListObject *)seq)->ob_item[i], n + 1);
    }
    PyObject *key = PyLong_FromSsize_t(i);
    if (key == NULL) return -1;
    PyObject *item = PyObject_GetItem(seq, key);
    PyObject *bumped = item ? PyNumber_InPlaceAdd(item, one) : NULL;
    int rc = bumped ? PyObject_SetItem(seq, key, bumped) : -1;
    Py_XDECREF(bumped);
    Py_XDECREF(item);
    Py_DECREF(key);
    return rc;
}

/* wsi._last = max(wsi._last, now - epoch); the int in _last is reused when only it holds it. */
static int touch_last(HotPathObject *self, PyObject *wsi, long long now) {
    long long rel = now - self->epoch_ns;
    PyObject **field = slot_addr(wsi, WSI_LAST);
    PyObject *last_obj = field != NULL ? Py_XNewRef(*field) : slot_get(wsi, WSI_LAST);
    if (last_obj == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_AttributeError, slots[WSI_LAST].name);
        return -1;
    }
    long long last;
    int failed = as_ns(last_obj, &last); /* may run __index__: the slot is read again below */
    Py_DECREF(last_obj);
    if (failed) return -1;
    if (rel <= last) return 0;
    if (field != NULL) return store_int(field, rel);
    PyObject *rel_obj = PyLong_FromLongLong(rel);
    if (rel_obj == NULL) return -1;
    int rc = slot_set(wsi, WSI_LAST, rel_obj);
    Py_DECREF(rel_obj);
    return rc;
}

/* Dict lookups with the hash computed once (the private KnownHash calls up to CPython 3.12). */
#if PY_VERSION_HEX < 0x030D0000
#define DICT_GET(dict, key, hash) _PyDict_GetItem_KnownHash(dict, key, hash)
#define DICT_SET(dict, key, value, hash) _PyDict_SetItem_KnownHash(dict, key, value, hash)
#else
#define DICT_GET(dict, key, hash) PyDict_GetItemWithError(dict, key)
#define DICT_SET(dict, key, value, hash) PyDict_SetItem(dict, key, value)
#endif

/* hash(key); a str (or a str subclass hashing as str, like Role) has it cached. */
static inline Py_hash_t hash_of(PyObject *key) {
#if PY_VERSION_HEX < 0x030D0000
    if (PyUnicode_Check(key) && Py_TYPE(key)->tp_hash == PyUnicode_Type.tp_hash) {
        Py_hash_t hash = ((PyASCIIObject *)key)->hash;
        if (hash != -1) return hash;
    }
#endif
    return PyObject_Hash(key);
}

/* context.active_transactions[role] += delta, as the reference does it: for +1
 * `active[role] = active.get(role, 0) + 1`, for -1 `active[role] -= 1` (KeyError if missing).
 * A dict holding an exact int (or, adding, nothing) for role takes the direct path. */
static int count_active(PyObject *wsi, PyObject *role, long delta) {
    PyObject *ctx = slot_get(wsi, WSI_CONTEXT);
    if (ctx == NULL) return -1;
    PyObject *active = slot_get(ctx, CTX_ACTIVE);
    Py_DECREF(ctx);
    if (active == NULL) return -1;
    int rc = -1;
    PyObject *current = NULL, *updated = NULL;
    if (PyDict_CheckExact(active)) {
        Py_hash_t hash = hash_of(role);
        if (hash == -1) goto done;
        PyObject *value = DICT_GET(active, role, hash); /* borrowed */
        long long n = 0;
        if (value == NULL && PyErr_Occurred()) goto done;
        if (value == NULL ? delta > 0
                          : exact_value(value, &n) && (delta > 0 ? n < LLONG_MAX : n > LLONG_MIN)) {
            updated = PyLong_FromLongLong(n + delta);
            if (updated == NULL) goto done;
            rc = DICT_SET(active, role, updated, hash);
            goto done;
        }
    }
    if (delta > 0) {
        PyObject *args[3] = {active, role, zero};
        current = PyObject_VectorcallMethod(get_name, args, 3, NULL);
        updated = current ? PyNumber_Add(current, one) : NULL;
    } else {
        current = PyObject_GetItem(active, role);
        updated = current ? PyNumber_InPlaceSubtract(current, one) : NULL;
    }
    if (updated != NULL) rc = PyObject_SetItem(active, role, updated);
done:
    Py_XDECREF(current);
    Py_XDECREF(updated);
    Py_DECREF(active);
    return rc;
}

static int end_transaction(HotPathObject *self, PyObject *wsi, PyObject *txn, PyObject *now,
                           PyObject *status, PyObject *route, PyObject *error) {
    long long now_ns;
    if (as_ns(now, &now_ns)) return -1;
    TxnObject *t = (TxnObject *)txn; /* fields used only when txn is exactly TxnType */
    if (txn_set(txn, &t->end_ns, "end_ns", now) || txn_set(txn, &t->status, "status", status) ||
        txn_set(txn, &t->route, "route", route) || txn_set(txn, &t->error, "error", error))
        return -1;
    if (slot_set(wsi, WSI_TXN, Py_None)) return -1;
    if (touch_last(self, wsi, now_ns)) return -1;
    PyObject *role = slot_get(wsi, WSI_ROLE);
    if (role == NULL) return -1;
    int rc = count_active(wsi, role, -1);
    Py_DECREF(role);
    if (rc) return -1;
    PyObject *callbacks = self->on_txn;
    if (callbacks == NULL || !PyList_Check(callbacks)) return 0;
    Py_INCREF(callbacks);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks); i++) {
        PyObject *cb = Py_NewRef(PyList_GET_ITEM(callbacks, i));
        PyObject *result = PyObject_Vectorcall(cb, &txn, 1, NULL);
        Py_DECREF(cb);
        if (result == NULL) {
            Py_DECREF(callbacks);
            return -1;
        }
        Py_DECREF(result);
    }
    Py_DECREF(callbacks);
    return 0;
}

static const char *const bind_names[] = {"wsi", "now", "arrived", "method", "path", "traceparent"};

static PyObject *HotPath_bind(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    PyObject *given[6], *const *a = args; /* every argument positional: used as they are */
    if (kwnames != NULL || nargs != 6) {
        if (unpack("bind", args, nargs, kwnames, bind_names, 2, 6, given)) return NULL;
        a = given;
    }
    PyObject *wsi = a[0], *now = a[1], *arrived = a[2];
    if (!core_configured) {
        PyErr_SetString(PyExc_RuntimeError, "lwsobs.core._fastcore is not configured");
        return NULL;
    }
    PyObject *end = slot_get(wsi, WSI_END_NS);
    if (end == NULL) return NULL;
    int ended = end != Py_None;
    Py_DECREF(end);
    if (ended) Py_RETURN_NONE;
    PyObject *current = slot_get(wsi, WSI_TXN);
    if (current == NULL) return NULL;
    if (current != Py_None) {
        int rc = end_transaction(self, wsi, current, now, Py_None, Py_None, superseded);
        Py_DECREF(current);
        if (rc) return NULL;
    } else {
        Py_DECREF(current);
    }
    long long now_ns;
    if (as_ns(now, &now_ns)) return NULL;
    PyObject *arrived_at = now; /* `arrived` counts unless it is missing or later than now */
    if (arrived != Py_None) {
        long long arrived_ns;
        if (as_ns(arrived, &arrived_ns)) return NULL;
        if (arrived_ns <= now_ns) arrived_at = arrived;
    }
    PyObject *index = slot_get(wsi, WSI_TRANSACTIONS);
    if (index == NULL) return NULL;
    long long count;
    PyObject *next = exact_value(index, &count) && count < LLONG_MAX
                         ? PyLong_FromLongLong(count + 1)
                         : PyNumber_InPlaceAdd(index, one);
    if (next == NULL) {
        Py_DECREF(index);
        return NULL;
    }
    PyObject *role = slot_get(wsi, WSI_ROLE);
    PyObject *serial = role ? PyLong_FromLongLong(self->txn_serial + 1) : NULL;
    if (serial == NULL) {
        Py_XDECREF(role);
        Py_DECREF(index);
        Py_DECREF(next);
        return NULL;
    }
    self->txn_serial += 1;
    Py_INCREF(role); /* one reference for the record, one kept for count_active */
    TxnObject *txn = txn_new(Py_NewRef(wsi), role, serial, index, Py_NewRef(arrived_at),
                             Py_NewRef(now), Py_NewRef(a[3]), Py_NewRef(a[4]), Py_NewRef(a[5]));
    if (txn == NULL || slot_set(wsi, WSI_TRANSACTIONS, next) ||
        slot_set(wsi, WSI_TXN, (PyObject *)txn) || touch_last(self, wsi, now_ns) ||
        count_active(wsi, role, 1)) {
        Py_XDECREF(txn);
        Py_DECREF(next);
        Py_DECREF(role);
        return NULL;
    }
    Py_DECREF(next);
    Py_DECREF(role);
    return (PyObject *)txn;
}

static const char *const drop_names[] = {"wsi", "now", "status", "route", "error"};

static PyObject *HotPath_drop(HotPathObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    PyObject *given[5], *const *a = args; /* every argument positional: used as they are */
    if (kwnames != NULL || nargs != 5) {
        if (unpack("drop", args, nargs, kwnames, drop_names, 2, 5, given)) return NULL;
        a = given;
    }
    if (!core_configured) {
        PyErr_SetString(PyExc_RuntimeError, "lwsobs.core._fastcore is not configured");
        return NULL;
    }
    PyObject *txn = slot_get(a[0], WSI_TXN);
    if (txn == NULL || txn == Py_None) return txn;
    if (end_transaction(self, a[0], txn, a[1], a[2], a[3], a[4])) {
        Py_DECREF(txn);
        return NULL;
    }
    return txn;
}

static const char *const end_names[] = {"wsi", "txn", "now", "status", "route", "error"};

static PyObject *HotPath_end_transaction(HotPathObject *self, PyObject *const *args,
                                         Py_ssize_t nargs, PyObject *kwnames) {
    PyObject *given[6], *const *a = args; /* every argument positional: used as they are */
    if (kwnames != NULL || nargs != 6) {
        if (unpack("_end_transaction", args, nargs, kwnames, end_names, 6, 6, given)) return NULL;
        a = given;
    }
    if (!core_configured) {
        PyErr_SetString(PyExc_RuntimeError, "lwsobs.core._fastcore is not configured");
        return NULL;
    }
    if (end_transaction(self, a[0], a[1], a[2], a[3], a[4], a[5])) return NULL;
    Py_RETURN_NONE;
}

static int HotPath_traverse(HotPathObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_txn); /* a heap subclass's own traverse visits its type */
    return 0;
}

static int HotPath_clear(HotPathObject *self) {
    Py_CLEAR(self->on_txn);
    return 0;
}

static void HotPath_dealloc(HotPathObject *self) {
    /* a heap subclass's subtype_dealloc releases the type after this returns */
    PyObject_GC_UnTrack(self);
    HotPath_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef HotPath_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))HotPath_bind, METH_FASTCALL | METH_KEYWORDS,
     "A transaction starts (see lwsobs.core.hotpath.HotPath.bind)."},
    {"drop", (PyCFunction)(void (*)(void))HotPath_drop, METH_FASTCALL | METH_KEYWORDS,
     "The current transaction ends (see lwsobs.core.hotpath.HotPath.drop)."},
    {"_end_transaction", (PyCFunction)(void (*)(void))HotPath_end_transaction,
     METH_FASTCALL | METH_KEYWORDS, "End `txn` and hand it to the sinks."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef HotPath_members[] = {
    {"epoch_ns", T_LONGLONG, offsetof(HotPathObject, epoch_ns), 0,
     "wsis store their times relative to this"},
    {"_txn_serial", T_LONGLONG, offsetof(HotPathObject, txn_serial), 0,
     "the last transaction serial handed out"},
    {"_on_txn", T_OBJECT, offsetof(HotPathObject, on_txn), 0, "the sinks' transaction_ended"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lwsobs.core._fastcore.HotPath",
    .tp_doc = "The Tracker's per-request methods (base class of lwsobs.core.tracker.Tracker).",
    .tp_basicsize = sizeof(HotPathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)HotPath_dealloc,
    .tp_traverse = (traverseproc)HotPath_traverse,
    .tp_clear = (inquiry)HotPath_clear,
    .tp_methods = HotPath_methods,
    .tp_members = HotPath_members,
};

/* -- MetricsHotPath: the base class of MetricsSink ------------------------------------------- */

/* Seconds from `from` (ns) to b (an int), 0.0 unless b is later; the same double as Python's
 * (b - a) / 1_000_000_000 for any difference below 2**53 ns. */
static inline int elapsed_s(long long from, PyObject *b, double *out) {
    long long to;
    if (as_ns(b, &to)) return -1;
    *out = to > from ? (double)(to - from) / NS_PER_S : 0.0;
    return 0;
}

/* hist.exemplars[i] = (exemplar, value). The tuple already there is refilled when only the list
 * holds it (see store_int), otherwise a new one is stored. */
static int set_exemplar(PyObject *exemplars, Py_ssize_t i, PyObject *exemplar, double value) {
    if (PyList_CheckExact(exemplars) && i < PyList_GET_SIZE(exemplars)) {
        PyObject *pair = PyList_GET_ITEM(exemplars, i);
        if (pair != NULL && Py_REFCNT(pair) == 1 && PyTuple_CheckExact(pair) &&
            PyTuple_GET_SIZE(pair) == 2) {
            PyObject **items = ((PyTupleObject *)pair)->ob_item;
            if (store_float(&items[1], value)) return -1;
            PyObject *old = items[0];
            items[0] = Py_NewRef(exemplar);
            if (!PyObject_GC_IsTracked(pair)) /* the collector untracks tuples of atoms */
                PyObject_GC_Track(pair);
            Py_DECREF(old); /* last: the tuple is whole again if this runs any code */
            return 0;
        }
    }
    PyObject *value_obj = PyFloat_FromDouble(value);
    PyObject *pair = value_obj ? PyTuple_Pack(2, exemplar, value_obj) : NULL;
    PyObject *key = pair ? PyLong_FromSsize_t(i) : NULL;
    int rc = key ? PyObject_SetItem(exemplars, key, pair) : -1;
    Py_XDECREF(key);
    Py_XDECREF(pair);
    Py_XDECREF(value_obj);
    return rc;
}

/* The bounds of the histograms last observed, as doubles: a tuple of floats (held, so never
 * another object at that address) cannot change. */
#define CACHED_BOUNDS 32
static PyObject *cached_bounds = NULL;
static double cached_bound_values[CACHED_BOUNDS];

/* bisect_left(bounds, value) for a tuple of exact floats, -1 for anything else. */
static inline Py_ssize_t bisect_cached(PyObject *bounds, double value) {
    if (bounds != cached_bounds) {
        if (!PyTuple_CheckExact(bounds) || PyTuple_GET_SIZE(bounds) > CACHED_BOUNDS) return -1;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(bounds); i++) {
            PyObject *item = PyTuple_GET_ITEM(bounds, i);
            if (!PyFloat_CheckExact(item)) return -1;
            cached_bound_values[i] = PyFloat_AS_DOUBLE(item);
        }
        Py_INCREF(bounds);
        Py_XSETREF(cached_bounds, bounds);
    }
    Py_ssize_t lo = 0, hi = PyTuple_GET_SIZE(bounds);
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (cached_bound_values[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Histogram.observe(value[, exemplar]) of lwsobs/sinks/histogram.py, inlined:
 *   i = bisect_left(bounds, value); counts[i] += 1; sum += value; exemplars[i] = (ex, value)
 * On the exact Histogram class with its own lists and numbers nothing is allocated: the count,
 * the sum and the exemplar's tuple and value are rewritten in place (see store_int). */
static int observe(PyObject *hist, double value, PyObject *exemplar) {
    int rc = -1;
    PyObject *bounds = slot_get(hist, HIST_BOUNDS);
    if (bounds == NULL) return -1;
    PyObject *counts = NULL, *exemplars = NULL, *fast = NULL;
    Py_ssize_t lo = bisect_cached(bounds, value);
    if (lo < 0) {
        if ((fast = PySequence_Fast(bounds, "histogram bounds")) == NULL) goto done;
        Py_ssize_t hi = PySequence_Fast_GET_SIZE(fast);
        PyObject **items = PySequence_Fast_ITEMS(fast);
        lo = 0;
        while (lo < hi) { /* bisect_left */
            Py_ssize_t mid = (lo + hi) / 2;
            PyObject *item = items[mid];
            double bound =
                PyFloat_CheckExact(item) ? PyFloat_AS_DOUBLE(item) : PyFloat_AsDouble(item);
            if (bound == -1.0 && PyErr_Occurred()) goto done;
            if (bound < value)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    counts = slot_get(hist, HIST_COUNTS);
    if (counts == NULL || increment_item(counts, lo)) goto done;
    PyObject **sum_field = slot_addr(hist, HIST_SUM);
    if (sum_field != NULL && *sum_field != NULL && PyFloat_CheckExact(*sum_field)) {
        if (store_float(sum_field, PyFloat_AS_DOUBLE(*sum_field) + value)) goto done;
    } else { /* sum += value, whatever += means for it */
        PyObject *sum = slot_get(hist, HIST_SUM);
        PyObject *value_obj = sum ? PyFloat_FromDouble(value) : NULL;
        PyObject *new_sum = value_obj ? PyNumber_InPlaceAdd(sum, value_obj) : NULL;
        int failed = new_sum == NULL || slot_set(hist, HIST_SUM, new_sum);
        Py_XDECREF(new_sum);
        Py_XDECREF(value_obj);
        Py_XDECREF(sum);
        if (failed) goto done;
    }
    if (exemplar != NULL) {
        exemplars = slot_get(hist, HIST_EXEMPLARS);
        if (exemplars == NULL || set_exemplar(exemplars, lo, exemplar, value)) goto done;
    }
    rc = 0;
done:
    Py_XDECREF(exemplars);
    Py_XDECREF(counts);
    Py_XDECREF(fast);
    Py_DECREF(bounds);
    return rc;
}

/* code_class_index of lwsobs/core/roles.py */
static int code_class_index(PyObject *status, Py_ssize_t *out) {
    if (status == Py_None) {
        *out = 0;
        return 0;
    }
    long long s;
    if (!exact_value(status, &s)) {
        int overflow = 0;
        s = PyLong_Check(status) ? PyLong_AsLongLongAndOverflow(status, &overflow)
                                 : PyLong_AsLongLong(status); /* through __index__ */
        if (s == -1 && PyErr_Occurred()) return -1;
        if (overflow) s = 0; /* beyond 64 bits: not in 100..599 */
    }
    *out = (100 <= s && s <= 599) ? s / 100 : 0;
    return 0;
}

/* The per-sink state: the `series` table itself, and a one-entry cache of series_for.
 *
 * `series` (set by MetricsSink.__init__) is a slot of this base rather than an entry of the
 * instance's __dict__: a generic attribute lookup costs more than the rest of series_for.
 * It is read directly while the instance's type finds this very slot under that name (a
 * subclass may redefine it), which is checked once per type and version tag; otherwise, and
 * when it is unset, through getattr.
 *
 * series_for looks up self.series[(source, role)]: building the key tuple, hashing and
 * comparing it costs more than the rest of the lookup. A server's requests nearly all go to the
 * same series, so the last answer is kept: (table, source, role) -> series, with the table's
 * dict version at the time. It is used only while self.series is still that same exact dict,
 * unchanged since (CPython changes a dict's version on every insertion, replacement, deletion
 * or clear, PEP 509), and the wsi's source and role are the very same objects: then the lookup
 * would find the same entry. Everything it names is held strongly, so no address is reused.
 * Dict versions exist up to CPython 3.13; elsewhere every call does the full lookup. */
#if PY_VERSION_HEX < 0x030C0000
#define SERIES_CACHE 1
#endif

typedef struct {
    PyObject_HEAD
    PyObject *series_table;                   /* the `series` attribute */
    PyObject *table, *source, *role, *series; /* the last lookup; NULL: none */
    uint64_t version;                         /* table's ma_version_tag after it */
} MetricsHotPathObject;

static PyObject *series_member = NULL; /* MetricsHotPath.__dict__["series"] */
/* The type last seen to find series_member under "series", with its version tag then. The
 * pointer is not owned, only compared: CPython gives every type (and every modification of
 * one or of its bases) a new version tag, never an old one. */
static PyTypeObject *series_slot_type = NULL;
static unsigned int series_slot_tag = 0;

/* self.series, a new reference. */
static inline PyObject *series_table(MetricsHotPathObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (tp != series_slot_type || tp->tp_version_tag != series_slot_tag ||
        !PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG)) {
        series_slot_type = NULL;
        if (tp->tp_getattro != PyObject_GenericGetAttr ||
            _PyType_Lookup(tp, series_name) != series_member || /* borrowed; tags the type */
            !PyType_HasFeature(tp, Py_TPFLAGS_VALID_VERSION_TAG) || tp->tp_version_tag == 0)
            return PyObject_GetAttr((PyObject *)self, series_name);
        series_slot_type = tp;
        series_slot_tag = tp->tp_version_tag;
    }
    if (self->series_table == NULL) /* unset: getattr raises the slot's AttributeError */
        return PyObject_GetAttr((PyObject *)self, series_name);
    return Py_NewRef(self->series_table);
}

#ifdef SERIES_CACHE
static inline uint64_t dict_version(PyObject *dict) {
    return ((PyDictObject *)dict)->ma_version_tag;
}
#endif

/* self.series.get(key), and a new TransactionSeries stored under key when that is None. */
static PyObject *series_for(MetricsHotPathObject *self, PyObject *role, PyObject *wsi) {
    PyObject *table = series_table(self);
    if (table == NULL) return NULL;
    PyObject *series = NULL, *key = NULL, *ctx = slot_get(wsi, WSI_CONTEXT);
    PyObject *source = ctx ? slot_get(ctx, CTX_SOURCE) : NULL;
    if (source == NULL) goto done;
    int exact = PyDict_CheckExact(table);
#ifdef SERIES_CACHE
    if (table == self->table && source == self->source && role == self->role && exact &&
        dict_version(table) == self->version) {
        series = Py_NewRef(self->series);
        goto done;
    }
#endif
    key = PyTuple_Pack(2, source, role);
    if (key == NULL) goto done;
    if (exact) {
        series = Py_XNewRef(PyDict_GetItemWithError(table, key));
    } else { /* whatever .get means for it */
        PyObject *args[2] = {table, key};
        series = PyObject_VectorcallMethod(get_name, args, 2, NULL);
    }
    if (series == Py_None) Py_CLEAR(series);
    if (series == NULL && !PyErr_Occurred()) {
        series = PyObject_CallNoArgs(series_class);
        if (series != NULL && PyObject_SetItem(table, key, series)) Py_CLEAR(series);
    }
#ifdef SERIES_CACHE
    if (series != NULL && exact) {
        Py_XSETREF(self->table, Py_NewRef(table));
        Py_XSETREF(self->source, Py_NewRef(source));
        Py_XSETREF(self->role, Py_NewRef(role));
        Py_XSETREF(self->series, Py_NewRef(series));
        self->version = dict_version(table);
    }
#endif
done:
    Py_XDECREF(key);
    Py_XDECREF(source);
    Py_XDECREF(ctx);
    Py_DECREF(table);
    return series;
}

static PyObject *MetricsHotPath_transaction_ended(MetricsHotPathObject *self, PyObject *txn) {
    if (!metrics_configured || !core_configured) {
        PyErr_SetString(PyExc_RuntimeError, "lwsobs.core._fastcore metrics are not configured");
        return NULL;
    }
    PyObject *wsi, *role, *status, *end, *arrived, *start;
    int owned = !Py_IS_TYPE(txn, &TxnType);
    if (!owned) {
        TxnObject *t = (TxnObject *)txn;
        wsi = t->wsi, role = t->role, status = t->status, end = t->end_ns,
        arrived = t->arrived_ns, start = t->start_ns;
    } else { /* any other record: by attribute */
        wsi = PyObject_GetAttrString(txn, "wsi");
        role = wsi ? PyObject_GetAttrString(txn, "role") : NULL;
        status = role ? PyObject_GetAttrString(txn, "status") : NULL;
        end = status ? PyObject_GetAttrString(txn, "end_ns") : NULL;
        arrived = end ? PyObject_GetAttrString(txn, "arrived_ns") : NULL;
        start = arrived ? PyObject_GetAttrString(txn, "start_ns") : NULL;
        if (start == NULL) {
            Py_XDECREF(wsi);
            Py_XDECREF(role);
            Py_XDECREF(status);
            Py_XDECREF(end);
            Py_XDECREF(arrived);
            return NULL;
        }
    }
    PyObject *result = NULL, *by_class = NULL, *hist = NULL;
    PyObject *series = series_for(self, role, wsi);
    if (series == NULL) goto done;
    Py_ssize_t cls;
    if (code_class_index(status, &cls)) goto done;
    by_class = slot_get(series, SERIES_BY_CLASS);
    if (by_class == NULL || increment_item(by_class, cls)) goto done;
    double seconds = 0.0, waited;
    long long arrived_ns = 0; /* read where the reference first reads `arrived` */
    int have_arrived = end != Py_None;
    if (have_arrived && (as_ns(arrived, &arrived_ns) || elapsed_s(arrived_ns, end, &seconds)))
        goto done;
    hist = slot_get(series, SERIES_DURATION);
    if (hist == NULL || observe(hist, seconds, txn)) goto done;
    Py_DECREF(hist);
    hist = NULL;
    if ((!have_arrived && as_ns(arrived, &arrived_ns)) || elapsed_s(arrived_ns, start, &waited))
        goto done;
    hist = slot_get(series, SERIES_QUEUE_WAIT);
    if (hist == NULL || observe(hist, waited, NULL)) goto done;
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(hist);
    Py_XDECREF(by_class);
    Py_XDECREF(series);
    if (owned) {
        Py_DECREF(wsi);
        Py_DECREF(role);
        Py_DECREF(status);
        Py_DECREF(end);
        Py_DECREF(arrived);
        Py_DECREF(start);
    }
    return result;
}

static int MetricsHotPath_traverse(MetricsHotPathObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->series_table);
    Py_VISIT(self->table);
    Py_VISIT(self->source);
    Py_VISIT(self->role);
    Py_VISIT(self->series);
    return 0;
}

static int MetricsHotPath_clear(MetricsHotPathObject *self) {
    Py_CLEAR(self->series_table);
    Py_CLEAR(self->table);
    Py_CLEAR(self->source);
    Py_CLEAR(self->role);
    Py_CLEAR(self->series);
    return 0;
}

static void MetricsHotPath_dealloc(MetricsHotPathObject *self) {
    PyObject_GC_UnTrack(self);
    MetricsHotPath_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef MetricsHotPath_methods[] = {
    {"transaction_ended", (PyCFunction)MetricsHotPath_transaction_ended, METH_O,
     "Count a finished transaction into its (source, role) series."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef MetricsHotPath_members[] = {
    {"series", T_OBJECT_EX, offsetof(MetricsHotPathObject, series_table), 0,
     "(source, role) -> TransactionSeries"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject MetricsHotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lwsobs.core._fastcore.MetricsHotPath",
    .tp_doc = "MetricsSink's per-request method, its series table and the cache of its last "
              "series lookup.",
    .tp_basicsize = sizeof(MetricsHotPathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)MetricsHotPath_dealloc,
    .tp_traverse = (traverseproc)MetricsHotPath_traverse,
    .tp_clear = (inquiry)MetricsHotPath_clear,
    .tp_methods = MetricsHotPath_methods,
    .tp_members = MetricsHotPath_members,
};

/* -- configuration --------------------------------------------------------------------------- */

static PyObject *configure_core(PyObject *Py_UNUSED(module), PyObject *const *args,
                                Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure_core(Wsi, Context)");
        return NULL;
    }
    for (int i = WSI_TXN; i <= WSI_END_NS; i++)
        if (resolve_slot(i, args[0])) return NULL;
    for (int i = CTX_ACTIVE; i <= CTX_SOURCE; i++)
        if (resolve_slot(i, args[1])) return NULL;
    core_configured = 1;
    Py_RETURN_NONE;
}

static PyObject *configure_metrics(PyObject *Py_UNUSED(module), PyObject *const *args,
                                   Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "configure_metrics(TransactionSeries, Histogram)");
        return NULL;
    }
    for (int i = SERIES_BY_CLASS; i <= SERIES_QUEUE_WAIT; i++)
        if (resolve_slot(i, args[0])) return NULL;
    for (int i = HIST_BOUNDS; i <= HIST_SUM; i++)
        if (resolve_slot(i, args[1])) return NULL;
    Py_INCREF(args[0]);
    Py_XSETREF(series_class, args[0]);
    metrics_configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure_core", (PyCFunction)(void (*)(void))configure_core, METH_FASTCALL,
     "configure_core(Wsi, Context): resolve the slots bind/drop use."},
    {"configure_metrics", (PyCFunction)(void (*)(void))configure_metrics, METH_FASTCALL,
     "configure_metrics(TransactionSeries, Histogram): the slots the metrics update uses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcore_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lwsobs.core._fastcore",
    .m_doc = "C fast path of the per-request bookkeeping (see lwsobs/core/hotpath.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__fastcore(void) {
    if (PyType_Ready(&TxnType) < 0 || PyType_Ready(&HotPathType) < 0 ||
        PyType_Ready(&MetricsHotPathType) < 0)
        return NULL;
    superseded = PyUnicode_InternFromString("superseded");
    series_name = PyUnicode_InternFromString("series");
    get_name = PyUnicode_InternFromString("get");
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    if (superseded == NULL || series_name == NULL || get_name == NULL || zero == NULL ||
        one == NULL)
        return NULL;
    series_member = PyDict_GetItemWithError(MetricsHotPathType.tp_dict, series_name);
    if (series_member == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_SystemError, "MetricsHotPath.series");
        return NULL;
    }
    Py_INCREF(series_member);
    PyObject *module = PyModule_Create(&fastcore_module);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "Transaction", (PyObject *)&TxnType) < 0 ||
        PyModule_AddObjectRef(module, "HotPath", (PyObject *)&HotPathType) < 0 ||
        PyModule_AddObjectRef(module, "MetricsHotPath", (PyObject *)&MetricsHotPathType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
