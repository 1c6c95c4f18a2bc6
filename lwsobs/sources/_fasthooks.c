/*
 * The aiohttp server's per-request hooks in C (lwsobs/sources/aiohttp_server.py has the
 * pure-Python reference, InstrumentedRequestHandler, and the rules; this file mirrors them).
 *
 * Why: three Python overrides run for every request (data_received, the request factory
 * wrapper, log_access) and cost ~6,400 instructions per request, about 3% of a plain aiohttp
 * request. Here they are:
 *   - data_received and log_access, METH_FASTCALL method descriptors made for the handler
 *     class itself by configure(), which call aiohttp's own functions and then the Tracker;
 *   - `RequestHook`, one per connection: the request factory wrapper (aiohttp calls it with the
 *     handler as its `protocol` argument, so it needs no reference to the handler, and holds no
 *     cycle) and the connection's state: the arrival stamps of parsed requests, the count of
 *     requests taken off the queue, the Tracker and whether spans want route and traceparent.
 * Handler slots are read by offset (member descriptors resolved by configure()) only when the
 * handler's type is exactly the configured one; any other type goes through getattr. Another
 * engineer's types (Wsi, Transaction, the Tracker) are only reached by attribute and method call.
 * aiohttp's response.status, a Python property, is read as the attribute it returns (status_of).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

/* -- configuration (set by configure(); all access happens with the GIL held) -------------- */

typedef struct {
    PyObject *name;     /* interned attribute name */
    Py_ssize_t offset;  /* > 0: a T_OBJECT_EX slot of handler_type; 0: use getattr */
} slot_t;

static PyTypeObject *handler_type = NULL; /* instances of exactly this type use the offsets */
static PyObject *base_data_received = NULL;
static PyObject *base_log_access = NULL;
static PyObject *error_message = NULL;    /* web_protocol.ERROR: a parser error's message */
static PyObject *anchor_obj = NULL;       /* clock.ANCHOR_NS */
static long long anchor_ns = 0;
static PyObject *test_clock = NULL;       /* None in production: CLOCK_MONOTONIC */
static slot_t s_request_count, s_logging_enabled, s_wsi, s_state;
static int logging_flag_absent = 0;       /* aiohttp < 3.12: no _logging_enabled anywhere */

/* interned names */
static PyObject *n_request_count, *n_logging_enabled, *n_wsi, *n_state;
static PyObject *n_bind, *n_drop, *n_txn, *n_method, *n_path, *n_headers, *n_get;
static PyObject *n_traceparent, *n_status, *n_match_info, *n_route, *n_resource, *n_canonical;
static PyObject *n_status_slot, *n_fget; /* "_status", "fget" */
static PyObject *invalid_request; /* "invalid_request" */

static PyTypeObject RequestHookType;

/* -- helpers ------------------------------------------------------------------------------ */

