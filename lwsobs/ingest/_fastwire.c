/*
 * A fast path for wire-v1 line parsing (lwsobs/ingest/wire.py).
 *
 * Why: json decoding plus the per-field validators cost ~8.6 us of the ~12 us the ingest pipeline
 * spends per line. This module accepts only the common, unambiguous shape of a line -- one flat
 * JSON object of known wire-v1 fields, each at most once, with plain integers, true/false, null and
 * strings -- and builds the very Event that wire.py's pure path would build. For anything else it
 * returns None, and wire.py judges the line in Python, so every rejection and odd case keeps its
 * exact pure-Python behaviour. It never raises on input.
 *
 * The field table is not hard-coded: wire.configure() passes the Event class and, for each Event
 * field in order, the kind of its validator (version, src, seq, int, hex, text, bool) and whether it
 * is required, so the two cannot drift apart silently.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <stdint.h>
#include <string.h>

#define MAX_FIELDS 64     /* a bit per field in the `seen` mask */
#define MAX_NAME 16       /* longest field name accepted by configure() */
#define MAX_LINE_CAP 65536 /* the unescape buffer lives on the stack */

enum kind { K_VERSION, K_SRC, K_SEQ, K_INT, K_HEX, K_TEXT, K_BOOL };

static const char *const KIND_NAMES[] = {"version", "src", "seq", "int", "hex", "text", "bool"};

typedef struct {
    char name[MAX_NAME];
    Py_ssize_t len;
    enum kind kind;
    int required;
} field_t;

/* configured state; all access happens with the GIL held and no Python code runs during a parse */
static PyTypeObject *event_type = NULL;
static Py_ssize_t slot_offset[MAX_FIELDS]; /* where each field's __slots__ entry lives */
static field_t fields[MAX_FIELDS];
static Py_ssize_t n_fields = 0;
static uint64_t required_mask = 0; /* a bit per required field, as in parse_object's `seen` */
static Py_ssize_t max_line = 0;
static Py_ssize_t max_text = 0;
static Py_ssize_t max_hex = 0;
static long long wire_version = 0;

