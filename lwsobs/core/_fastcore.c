/* The per-request bookkeeping in C: Transaction records, Tracker.bind/drop/_end_transaction
 * and MetricsSink.transaction_ended.
 *
 * lwsobs/core/hotpath.py and lwsobs/sinks/metrics.py hold the pure-Python reference of every
 * function here; this file must behave exactly like them (tests/unit/test_fastcore.py compares
 * the two). Python spends about 18,000 instructions on one bind + drop + metrics update, mostly
 * frames and attribute lookups; this does the same work in about a tenth of that.
 *
 * Wsi, Context, TransactionSeries and Histogram stay Python classes with __slots__: configure()
 * resolves the offsets of the slots used here once, and every access checks the object's exact
 * type before using an offset (any other object goes through getattr/setattr).
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

/* A Transaction with every field set (references stolen), the later ones None. */
static TxnObject *txn_new(PyObject *wsi, PyObject *role, PyObject *serial, PyObject *index,
                          PyObject *arrived, PyObject *start, PyObject *method, PyObject *path,
                          PyObject *traceparent) {
    TxnObject *txn = PyObject_GC_New(TxnObject, &TxnType);
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

/* A Python int as a C integer. Timestamps are three 30-bit digits: on CPython 3.11 they are
 * read straight from the digits; PyLong_AsLongAndOverflow (the fallback) costs four times more,
 * PyLong_AsLongLong (through _PyLong_AsByteArray) twenty. */
static inline int as_ns(PyObject *value, long long *out) {
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    if (PyLong_CheckExact(value)) {
        Py_ssize_t size = Py_SIZE(value);
        Py_ssize_t n = size < 0 ? -size : size;
        const digit *d = ((PyLongObject *)value)->ob_digit;
        if (n < 3 || (n == 3 && d[2] < 8)) { /* below 2**63 */
            unsigned long long v = 0;
            for (Py_ssize_t i = n - 1; i >= 0; i--) v = (v << PyLong_SHIFT) | d[i];
            *out = size < 0 ? -(long long)v : (long long)v;
            return 0;
        }
    }
#endif
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

/* wsi._last = max(wsi._last, now - epoch) */
static int touch_last(HotPathObject *self, PyObject *wsi, long long now) {
    long long rel = now - self->epoch_ns;
    PyObject *last_obj = slot_get(wsi, WSI_LAST);
    if (last_obj == NULL) return -1;
    long long last;
    int failed = as_ns(last_obj, &last);
    Py_DECREF(last_obj);
    if (failed) return -1;
    if (rel <= last) return 0;
    PyObject *rel_obj = PyLong_FromLongLong(rel);
    if (rel_obj == NULL) return -1;
    int rc = slot_set(wsi, WSI_LAST, rel_obj);
    Py_DECREF(rel_obj);
    return rc;
}

/* context.active_transactions[role] += delta; a missing key is 0 when adding, KeyError else. */
static int count_active(PyObject *wsi, PyObject *role, long delta) {
    PyObject *ctx = slot_get(wsi, WSI_CONTEXT);
    if (ctx == NULL) return -1;
    PyObject *active = slot_get(ctx, CTX_ACTIVE);
    Py_DECREF(ctx);
    if (active == NULL) return -1;
    int rc = -1;
    PyObject *current = PyObject_GetItem(active, role);
    long long n = 0;
    if (current == NULL) {
        if (delta < 0 || !PyErr_ExceptionMatches(PyExc_KeyError)) goto done;
        PyErr_Clear();
    } else {
        int failed = as_ns(current, &n);
        Py_DECREF(current);
        if (failed) goto done;
    }
    PyObject *updated = PyLong_FromLongLong(n + delta);
    if (updated == NULL) goto done;
    rc = PyObject_SetItem(active, role, updated);
    Py_DECREF(updated);
done:
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
    PyObject *a[6];
    if (unpack("bind", args, nargs, kwnames, bind_names, 2, 6, a)) return NULL;
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
    PyObject *next = PyNumber_Add(index, one);
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
    PyObject *a[5];
    if (unpack("drop", args, nargs, kwnames, drop_names, 2, 5, a)) return NULL;
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
    PyObject *a[6];
    if (unpack("_end_transaction", args, nargs, kwnames, end_names, 6, 6, a)) return NULL;
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

/* Seconds from a to b (ns, ints), 0.0 unless b is later; the same double as Python's
 * (b - a) / 1_000_000_000 for any difference below 2**53 ns. */
static int elapsed_s(PyObject *a, PyObject *b, double *out) {
    long long from, to;
    if (as_ns(a, &from) || as_ns(b, &to)) return -1;
    *out = to > from ? (double)(to - from) / NS_PER_S : 0.0;
    return 0;
}

/* Histogram.observe(value[, exemplar]) of lwsobs/sinks/histogram.py, inlined. */
static int observe(PyObject *hist, double value, PyObject *exemplar) {
    int rc = -1;
    PyObject *bounds = slot_get(hist, HIST_BOUNDS);
    if (bounds == NULL) return -1;
    PyObject *counts = NULL, *fast = PySequence_Fast(bounds, "histogram bounds");
    if (fast == NULL) goto done;
    Py_ssize_t lo = 0, hi = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    while (lo < hi) { /* bisect_left */
        Py_ssize_t mid = (lo + hi) / 2;
        PyObject *item = items[mid];
        double bound = PyFloat_CheckExact(item) ? PyFloat_AS_DOUBLE(item) : PyFloat_AsDouble(item);
        if (bound == -1.0 && PyErr_Occurred()) goto done;
        if (bound < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    counts = slot_get(hist, HIST_COUNTS);
    if (counts == NULL) goto done;
    if (!PyList_Check(counts) || lo >= PyList_GET_SIZE(counts)) {
        PyErr_SetString(PyExc_IndexError, "histogram counts shorter than its bounds");
        goto done;
    }
    PyObject *bumped = PyNumber_Add(PyList_GET_ITEM(counts, lo), one);
    if (bumped == NULL) goto done;
    PyList_SetItem(counts, lo, bumped);
    PyObject *sum = slot_get(hist, HIST_SUM);
    if (sum == NULL) goto done;
    PyObject *new_sum = PyFloat_CheckExact(sum)
                            ? PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + value) /* as sum + v */
                            : NULL;
    if (new_sum == NULL && !PyErr_Occurred()) { /* not a float: whatever + means for it */
        PyObject *value_obj = PyFloat_FromDouble(value);
        new_sum = value_obj ? PyNumber_Add(sum, value_obj) : NULL;
        Py_XDECREF(value_obj);
    }
    Py_DECREF(sum);
    if (new_sum == NULL || slot_set(hist, HIST_SUM, new_sum)) {
        Py_XDECREF(new_sum);
        goto done;
    }
    Py_DECREF(new_sum);
    if (exemplar != NULL) {
        PyObject *exemplars = slot_get(hist, HIST_EXEMPLARS);
        PyObject *value_obj = exemplars ? PyFloat_FromDouble(value) : NULL;
        PyObject *pair = value_obj ? PyTuple_Pack(2, exemplar, value_obj) : NULL;
        Py_XDECREF(value_obj);
        int failed = pair == NULL;
        if (!failed && PyList_Check(exemplars) && lo < PyList_GET_SIZE(exemplars)) {
            PyList_SetItem(exemplars, lo, pair); /* steals pair */
        } else if (!failed) {
            PyObject *key = PyLong_FromSsize_t(lo);
            failed = key == NULL || PyObject_SetItem(exemplars, key, pair) < 0;
            Py_XDECREF(key);
            Py_DECREF(pair);
        }
        Py_XDECREF(exemplars);
        if (failed) goto done;
    }
    rc = 0;
done:
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
    long s = PyLong_AsLong(status);
    if (s == -1 && PyErr_Occurred()) return -1;
    *out = (100 <= s && s <= 599) ? s / 100 : 0;
    return 0;
}

static PyObject *series_for(PyObject *self, PyObject *role, PyObject *wsi) {
    PyObject *table = PyObject_GetAttr(self, series_name);
    if (table == NULL) return NULL;
    PyObject *series = NULL, *key = NULL, *ctx = slot_get(wsi, WSI_CONTEXT);
    PyObject *source = ctx ? slot_get(ctx, CTX_SOURCE) : NULL;
    if (source != NULL) key = PyTuple_Pack(2, source, role);
    if (key == NULL) goto done;
    series = PyDict_Check(table) ? Py_XNewRef(PyDict_GetItemWithError(table, key)) : NULL;
    if (series == NULL && !PyErr_Occurred()) {
        series = PyObject_CallNoArgs(series_class);
        if (series != NULL && PyObject_SetItem(table, key, series)) Py_CLEAR(series);
    }
done:
    Py_XDECREF(key);
    Py_XDECREF(source);
    Py_XDECREF(ctx);
    Py_DECREF(table);
    return series;
}

static PyObject *MetricsHotPath_transaction_ended(PyObject *self, PyObject *txn) {
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
    if (by_class == NULL) goto done;
    if (!PyList_Check(by_class) || cls >= PyList_GET_SIZE(by_class)) {
        PyErr_SetString(PyExc_IndexError, "by_class shorter than the code classes");
        goto done;
    }
    PyObject *bumped = PyNumber_Add(PyList_GET_ITEM(by_class, cls), one);
    if (bumped == NULL) goto done;
    PyList_SetItem(by_class, cls, bumped);
    double seconds = 0.0, waited;
    if (end != Py_None && elapsed_s(arrived, end, &seconds)) goto done;
    hist = slot_get(series, SERIES_DURATION);
    if (hist == NULL || observe(hist, seconds, txn)) goto done;
    Py_DECREF(hist);
    if (elapsed_s(arrived, start, &waited)) {
        hist = NULL;
        goto done;
    }
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

static PyMethodDef MetricsHotPath_methods[] = {
    {"transaction_ended", (PyCFunction)MetricsHotPath_transaction_ended, METH_O,
     "Count a finished transaction into its (source, role) series."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MetricsHotPathType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lwsobs.core._fastcore.MetricsHotPath",
    .tp_doc = "MetricsSink's per-request method; no fields, so it mixes into any class.",
    .tp_basicsize = sizeof(PyObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_methods = MetricsHotPath_methods,
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
    zero = PyLong_FromLong(0);
    one = PyLong_FromLong(1);
    if (superseded == NULL || series_name == NULL || zero == NULL || one == NULL) return NULL;
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