/* ANCHOR_NS + monotonic_ns() (the test clock replaces monotonic_ns()); -1 on an error. */
static int clock_ns(long long *out) {
    if (test_clock != NULL) {
        PyObject *clock = test_clock;
        Py_INCREF(clock);
        PyObject *mono = PyObject_CallNoArgs(clock);
        Py_DECREF(clock);
        if (mono == NULL)
            return -1;
        PyObject *sum = PyNumber_Add(anchor_obj, mono);
        Py_DECREF(mono);
        if (sum == NULL)
            return -1;
        *out = PyLong_AsLongLong(sum);
        Py_DECREF(sum);
        return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
    }
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = anchor_ns + (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
    return 0;
}

/* A new reference to obj.<slot>; by offset when obj's type is exactly handler_type. */
static inline PyObject *get_slot(PyObject *obj, const slot_t *slot) {
    if (slot->offset > 0 && Py_TYPE(obj) == handler_type) {
        PyObject *value = *(PyObject **)((char *)obj + slot->offset);
        if (value == NULL) {
            PyErr_Format(PyExc_AttributeError, "'%.100s' object has no attribute '%U'",
                         Py_TYPE(obj)->tp_name, slot->name);
            return NULL;
        }
        Py_INCREF(value);
        return value;
    }
    return PyObject_GetAttr(obj, slot->name);
}

/* An inline cache for one attribute read on objects of another module's type (aiohttp's
 * messages, lwsobs' Wsi and Transaction): what CPython's own LOAD_ATTR specialisation does.
 * When the type uses generic attribute lookup and `name` resolves on it to a member slot or a
 * getset descriptor (both data descriptors, so no instance dict can shadow them), the reader
 * is remembered with the type's version tag, which CPython changes whenever the type or one of
 * its bases is modified; any mismatch goes back to PyObject_GetAttr. The type pointer is not
 * owned: it is only compared, and a new type never gets an old version tag. */
typedef struct {
    PyTypeObject *type;
    unsigned int tag; /* 0: empty */
    enum { A_NONE, A_MEMBER, A_GETSET } kind;
    Py_ssize_t offset;
    getter get;
    void *closure;
} attr_cache_t;

static attr_cache_t c_method, c_path, c_headers, c_txn, c_txn_method;

static void attr_cache_fill(attr_cache_t *c, PyTypeObject *type, PyObject *name) {
    c->tag = 0;
    c->kind = A_NONE;
    if (type->tp_getattro != PyObject_GenericGetAttr)
        return;
    PyObject *descr = _PyType_Lookup(type, name); /* borrowed; assigns a version tag */
    if (descr == NULL || !PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) ||
        type->tp_version_tag == 0)
        return;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if ((member->type != T_OBJECT_EX && member->type != T_OBJECT) || member->offset <= 0 ||
            (member->flags & PY_AUDIT_READ))
            return; /* an audited read must go through PyMember_GetOne */
        /* (T_OBJECT, the C Transaction's fields: an unset one is left to getattr, as None) */
        c->kind = A_MEMBER;
        c->offset = member->offset;
    } else if (Py_IS_TYPE(descr, &PyGetSetDescr_Type)) {
        PyGetSetDef *getset = ((PyGetSetDescrObject *)descr)->d_getset;
        if (getset->get == NULL)
            return;
        c->kind = A_GETSET;
        c->get = getset->get;
        c->closure = getset->closure;
    } else {
        return;
    }
    c->type = type;
    c->tag = type->tp_version_tag;
}

/* obj.<name> (a new reference), through the cache `c`. */
static inline PyObject *cached_getattr(PyObject *obj, PyObject *name, attr_cache_t *c) {
    PyTypeObject *type = Py_TYPE(obj);
    if (type == c->type && c->tag != 0 && type->tp_version_tag == c->tag &&
        PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
        if (c->kind == A_MEMBER) {
            PyObject *value = *(PyObject **)((char *)obj + c->offset);
            if (value != NULL) {
                Py_INCREF(value);
                return value;
            }
        } else if (c->kind == A_GETSET) {
            return c->get(obj, c->closure);
        }
    } else {
        attr_cache_fill(c, type, name);
    }
    return PyObject_GetAttr(obj, name); /* an unset slot: its AttributeError, or None */
}

/* response.status without its Python frame. aiohttp's StreamResponse.status (3.10 .. 3.14) is a
 * property whose getter is `return self._status`: running it costs a frame per request, the
 * attribute read it makes does not. configure_status() hands over that property once it was
 * checked to be just that (aiohttp_server._status_property); after that, a response whose type
 * finds this very property under "status" (checked once per type and version tag, which CPython
 * changes whenever the type or a base is modified), with plain attribute lookup, and whose getter
 * still runs the code it ran then, has its `_status` read instead: the getter's own read, which
 * raises the same AttributeError when it is missing. Anything else reads `status`. (A property's
 * getter is fixed once made, short of calling property.__init__ on it again: not looked for.) */
static PyObject *status_property = NULL; /* StreamResponse.__dict__["status"], or NULL */
static PyObject *status_getter = NULL;   /* its fget, a function */
static PyObject *status_code = NULL;     /* that function's __code__ when it was checked */
static PyTypeObject *status_type = NULL; /* not owned: only compared, like attr_cache_t */
static unsigned int status_tag = 0;

static PyObject *status_of(PyObject *response) {
    PyTypeObject *type = Py_TYPE(response);
    if (status_property != NULL && type->tp_getattro == PyObject_GenericGetAttr) {
        if (type != status_type || type->tp_version_tag != status_tag ||
            !PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG)) {
            status_type = NULL;
            if (_PyType_Lookup(type, n_status) == status_property && /* borrowed; tags it */
                PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) &&
                type->tp_version_tag != 0) {
                status_type = type;
                status_tag = type->tp_version_tag;
            }
        }
        if (type == status_type && PyFunction_GET_CODE(status_getter) == status_code)
            return PyObject_GetAttr(response, n_status_slot);
    }
    return PyObject_GetAttr(response, n_status);
}