/* -- tokens --------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} cursor_t;

static inline void skip_ws(cursor_t *c) {
    /* json's whitespace: space, tab, newline, carriage return (nothing else) */
    while (c->p < c->end && *c->p <= ' ' &&
           (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

/* Length of the strict UTF-8 sequence at p (2..4), or 0 when it is not one (Python's rules:
 * no overlong forms, no surrogates, nothing above U+10FFFF, nothing truncated). */
static inline int utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned char b0 = p[0];
    Py_ssize_t left = end - p;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        return (left >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    }
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        if (left < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (b0 == 0xE0 && p[1] < 0xA0)
            return 0; /* overlong */
        if (b0 == 0xED && p[1] > 0x9F)
            return 0; /* surrogate */
        return 3;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        if (left < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (b0 == 0xF0 && p[1] < 0x90)
            return 0; /* overlong */
        if (b0 == 0xF4 && p[1] > 0x8F)
            return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

static inline int hex_value(unsigned char ch) {
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

typedef struct {
    const unsigned char *data; /* the decoded bytes: into the line, or into the scratch buffer */
    Py_ssize_t len;
    int ascii;
} string_t;

/* Bytes a JSON string holds as they are: printable ASCII but the quote and the backslash. */
static const unsigned char plain_byte[256] = {
    ['\x20'] = 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* 0x22 is the quote */
    ['\x30'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['\x40'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['\x50'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, /* 0x5c is the backslash */
    ['\x60'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['\x70'] = 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

/* A JSON string; c->p is just past the opening quote. The decoded UTF-8 lands in `out` (either the
 * line itself when it holds no escape, or `scratch`). Returns 0 on anything not certain. */
static int read_string(cursor_t *c, unsigned char *scratch, string_t *out) {
    const unsigned char *start = c->p;
    const unsigned char *p = c->p;
    int escapes = 0;
    int ascii = 1;
    while (p < c->end) {
        if (plain_byte[*p]) { /* the common byte, one test */
            p++;
            continue;
        }
        unsigned char ch = *p;
        if (ch == '"')
            break;
        if (ch < 0x20)
            return 0; /* json.loads (strict) refuses raw control characters */
        if (ch == '\\') {
            if (p + 1 >= c->end)
                return 0;
            escapes = 1;
            p += 2; /* the escaped character is checked in the second pass */
            continue;
        }
        if (ch >= 0x80) {
            int n = utf8_seq(p, c->end);
            if (n == 0)
                return 0;
            ascii = 0;
            p += n;
            continue;
        }
        p++;
    }
    if (p >= c->end)
        return 0; /* unterminated */
    c->p = p + 1;
    if (!escapes) {
        out->data = start;
        out->len = p - start;
        out->ascii = ascii;
        return 1;
    }
    /* second pass: decode the escapes json.loads knows, except surrogates (\ud800-\udfff) */
    unsigned char *w = scratch;
    const unsigned char *q = start;
    while (q < p) {
        unsigned char ch = *q;
        if (ch != '\\') {
            *w++ = ch;
            q++;
            continue;
        }
        if (q + 1 >= p)
            return 0;
        switch (q[1]) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            if (q + 6 > p)
                return 0;
            unsigned int cp = 0;
            for (int i = 2; i < 6; i++) {
                int h = hex_value(q[i]);
                if (h < 0)
                    return 0;
                cp = (cp << 4) | (unsigned int)h;
            }
            if (cp >= 0xD800 && cp <= 0xDFFF)
                return 0; /* pairs and lone surrogates: left to the pure path */
            if (cp < 0x80) {
                *w++ = (unsigned char)cp;
            } else if (cp < 0x800) {
                *w++ = (unsigned char)(0xC0 | (cp >> 6));
                *w++ = (unsigned char)(0x80 | (cp & 0x3F));
                ascii = 0;
            } else {
                *w++ = (unsigned char)(0xE0 | (cp >> 12));
                *w++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                *w++ = (unsigned char)(0x80 | (cp & 0x3F));
                ascii = 0;
            }
            q += 6;
            continue;
        }
        default:
            return 0;
        }
        q += 2;
    }
    out->data = scratch;
    out->len = w - scratch;
    out->ascii = ascii;
    return 1;
}

/* A JSON integer that fits int64: optional '-', no leading zeros, no fraction, no exponent. */
static int read_int(cursor_t *c, long long *value) {
    const unsigned char *p = c->p;
    int negative = 0;
    if (p < c->end && *p == '-') {
        negative = 1;
        p++;
    }
    if (p >= c->end || *p < '0' || *p > '9')
        return 0;
    uint64_t u = 0;
    if (*p == '0') {
        p++; /* a digit after it makes the line invalid JSON: the caller finds no delimiter */
    } else {
        int digits = 0;
        while (p < c->end && *p >= '0' && *p <= '9') {
            if (++digits > 19)
                return 0; /* 19 digits fit in uint64; longer is out of int64 range anyway */
            u = u * 10 + (uint64_t)(*p - '0');
            p++;
        }
    }
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return 0; /* a float */
    if (negative) {
        if (u > (uint64_t)INT64_MAX + 1)
            return 0;
        *value = (u == (uint64_t)INT64_MAX + 1) ? INT64_MIN : -(long long)u;
    } else {
        if (u > (uint64_t)INT64_MAX)
            return 0;
        *value = (long long)u;
    }
    c->p = p;
    return 1;
}

static int read_literal(cursor_t *c, const char *word, Py_ssize_t len) {
    if (c->end - c->p < len || memcmp(c->p, word, (size_t)len) != 0)
        return 0;
    c->p += len;
    return 1;
}

/* -- values -------------------------------------------------------------------------------- */

static PyObject *ascii_str(const unsigned char *data, Py_ssize_t len) {
    PyObject *s = PyUnicode_New(len, 127);
    if (s != NULL)
        memcpy(PyUnicode_1BYTE_DATA(s), data, (size_t)len);
    return s;
}

/* The last ASCII string made for each field. A producer repeats most values line after line
 * (src, ctx, wsi, vh, pcol, method...): handing out the same str again saves an allocation, and
 * the pipeline's comparisons of equal values become identity checks. Strings are immutable, so
 * sharing one is invisible. */
static PyObject *last_str[MAX_FIELDS];

static PyObject *field_str(Py_ssize_t field, const unsigned char *data, Py_ssize_t len) {
    PyObject *last = last_str[field];
    if (last != NULL && PyUnicode_GET_LENGTH(last) == len &&
        memcmp(PyUnicode_1BYTE_DATA(last), data, (size_t)len) == 0)
        return Py_NewRef(last);
    PyObject *s = ascii_str(data, len);
    if (s != NULL)
        Py_XSETREF(last_str[field], Py_NewRef(s));
    return s;
}

/* wire._text: cut at max_text bytes of UTF-8, dropping a character cut in half */
static PyObject *text_value(Py_ssize_t field, const string_t *s) {
    Py_ssize_t n = s->len;
    if (n > max_text) {
        n = max_text;
        while (n > 0 && (s->data[n] & 0xC0) == 0x80)
            n--;
    }
    if (s->ascii)
        return field_str(field, s->data, n);
    return PyUnicode_DecodeUTF8((const char *)s->data, n, "strict");
}

/* wire._hex: optional 0x/0X, 1..max_hex hex digits; lowercase, no leading zeros ("0" for zero) */
static PyObject *hex_value_str(Py_ssize_t field, const string_t *s) {
    const unsigned char *d = s->data;
    Py_ssize_t n = s->len;
    if (n >= 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) {
        d += 2;
        n -= 2;
    }
    if (n < 1 || n > max_hex || n > 64)
        return NULL;
    unsigned char buf[64];
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char ch = d[i];
        if (hex_value(ch) < 0)
            return NULL;
        buf[i] = (ch >= 'A' && ch <= 'F') ? (unsigned char)(ch - 'A' + 'a') : ch;
    }
    Py_ssize_t first = 0;
    while (first < n - 1 && buf[first] == '0')
        first++;
    return field_str(field, buf + first, n - first);
}

/* wire._src: [A-Za-z0-9._:@-]{1,64} */
static int src_ok(const string_t *s) {
    if (s->len < 1 || s->len > 64)
        return 0;
    for (Py_ssize_t i = 0; i < s->len; i++) {
        unsigned char ch = s->data[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '@' || ch == '-'))
            return 0;
    }
    return 1;
}

/* The fields by the first byte of their name: a key is compared with a handful, not all. */
static unsigned char by_first_count[256];
static unsigned char by_first[256][MAX_FIELDS];

static Py_ssize_t find_field(const unsigned char *name, Py_ssize_t len) {
    if (len < 1)
        return -1;
    const unsigned char *candidates = by_first[name[0]];
    for (int j = 0; j < by_first_count[name[0]]; j++) {
        int i = candidates[j];
        if (fields[i].len == len && memcmp(fields[i].name, name, (size_t)len) == 0)
            return i;
    }
    return -1;
}

/* One value for field f; *out gets a new reference, or stays NULL for null (absent).
 * Returns 0 when the value is not certainly what the pure path accepts for this field. */
static int read_value(cursor_t *c, const field_t *f, unsigned char *scratch, PyObject **out) {
    if (c->p >= c->end)
        return 0;
    unsigned char ch = *c->p;
    if (ch == 'n') {
        /* null is absent: fine for an optional field, a rejection for v and the required ones */
        return read_literal(c, "null", 4) && !f->required;
    }
    switch (f->kind) {
    case K_VERSION:
    case K_SEQ:
    case K_INT: {
        long long value;
        if (!(ch == '-' || (ch >= '0' && ch <= '9')) || !read_int(c, &value))
            return 0;
        if (f->kind == K_VERSION && value != wire_version)
            return 0;
        if (f->kind == K_SEQ && value < 0)
            return 0;
        *out = PyLong_FromLongLong(value);
        return *out != NULL;
    }
    case K_BOOL:
        if (ch == 't' && read_literal(c, "true", 4)) {
            *out = Py_NewRef(Py_True);
            return 1;
        }
        if (ch == 'f' && read_literal(c, "false", 5)) {
            *out = Py_NewRef(Py_False);
            return 1;
        }
        return 0;
    case K_SRC:
    case K_HEX:
    case K_TEXT: {
        string_t s;
        if (ch != '"')
            return 0;
        c->p++;
        if (!read_string(c, scratch, &s))
            return 0;
        if (f->kind == K_SRC) {
            *out = src_ok(&s) ? field_str(f - fields, s.data, s.len) : NULL;
        } else if (f->kind == K_HEX) {
            *out = s.ascii ? hex_value_str(f - fields, &s) : NULL;
        } else {
            *out = text_value(f - fields, &s);
        }
        return *out != NULL;
    }
    }
    return 0;
}

/* -- parse -------------------------------------------------------------------------------- */

static PyObject *parse_object(cursor_t *c, PyObject **values, unsigned char *scratch) {
    uint64_t seen = 0;
    skip_ws(c);
    if (c->p >= c->end || *c->p != '{')
        return NULL;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}')
        return NULL; /* {} lacks v */
    for (;;) {
        string_t key;
        if (c->p >= c->end || *c->p != '"')
            return NULL;
        c->p++;
        if (!read_string(c, scratch, &key) || key.data == scratch)
            return NULL; /* escaped keys: left to the pure path */
        Py_ssize_t i = find_field(key.data, key.len);
        if (i < 0 || (seen & ((uint64_t)1 << i)))
            return NULL; /* unknown or repeated key */
        seen |= (uint64_t)1 << i;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':')
            return NULL;
        c->p++;
        skip_ws(c);
        if (!read_value(c, &fields[i], scratch, &values[i]))
            return NULL;
        skip_ws(c);
        if (c->p >= c->end)
            return NULL;
        if (*c->p == '}') {
            c->p++;
            break;
        }
        if (*c->p != ',')
            return NULL;
        c->p++;
        skip_ws(c);
    }
    skip_ws(c);
    if (c->p != c->end)
        return NULL; /* extra data */
    if ((seen & required_mask) != required_mask)
        return NULL; /* missing (a required null never gets here): the pure path says why */
    /* what the dataclass __init__ does, without running it: allocate, then fill every slot */
    PyObject *event = event_type->tp_alloc(event_type, 0);
    if (event == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n_fields; i++) {
        *(PyObject **)((char *)event + slot_offset[i]) =
            values[i] != NULL ? values[i] : Py_NewRef(Py_None);
        values[i] = NULL; /* the event owns it now */
    }
    return event;
}

/* The Event of one line, or NULL (no exception set) when unsure: the pure path decides. */
static PyObject *parse_span(const unsigned char *data, Py_ssize_t len) {
    if (len > max_line)
        return NULL;
    unsigned char scratch[MAX_LINE_CAP];
    PyObject *values[MAX_FIELDS] = {NULL};
    cursor_t c = {data, data + len};
    PyObject *event = parse_object(&c, values, scratch);
    if (event == NULL) { /* an Event took every value; a doubt leaves some behind */
        for (Py_ssize_t i = 0; i < n_fields; i++)
            Py_XDECREF(values[i]);
        PyErr_Clear(); /* an allocation failure is a doubt too: the pure path decides */
    }
    return event;
}

static PyObject *fastwire_parse(PyObject *Py_UNUSED(module), PyObject *line) {
    if (event_type == NULL || !PyBytes_CheckExact(line))
        Py_RETURN_NONE;
    PyObject *event =
        parse_span((const unsigned char *)PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line));
    if (event == NULL)
        Py_RETURN_NONE;
    return event;
}

/* parse_lines(data) -> (items, doubtful): data split on b"\n", empty lines skipped, each line
   as its Event, or as the line's bytes when unsure (`doubtful` counts those). */
static PyObject *fastwire_parse_lines(PyObject *Py_UNUSED(module), PyObject *data) {
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "parse_lines() takes bytes");
        return NULL;
    }
    PyObject *items = PyList_New(0);
    if (items == NULL)
        return NULL;
    Py_ssize_t doubtful = 0;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    const unsigned char *end = p + PyBytes_GET_SIZE(data);
    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *stop = nl != NULL ? nl : end;
        Py_ssize_t len = stop - p;
        if (len > 0) {
            PyObject *item = event_type != NULL ? parse_span(p, len) : NULL;
            if (item == NULL) {
                item = PyBytes_FromStringAndSize((const char *)p, len);
                doubtful++;
            }
            if (item == NULL || PyList_Append(items, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(items);
                return NULL;
            }
            Py_DECREF(item);
        }
        p = stop + 1;
    }
    return Py_BuildValue("(Nn)", items, doubtful);
}

/* -- configure ------------------------------------------------------------------------------ */

static PyObject *fastwire_configure(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *cls, *spec;
    Py_ssize_t line_limit, text_limit, hex_limit;
    long long version;
    if (!PyArg_ParseTuple(args, "O!OnnnL", &PyType_Type, &cls, &spec, &line_limit, &text_limit,
                          &hex_limit, &version))
        return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    if (type->tp_itemsize != 0 || type->tp_dictoffset != 0 || type->tp_weaklistoffset != 0 ||
        type->tp_alloc != PyType_GenericAlloc) {
        PyErr_SetString(PyExc_TypeError, "event class must be a plain __slots__ class");
        return NULL;
    }
    if (line_limit < 0 || line_limit > MAX_LINE_CAP || text_limit < 0 || hex_limit < 1 ||
        hex_limit > 64) {
        PyErr_SetString(PyExc_ValueError, "limits out of range");
        return NULL;
    }
    PyObject *items = PySequence_Fast(spec, "spec must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    field_t table[MAX_FIELDS];
    Py_ssize_t offsets[MAX_FIELDS];
    if (n < 1 || n > MAX_FIELDS) {
        Py_DECREF(items);
        PyErr_SetString(PyExc_ValueError, "1..64 fields");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name, *kind;
        Py_ssize_t name_len;
        int required;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "s#sp", &name, &name_len, &kind,
                              &required)) {
            Py_DECREF(items);
            return NULL;
        }
        if (name_len < 1 || name_len >= MAX_NAME) {
            Py_DECREF(items);
            PyErr_SetString(PyExc_ValueError, "field name too long");
            return NULL;
        }
        int k = -1;
        for (int j = 0; j < (int)(sizeof(KIND_NAMES) / sizeof(KIND_NAMES[0])); j++) {
            if (strcmp(kind, KIND_NAMES[j]) == 0)
                k = j;
        }
        if (k < 0) {
            Py_DECREF(items);
            PyErr_Format(PyExc_ValueError, "unknown field kind %s", kind);
            return NULL;
        }
        /* the field's slot: a member descriptor of an object reference, on this very class */
        PyObject *member = PyDict_GetItemString(type->tp_dict, name);
        if (member == NULL || !Py_IS_TYPE(member, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)member)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(items);
            PyErr_Format(PyExc_TypeError, "field %s is not a __slots__ entry", name);
            return NULL;
        }
        offsets[i] = ((PyMemberDescrObject *)member)->d_member->offset;
        memset(table[i].name, 0, MAX_NAME);
        memcpy(table[i].name, name, (size_t)name_len);
        table[i].len = name_len;
        table[i].kind = (enum kind)k;
        table[i].required = required;
    }
    Py_DECREF(items);
    memcpy(fields, table, sizeof(field_t) * (size_t)n);
    memcpy(slot_offset, offsets, sizeof(Py_ssize_t) * (size_t)n);
    n_fields = n;
    required_mask = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (fields[i].required)
            required_mask |= (uint64_t)1 << i;
    }
    memset(by_first_count, 0, sizeof(by_first_count));
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char first = (unsigned char)fields[i].name[0];
        by_first[first][by_first_count[first]++] = (unsigned char)i;
    }
    max_line = line_limit;
    max_text = text_limit;
    max_hex = hex_limit;
    wire_version = version;
    Py_INCREF(type);
    for (Py_ssize_t i = 0; i < MAX_FIELDS; i++)
        Py_CLEAR(last_str[i]); /* the field table may have changed */
    Py_XSETREF(event_type, type);
    Py_RETURN_NONE;
}

static PyMethodDef fastwire_methods[] = {
    {"configure", fastwire_configure, METH_VARARGS,
     "configure(event_cls, spec, max_line, max_text, max_hex, version): the field table "
     "(name, kind, required) in Event field order, and wire.py's limits."},
    {"parse", fastwire_parse, METH_O,
     "parse(line: bytes) -> Event | None: the Event wire.py would build, or None when unsure."},
    {"parse_lines", fastwire_parse_lines, METH_O,
     "parse_lines(data: bytes) -> (items, doubtful): per non-empty line (split on newlines) its "
     "Event, or the line's bytes when unsure; doubtful counts the bytes items."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastwire_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lwsobs.ingest._fastwire",
    .m_doc = "C fast path for wire-v1 line parsing; None means 'ask the pure-Python path'.",
    .m_size = -1,
    .m_methods = fastwire_methods,
};

PyMODINIT_FUNC PyInit__fastwire(void) { return PyModule_Create(&fastwire_module); }