/* obj.<slot> as a C integer (the handler's _request_count). */
static int get_count(PyObject *obj, const slot_t *slot, long long *out) {
    PyObject *value = get_slot(obj, slot);
    if (value == NULL)
        return -1;
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    if (PyLong_CheckExact(value) && (Py_SIZE(value) == 0 || Py_SIZE(value) == 1)) {
        *out = Py_SIZE(value) ? ((PyLongObject *)value)->ob_digit[0] : 0; /* below 2**30 */
        Py_DECREF(value);
        return 0;
    }
#endif
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Positional-or-keyword arguments of a METH_FASTCALL|METH_KEYWORDS call, in `names` order. */
static int unpack(const char *func, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                  const char *const *names, Py_ssize_t n, PyObject **out) {
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd positional arguments but %zd were given",
                     func, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%S'", func,
                         key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", func,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", func, names[i]);
            return -1;
        }
    }
    return 0;
}

static int configured(void) {
    if (handler_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lwsobs.sources._fasthooks is not configured");
        return 0;
    }
    return 1;
}

/* -- RequestHook: per-connection state and the request factory wrapper --------------------- */

typedef struct {
    long long first, last; /* the ordinals of the requests one read parsed */
    long long at;          /* when that read happened */
} arrival_t;

#define INLINE_ARRIVALS 4

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *factory; /* aiohttp's request factory, called for every request */
    PyObject *tracker;
    PyObject *bind, *drop; /* tracker.bind and tracker.drop, resolved once per connection */
    int detail;        /* spans on: look up route and traceparent */
    long long dequeued;
    arrival_t *ring;   /* ring[head .. head+len) are pending; inline until it outgrows it */
    Py_ssize_t head, len, cap;
    arrival_t inline_ring[INLINE_ARRIVALS];
} HookObject;

static int push_arrival(HookObject *hook, long long first, long long last, long long at) {
    if (hook->head + hook->len == hook->cap) {
        if (hook->head > 0) {
            memmove(hook->ring, hook->ring + hook->head, (size_t)hook->len * sizeof(arrival_t));
            hook->head = 0;
        } else {
            Py_ssize_t cap = hook->cap * 2;
            arrival_t *ring;
            if (hook->ring == hook->inline_ring) {
                ring = PyMem_New(arrival_t, (size_t)cap);
                if (ring != NULL)
                    memcpy(ring, hook->ring, (size_t)hook->len * sizeof(arrival_t));
            } else {
                ring = hook->ring;
                PyMem_Resize(ring, arrival_t, (size_t)cap);
            }
            if (ring == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            hook->ring = ring;
            hook->cap = cap;
        }
    }
    arrival_t *slot = &hook->ring[hook->head + hook->len++];
    slot->first = first;
    slot->last = last;
    slot->at = at;
    return 0;
}

/* The arrival stamp of request `ordinal` (or `now`), dropping the stamps of earlier requests:
 * the same walk as InstrumentedRequestHandler._lwsobs_make_request. */
static long long arrival_of(HookObject *hook, long long ordinal, long long now) {
    while (hook->len > 0) {
        arrival_t *a = &hook->ring[hook->head];
        if (a->last < ordinal) {
            hook->head++;
            if (--hook->len == 0)
                hook->head = 0;
            continue;
        }
        return a->first <= ordinal ? a->at : now;
    }
    return now;
}

static PyObject *hook_call(PyObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames);

/* False (with an error set) for a hook the garbage collector already cleared. */
static int hook_usable(HookObject *hook) {
    if (hook->factory == NULL || hook->bind == NULL || hook->drop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RequestHook used after it was cleared");
        return 0;
    }
    return 1;
}

static PyObject *hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"factory", "tracker", "detail", NULL};
    PyObject *factory, *tracker;
    int detail;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOp:RequestHook", kwlist, &factory, &tracker,
                                     &detail))
        return NULL;
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "RequestHook: factory must be callable");
        return NULL;
    }
    PyObject *bind = PyObject_GetAttr(tracker, n_bind);
    PyObject *drop = bind == NULL ? NULL : PyObject_GetAttr(tracker, n_drop);
    HookObject *hook = drop == NULL ? NULL : (HookObject *)type->tp_alloc(type, 0);
    if (hook == NULL) {
        Py_XDECREF(bind);
        Py_XDECREF(drop);
        return NULL;
    }
    hook->bind = bind;
    hook->drop = drop;
    hook->vectorcall = hook_call;
    Py_INCREF(factory);
    hook->factory = factory;
    Py_INCREF(tracker);
    hook->tracker = tracker;
    hook->detail = detail;
    hook->dequeued = 0;
    hook->ring = hook->inline_ring;
    hook->head = hook->len = 0;
    hook->cap = INLINE_ARRIVALS;
    return (PyObject *)hook;
}

static int hook_traverse(HookObject *hook, visitproc visit, void *arg) {
    Py_VISIT(hook->factory);
    Py_VISIT(hook->tracker);
    Py_VISIT(hook->bind);
    Py_VISIT(hook->drop);
    return 0;
}

static int hook_clear(HookObject *hook) {
    Py_CLEAR(hook->factory);
    Py_CLEAR(hook->tracker);
    Py_CLEAR(hook->bind);
    Py_CLEAR(hook->drop);
    return 0;
}

static void hook_dealloc(HookObject *hook) {
    PyObject_GC_UnTrack(hook);
    hook_clear(hook);
    if (hook->ring != hook->inline_ring)
        PyMem_Free(hook->ring);
    Py_TYPE(hook)->tp_free((PyObject *)hook);
}

static const char *const FACTORY_ARGS[] = {"message", "payload", "protocol", "writer", "task"};

/* hook(message, payload, protocol, writer, task): aiohttp takes a request off its queue, the
 * transaction starts (Tracker.bind), then aiohttp's own factory builds the request. */
static PyObject *hook_call(PyObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames) {
    HookObject *hook = (HookObject *)self;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *a[5];
    if (kwnames == NULL && nargs == 5) {
        memcpy(a, args, sizeof(a));
    } else if (unpack("RequestHook", args, nargs, kwnames, FACTORY_ARGS, 5, a) < 0) {
        return NULL;
    }
    PyObject *message = a[0], *protocol = a[2];
    if (!configured() || !hook_usable(hook))
        return NULL;
    long long now_ll;
    if (clock_ns(&now_ll) < 0)
        return NULL;
    PyObject *now = PyLong_FromLongLong(now_ll);
    if (now == NULL)
        return NULL;
    long long ordinal = ++hook->dequeued;
    long long arrived_ll = arrival_of(hook, ordinal, now_ll);
    PyObject *arrived;
    if (arrived_ll == now_ll) {
        Py_INCREF(now);
        arrived = now;
    } else if ((arrived = PyLong_FromLongLong(arrived_ll)) == NULL) {
        Py_DECREF(now);
        return NULL;
    }
    PyObject *wsi = get_slot(protocol, &s_wsi);
    if (wsi == NULL)
        goto fail;
    if (wsi != Py_None) {
        PyObject *bind = hook->bind;
        PyObject *result;
        Py_INCREF(bind); /* hook_clear() may run while it does */
        if (message == error_message) {
            PyObject *call[4] = {NULL, wsi, now, arrived};
            result = PyObject_Vectorcall(bind, call + 1, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        } else {
            PyObject *method = NULL, *path = NULL, *traceparent = NULL;
            result = NULL;
            method = cached_getattr(message, n_method, &c_method);
            if (method != NULL)
                path = cached_getattr(message, n_path, &c_path);
            if (path != NULL) {
                if (hook->detail) {
                    PyObject *headers = cached_getattr(message, n_headers, &c_headers);
                    if (headers != NULL) {
                        PyObject *get[2] = {headers, n_traceparent};
                        traceparent = PyObject_VectorcallMethod(
                            n_get, get, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                        Py_DECREF(headers);
                    }
                } else {
                    Py_INCREF(Py_None);
                    traceparent = Py_None;
                }
            }
            if (traceparent != NULL) {
                PyObject *call[7] = {NULL, wsi, now, arrived, method, path, traceparent};
                result = PyObject_Vectorcall(bind, call + 1, 6 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                             NULL);
            }
            Py_XDECREF(method);
            Py_XDECREF(path);
            Py_XDECREF(traceparent);
        }
        Py_DECREF(bind);
        if (result == NULL) {
            Py_DECREF(wsi);
            goto fail;
        }
        Py_DECREF(result);
    }
    Py_DECREF(wsi);
    Py_DECREF(now);
    Py_DECREF(arrived);
    PyObject *factory = hook->factory;
    Py_INCREF(factory);
    PyObject *request = kwnames == NULL /* as the pure path does: positionally, always */
                            ? PyObject_Vectorcall(factory, args, nargsf, NULL)
                            : PyObject_Vectorcall(factory, a, 5, NULL);
    Py_DECREF(factory);
    return request;
fail:
    Py_DECREF(now);
    Py_DECREF(arrived);
    return NULL;
}

static PyObject *hook_get_arrivals(HookObject *hook, void *closure) {
    (void)closure;
    PyObject *out = PyTuple_New(hook->len);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < hook->len; i++) {
        arrival_t *a = &hook->ring[hook->head + i];
        PyObject *item = Py_BuildValue("(LLL)", a->first, a->last, a->at);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *hook_get_dequeued(HookObject *hook, void *closure) {
    (void)closure;
    return PyLong_FromLongLong(hook->dequeued);
}

static PyObject *hook_get_detail(HookObject *hook, void *closure) {
    (void)closure;
    return PyBool_FromLong(hook->detail);
}

static PyGetSetDef hook_getset[] = {
    {"arrivals", (getter)hook_get_arrivals, NULL,
     "(first ordinal, last ordinal, arrival ns) per read that parsed requests not yet taken",
     NULL},
    {"dequeued", (getter)hook_get_dequeued, NULL, "requests taken off the queue so far", NULL},
    {"detail", (getter)hook_get_detail, NULL, "whether route and traceparent are looked up",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef hook_members[] = {
    {"factory", T_OBJECT, offsetof(HookObject, factory), READONLY, "aiohttp's request factory"},
    {"tracker", T_OBJECT, offsetof(HookObject, tracker), READONLY, "the Tracker it calls"},
    {"bind", T_OBJECT, offsetof(HookObject, bind), READONLY, "tracker.bind, as resolved"},
    {"drop", T_OBJECT, offsetof(HookObject, drop), READONLY, "tracker.drop, as resolved"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RequestHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lwsobs.sources._fasthooks.RequestHook",
    .tp_doc = "RequestHook(factory, tracker, detail): one connection's request factory wrapper "
              "and pipelining state; tracker.bind and tracker.drop are looked up here, once.",
    .tp_basicsize = sizeof(HookObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = hook_new,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(HookObject, vectorcall),
    .tp_getset = hook_getset,
    .tp_members = hook_members,
};

/* -- the handler's data_received and log_access ------------------------------------------------ */

static PyObject *call_base(PyObject *base, PyObject *self, PyObject *const *args, Py_ssize_t n) {
    PyObject *stack[5];
    stack[0] = NULL; /* PY_VECTORCALL_ARGUMENTS_OFFSET: the callee may use it */
    stack[1] = self;
    for (Py_ssize_t i = 0; i < n; i++)
        stack[2 + i] = args[i];
    Py_INCREF(base); /* a reconfigure while it runs must not free it */
    PyObject *result =
        PyObject_Vectorcall(base, stack + 1, (size_t)(n + 1) | PY_VECTORCALL_ARGUMENTS_OFFSET,
                            NULL);
    Py_DECREF(base);
    return result;
}

/* The handler's RequestHook, checked (a new reference). */
static HookObject *state_of(PyObject *self) {
    PyObject *state = get_slot(self, &s_state);
    if (state != NULL && !Py_IS_TYPE(state, &RequestHookType)) {
        PyErr_Format(PyExc_TypeError, "%.100s._lwsobs_state is not a RequestHook",
                     Py_TYPE(self)->tp_name);
        Py_CLEAR(state);
    }
    return (HookObject *)state;
}

static const char *const DATA_ARGS[] = {"data"};

/* data_received(data): aiohttp parses the bytes; a read that parsed requests is stamped. */
static PyObject *hooks_data_received(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                     PyObject *kwnames) {
    PyObject *a[1];
    if (kwnames == NULL && nargs == 1)
        a[0] = args[0];
    else if (unpack("data_received", args, nargs, kwnames, DATA_ARGS, 1, a) < 0)
        return NULL;
    if (!configured())
        return NULL;
    long long before, after;
    if (get_count(self, &s_request_count, &before) < 0)
        return NULL;
    PyObject *result = call_base(base_data_received, self, a, 1);
    if (result == NULL)
        return NULL;
    if (get_count(self, &s_request_count, &after) < 0) {
        Py_DECREF(result);
        return NULL;
    }
    if (after != before) {
        HookObject *hook = state_of(self);
        long long at;
        if (hook == NULL || clock_ns(&at) < 0 || push_arrival(hook, before + 1, after, at) < 0) {
            Py_XDECREF(hook);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(hook);
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* str(request._match_info.route.resource.canonical), None on an AttributeError: _route_of. */
static PyObject *route_of(PyObject *request) {
    PyObject *names[4] = {n_match_info, n_route, n_resource, n_canonical};
    PyObject *obj = request;
    Py_INCREF(obj);
    for (int i = 0; i < 4 && obj != NULL; i++) {
        PyObject *next = PyObject_GetAttr(obj, names[i]);
        Py_DECREF(obj);
        obj = next;
    }
    if (obj != NULL) {
        PyObject *text = PyObject_Str(obj);
        Py_DECREF(obj);
        obj = text;
    }
    if (obj == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        Py_INCREF(Py_None);
        obj = Py_None;
    }
    return obj;
}

/* Whether aiohttp's log_access would log: getattr(self, "_logging_enabled", True). */
static int logging_enabled(PyObject *self) {
    if (logging_flag_absent)
        return 1;
    PyObject *flag = get_slot(self, &s_logging_enabled);
    if (flag == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    int truth = flag == Py_True ? 1 : flag == Py_False ? 0 : PyObject_IsTrue(flag);
    Py_DECREF(flag);
    return truth;
}

static const char *const LOG_ARGS[] = {"request", "response", "time"};

/* log_access(request, response, time): called for every request after its response was
 * written (parser 400s included): aiohttp's access log, then the transaction ends. */
static PyObject *hooks_log_access(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    PyObject *a[3];
    if (kwnames == NULL && nargs == 3)
        memcpy(a, args, sizeof(a));
    else if (unpack("log_access", args, nargs, kwnames, LOG_ARGS, 3, a) < 0)
        return NULL;
    if (!configured())
        return NULL;
    int enabled = logging_enabled(self);
    if (enabled < 0)
        return NULL;
    if (enabled) {
        PyObject *logged = call_base(base_log_access, self, a, 3);
        if (logged == NULL)
            return NULL;
        Py_DECREF(logged);
    }
    PyObject *wsi = get_slot(self, &s_wsi);
    if (wsi == NULL)
        return NULL;
    if (wsi == Py_None) {
        Py_DECREF(wsi);
        Py_RETURN_NONE;
    }
    PyObject *txn = cached_getattr(wsi, n_txn, &c_txn);
    if (txn == NULL || txn == Py_None) {
        Py_DECREF(wsi);
        if (txn == NULL)
            return NULL;
        Py_DECREF(txn);
        Py_RETURN_NONE;
    }
    HookObject *hook = state_of(self);
    PyObject *now = NULL, *status = NULL, *route = NULL, *method = NULL, *result = NULL;
    long long now_ll;
    if (hook == NULL || !hook_usable(hook) || clock_ns(&now_ll) < 0 ||
        (now = PyLong_FromLongLong(now_ll)) == NULL)
        goto done;
    if ((status = status_of(a[1])) == NULL)
        goto done;
    if (hook->detail) {
        route = route_of(a[0]);
    } else {
        Py_INCREF(Py_None);
        route = Py_None;
    }
    if (route == NULL || (method = cached_getattr(txn, n_method, &c_txn_method)) == NULL)
        goto done;
    PyObject *drop = hook->drop;
    PyObject *call[6] = {NULL, wsi, now, status, route,
                         method != Py_None ? Py_None : invalid_request};
    Py_INCREF(drop);
    result = PyObject_Vectorcall(drop, call + 1, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(drop);
done:
    Py_DECREF(wsi);
    Py_DECREF(txn);
    Py_XDECREF(hook);
    Py_XDECREF(now);
    Py_XDECREF(status);
    Py_XDECREF(route);
    Py_XDECREF(method);
    if (result == NULL)
        return NULL;
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* Made into method descriptors of the configured handler type itself (not of a base it derives
 * from): CPython specialises a call of a method descriptor only when `self` is exactly of the
 * descriptor's type, so a mixin's methods would take the slow generic call every time. */
static PyMethodDef hooks_methods[] = {
    {"data_received", (PyCFunction)(void (*)(void))hooks_data_received,
     METH_FASTCALL | METH_KEYWORDS,
     "aiohttp's data_received, then the arrival stamp of the requests this read parsed."},
    {"log_access", (PyCFunction)(void (*)(void))hooks_log_access, METH_FASTCALL | METH_KEYWORDS,
     "aiohttp's log_access when logging is on, then Tracker.drop for the open transaction."},
    {NULL, NULL, 0, NULL},
};

/* -- module functions ---------------------------------------------------------------------- */

/* Resolve `name` on `type` to a T_OBJECT_EX member slot: its offset, 0 when the attribute is
 * something else (then getattr is used), -1 when the type has no such attribute at all. */
static Py_ssize_t slot_offset(PyTypeObject *type, PyObject *name) {
    PyObject *descr = PyObject_GetAttr((PyObject *)type, name);
    if (descr == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return -2;
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = 0;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & (READONLY | PY_AUDIT_READ)) &&
            PyType_IsSubtype(type, PyDescr_TYPE(descr)) && member->offset > 0)
            offset = member->offset;
    }
    Py_DECREF(descr);
    return offset;
}

static int set_slot(PyTypeObject *type, slot_t *slot, PyObject *name, int required) {
    Py_ssize_t offset = slot_offset(type, name);
    if (offset == -2)
        return -1;
    if (offset == -1 && required) {
        PyErr_Format(PyExc_TypeError, "%.100s has no attribute '%U'", type->tp_name, name);
        return -1;
    }
    slot->name = name;
    slot->offset = offset < 0 ? 0 : offset;
    return 0;
}

static void replace(PyObject **where, PyObject *value) {
    PyObject *old = *where;
    Py_XINCREF(value);
    *where = value;
    Py_XDECREF(old);
}

static PyObject *fasthooks_configure(PyObject *module, PyObject *args) {
    (void)module;
    PyObject *type, *anchor, *error, *base_dr, *base_la, *clock;
    if (!PyArg_ParseTuple(args, "O!O!OOOO:configure", &PyType_Type, &type, &PyLong_Type,
                          &anchor, &error, &base_dr, &base_la, &clock))
        return NULL;
    PyTypeObject *handler = (PyTypeObject *)type;
    if (!PyCallable_Check(base_dr) || !PyCallable_Check(base_la) ||
        (clock != Py_None && !PyCallable_Check(clock))) {
        PyErr_SetString(PyExc_TypeError, "configure: base functions and clock must be callable");
        return NULL;
    }
    long long anchor_ll = PyLong_AsLongLong(anchor);
    if (anchor_ll == -1 && PyErr_Occurred())
        return NULL;
    slot_t request_count, logging, wsi, state;
    if (set_slot(handler, &request_count, n_request_count, 1) < 0 ||
        set_slot(handler, &wsi, n_wsi, 1) < 0 || set_slot(handler, &state, n_state, 1) < 0)
        return NULL;
    Py_ssize_t logging_offset = slot_offset(handler, n_logging_enabled);
    if (logging_offset == -2)
        return NULL;
    logging.name = n_logging_enabled;
    logging.offset = logging_offset < 0 ? 0 : logging_offset;
    /* absent from the type and no instance dict to hold it: getattr's default, always */
    logging_flag_absent = logging_offset == -1 && handler->tp_dictoffset == 0;
    s_request_count = request_count;
    s_logging_enabled = logging;
    s_wsi = wsi;
    s_state = state;
    replace((PyObject **)&handler_type, type);
    replace(&base_data_received, base_dr);
    replace(&base_log_access, base_la);
    replace(&error_message, error);
    replace(&anchor_obj, anchor);
    replace(&test_clock, clock == Py_None ? NULL : clock);
    anchor_ns = anchor_ll;
    PyObject *methods = PyDict_New();
    for (PyMethodDef *def = hooks_methods; methods != NULL && def->ml_name != NULL; def++) {
        PyObject *descr = PyDescr_NewMethod(handler, def);
        if (descr == NULL || PyDict_SetItemString(methods, def->ml_name, descr) < 0)
            Py_CLEAR(methods);
        Py_XDECREF(descr);
    }
    return methods;
}

static PyObject *fasthooks_configure_status(PyObject *module, PyObject *prop) {
    (void)module;
    PyObject *getter = NULL;
    if (prop != Py_None) {
        if (!PyObject_TypeCheck(prop, &PyProperty_Type)) {
            PyErr_SetString(PyExc_TypeError, "configure_status: a property or None");
            return NULL;
        }
        getter = PyObject_GetAttr(prop, n_fget);
        if (getter == NULL)
            return NULL;
        if (!PyFunction_Check(getter)) {
            Py_DECREF(getter);
            PyErr_SetString(PyExc_TypeError, "configure_status: the getter is no function");
            return NULL;
        }
    }
    replace(&status_property, prop == Py_None ? NULL : prop);
    replace(&status_code, getter == NULL ? NULL : PyFunction_GET_CODE(getter));
    Py_XSETREF(status_getter, getter);
    status_type = NULL;
    Py_RETURN_NONE;
}

static PyObject *fasthooks_route_of(PyObject *module, PyObject *request) {
    (void)module;
    return route_of(request);
}

static PyObject *fasthooks_offsets(PyObject *module, PyObject *noargs) {
    (void)module;
    (void)noargs;
    if (!configured())
        return NULL;
    return Py_BuildValue("{snsnsnsn}", "_request_count", s_request_count.offset,
                         "_logging_enabled", s_logging_enabled.offset, "_lwsobs_wsi",
                         s_wsi.offset, "_lwsobs_state", s_state.offset);
}

static PyMethodDef fasthooks_methods[] = {
    {"configure", fasthooks_configure, METH_VARARGS,
     "configure(handler_type, anchor_ns, error_message, base_data_received, base_log_access, "
     "clock) -> dict: the handler class whose slots are read by offset, the clock anchor, "
     "web_protocol.ERROR, RequestHandler's own methods, and a monotonic_ns replacement for tests "
     "(None: CLOCK_MONOTONIC). Returns data_received and log_access as method descriptors of "
     "handler_type, for the caller to set on it."},
    {"configure_status", fasthooks_configure_status, METH_O,
     "configure_status(prop): StreamResponse.status, a property whose getter returns "
     "self._status, so that log_access reads `_status` itself for responses that use it; None: "
     "always read `status`."},
    {"route_of", fasthooks_route_of, METH_O,
     "route_of(request) -> str | None: the matched resource's canonical form, as _route_of."},
    {"offsets", fasthooks_offsets, METH_NOARGS,
     "offsets() -> dict: the slot offsets in use (0: read by getattr); for tests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fasthooks_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lwsobs.sources._fasthooks",
    .m_doc = "C fast path for the aiohttp server's per-request hooks (aiohttp_server.py).",
    .m_size = -1,
    .m_methods = fasthooks_methods,
};

static int intern(PyObject **where, const char *text) {
    *where = PyUnicode_InternFromString(text);
    return *where == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__fasthooks(void) {
    if (intern(&n_request_count, "_request_count") < 0 ||
        intern(&n_logging_enabled, "_logging_enabled") < 0 ||
        intern(&n_wsi, "_lwsobs_wsi") < 0 || intern(&n_state, "_lwsobs_state") < 0 ||
        intern(&n_bind, "bind") < 0 ||
        intern(&n_drop, "drop") < 0 || intern(&n_txn, "txn") < 0 ||
        intern(&n_method, "method") < 0 || intern(&n_path, "path") < 0 ||
        intern(&n_headers, "headers") < 0 || intern(&n_get, "get") < 0 ||
        intern(&n_traceparent, "traceparent") < 0 || intern(&n_status, "status") < 0 ||
        intern(&n_match_info, "_match_info") < 0 || intern(&n_route, "route") < 0 ||
        intern(&n_resource, "resource") < 0 || intern(&n_canonical, "canonical") < 0 ||
        intern(&invalid_request, "invalid_request") < 0 ||
        intern(&n_status_slot, "_status") < 0 || intern(&n_fget, "fget") < 0)
        return NULL;
    if (PyType_Ready(&RequestHookType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fasthooks_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&RequestHookType);
    if (PyModule_AddObject(module, "RequestHook", (PyObject *)&RequestHookType) < 0) {
        Py_DECREF(&RequestHookType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
