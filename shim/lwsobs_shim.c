/*
 * lwsobs_shim.c - forward libwebsockets protocol callbacks as wire-v1 NDJSON datagrams.
 *
 * See lwsobs.h for the API and shim/README.md for the design.  In short:
 *
 *  - every protocol callback is replaced by a trampoline (a fixed table of MAX_SLOTS static
 *    functions; slot = original callback + protocol name) that formats one line, appends it to
 *    a process-wide batch and tail-calls the original callback;
 *  - nothing in the callback path allocates or waits: the line is formatted into a stack
 *    buffer with hand-written formatters, appended under a mutex held for a memcpy, and sent
 *    with send(MSG_DONTWAIT) on a non-blocking datagram socket;
 *  - a batch leaves as one datagram when the next line would push it past BATCH_LIMIT, 20 ms
 *    after its first line (an lws_sul timer on the context, plus a piggyback check on every
 *    line), at PROTOCOL_DESTROY, around lws_context_destroy() and at exit;
 *  - the same per-context lws_sul timer sends a HEARTBEAT when nothing was sent for 2 s.
 *
 * Written for libwebsockets 4.1.6 (Debian bookworm) and compatible with later 4.x.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "lwsobs.h"

#define API __attribute__((visibility("default")))

/* -- limits ------------------------------------------------------------------------------------ */

#define LINE_MAX_BYTES 16384 /* spec: a longer line is rejected (16384 itself is accepted) */
#define PREFIX_MAX 256	     /* {"v":1,"src":"<=64","seq":..,"t":..,"mono":..,"drop":.. */
#define TAIL_MAX (LINE_MAX_BYTES - PREFIX_MAX)
#define TEXT_MAX 1024	     /* decoded strings are cut at 1 KiB of UTF-8 */
#define NAME_MAX_BYTES 128   /* protocol names kept per slot */
#define BATCH_LIMIT 8192     /* a datagram carries at most ~8 KiB of lines ... */
#define BATCH_CAP (BATCH_LIMIT + LINE_MAX_BYTES + 64) /* ... or one line longer than that */
#define MAX_SLOTS 256	     /* distinct (callback, protocol name) pairs that can be wrapped */
#define MAX_CTX 16	     /* contexts with a flush/heartbeat timer */
#define SRC_MAX 64

#define NS_PER_MS 1000000LL
#define FLUSH_AFTER_NS (20 * NS_PER_MS)
#define HEARTBEAT_NS (2000 * NS_PER_MS)
#define HEARTBEAT_SLACK_NS (20 * NS_PER_MS)
#define MIN_TIMER_NS (50 * NS_PER_MS)
#define RECONNECT_NS (1000 * NS_PER_MS)

enum { ST_UNINIT = 0, ST_OFF = 1, ST_ACTIVE = 2, ST_DONE = 3 };

enum { PSEUDO_HELLO = -1, PSEUDO_HEARTBEAT = -2, PSEUDO_CTX_DESTROY_BEGIN = -3,
       PSEUDO_CTX_DESTROYED = -4, PSEUDO_BYE = -5 };

/* -- state --------------------------------------------------------------------------------- */

struct slot {
	lws_callback_function *orig;
	char name[NAME_MAX_BYTES + 1];
	int has_name;
	char pcol[16 + 6 * NAME_MAX_BYTES]; /* pre-escaped `,"pcol":"..."` */
	size_t pcol_len;
};

struct ctxent {
	struct lws_context *ctx;
	lws_sorted_usec_list_t sul;
	int64_t due;		/* CLOCK_MONOTONIC ns the timer is set for, when armed */
	unsigned char used, armed, destroying, saw_pd, seen_cb;
};

struct wrapped {
	struct wrapped *next;
	size_t n;
	struct lws_protocols *orig; /* snapshot of the app's array (n entries) */
	struct lws_protocols *wrap; /* the copy handed to lws (n entries + terminator) */
};

static struct {
	pthread_mutex_t lock; /* batch, counters, socket, ctx table */
	int state;
	int fd;
	int is_unix;
	int connected;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int64_t last_connect_try;
	char endpoint[160];
	char src[SRC_MAX + 1];
	int src_explicit;
	char host[256];
	int debug;
	int hello_sent;
	uint64_t seq, drop, sent_lines, sent_dgrams, failed_dgrams;
	char batch[BATCH_CAP];
	size_t batch_len;
	uint64_t batch_lines;
	int64_t batch_first;
	int64_t last_send;
	struct ctxent ctxs[MAX_CTX];
} g = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1 };

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_wrap_lock = PTHREAD_MUTEX_INITIALIZER; /* slots, wrapped-array cache */
static struct slot g_slots[MAX_SLOTS];
static unsigned g_nslots; /* published with release; entries below it never change */
static unsigned g_unwrapped; /* protocols left unwrapped because the slot table was full */
static struct wrapped *g_wrapped;

static __thread int t_in_create;  /* inside lws_create_context/vhost: do not arm timers */
static __thread int t_destroy_depth;

/* -- clocks -------------------------------------------------------------------------------- */

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* -- malloc-free formatting ---------------------------------------------------------------- */

struct wbuf {
	char *p;
	size_t len, cap;
	int full;
};

static void w_raw(struct wbuf *b, const char *s, size_t n)
{
	if (b->full || n > b->cap - b->len) {
		b->full = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

#define W_LIT(b, s) w_raw((b), (s), sizeof(s) - 1)

static void w_u64(struct wbuf *b, uint64_t v)
{
	char t[24];
	int i = (int)sizeof(t);

	do {
		t[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	w_raw(b, t + i, sizeof(t) - (size_t)i);
}

static void w_i64(struct wbuf *b, int64_t v)
{
	if (v < 0) {
		W_LIT(b, "-");
		w_u64(b, (uint64_t)0 - (uint64_t)v);
	} else
		w_u64(b, (uint64_t)v);
}

static const char hexdig[] = "0123456789abcdef";

/* "7f12ab" - lowercase, no 0x, no leading zeros (the Python side normalizes anyway) */
static void w_hex(struct wbuf *b, uintptr_t v)
{
	char t[2 + 2 * sizeof(uintptr_t)];
	int i = (int)sizeof(t);

	t[--i] = '"';
	do {
		t[--i] = hexdig[v & 15];
		v >>= 4;
	} while (v);
	t[--i] = '"';
	w_raw(b, t + i, sizeof(t) - (size_t)i);
}

/* length of the valid UTF-8 sequence at s (1..4), 0 when the byte at s starts none */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned c = s[0];

	if (c < 0x80)
		return 1;
	if (c < 0xc2 || c > 0xf4)
		return 0;
	if (c < 0xe0)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c < 0xf0) {
		if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
			return 0; /* overlong, or a UTF-16 surrogate */
		return 3;
	}
	if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
		return 0;
	if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
		return 0; /* overlong, or beyond U+10FFFF */
	return 4;
}

/*
 * A JSON string of s[0..n): escaped, cut before the decoded value would exceed max_value bytes
 * of UTF-8 (never inside a character), and before the output would leave fewer than `reserve`
 * bytes in b.  A byte that starts no valid UTF-8 sequence is written as the 4 characters \xNN
 * (JSON "\\xNN"), like Python's backslashreplace, so the line stays valid UTF-8.
 */
static void w_text(struct wbuf *b, const char *str, size_t n, size_t max_value, size_t reserve)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t value = 0, i = 0, limit;
	char esc[8];

	if (b->full || b->cap - b->len < reserve + 2) {
		b->full = 1;
		return;
	}
	limit = b->cap - reserve - 1; /* room for the closing quote */
	b->p[b->len++] = '"';
	while (i < n) {
		const char *out = esc;
		size_t olen, vlen, adv;
		unsigned c = s[i];

		if (c < 0x80) {
			adv = vlen = 1;
			if (c == '"' || c == '\\') {
				esc[0] = '\\';
				esc[1] = (char)c;
				olen = 2;
			} else if (c < 0x20) {
				esc[0] = '\\';
				switch (c) {
				case '\n': esc[1] = 'n'; olen = 2; break;
				case '\r': esc[1] = 'r'; olen = 2; break;
				case '\t': esc[1] = 't'; olen = 2; break;
				case '\b': esc[1] = 'b'; olen = 2; break;
				case '\f': esc[1] = 'f'; olen = 2; break;
				default:
					memcpy(esc + 1, "u00", 3);
					esc[4] = hexdig[c >> 4];
					esc[5] = hexdig[c & 15];
					olen = 6;
				}
			} else {
				out = (const char *)s + i;
				olen = 1;
			}
		} else {
			size_t k = utf8_len(s + i, n - i);

			if (k) {
				out = (const char *)s + i;
				adv = vlen = olen = k;
			} else {
				memcpy(esc, "\\\\x", 3);
				esc[3] = hexdig[c >> 4];
				esc[4] = hexdig[c & 15];
				olen = 5;
				vlen = 4;
				adv = 1;
			}
		}
		if (value + vlen > max_value || b->len + olen > limit)
			break;
		memcpy(b->p + b->len, out, olen);
		b->len += olen;
		value += vlen;
		i += adv;
	}
	b->p[b->len++] = '"';
}

/* ,"key": */
static void w_key(struct wbuf *b, const char *key)
{
	W_LIT(b, ",\"");
	w_raw(b, key, strlen(key));
	W_LIT(b, "\":");
}

/* a string from a callback's `in`: bounded by len when given, else NUL-terminated */
static void w_in_text(struct wbuf *b, const char *key, const void *in, size_t len)
{
	size_t n;

	if (!in)
		return;
	n = strnlen((const char *)in, len ? len : 4 * TEXT_MAX);
	w_key(b, key);
	w_text(b, (const char *)in, n, TEXT_MAX, 96);
}

/* "ip:port" ("[ip6]:port") of a socket address; 0 when not an IP address */
static int sockaddr_text(const struct sockaddr *sa, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned port;
	struct wbuf b = { out, 0, cap - 1, 0 };

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		if (!inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip)))
			return 0;
		w_raw(&b, ip, strlen(ip));
		port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		if (!inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip)))
			return 0;
		W_LIT(&b, "[");
		w_raw(&b, ip, strlen(ip));
		W_LIT(&b, "]");
		port = ntohs(s6->sin6_port);
	} else
		return 0;
	W_LIT(&b, ":");
	w_u64(&b, port);
	if (b.full)
		return 0;
	out[b.len] = '\0';
	return 1;
}

/* -- source name --------------------------------------------------------------------------- */

static int src_char_ok(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
}

/* copy at most max chars of s into d, every char outside the src charset turned into '_' */
static size_t sanitize(char *d, const char *s, size_t max)
{
	size_t n = 0;

	for (; s && *s && n < max; s++)
		d[n++] = src_char_ok((unsigned char)*s) ? *s : '_';
	d[n] = '\0';
	return n;
}

static void build_src(void)
{
	const char *env = getenv("LWSOBS_SOURCE");
	char prog[25], host[SRC_MAX + 1], pid[24], base[SRC_MAX + 1];
	struct wbuf pb = { pid, 0, sizeof(pid) - 1, 0 };
	struct wbuf sb = { g.src, 0, SRC_MAX, 0 };
	size_t lp, lh, lpid;

	W_LIT(&pb, ":");
	w_u64(&pb, (uint64_t)getpid());
	lpid = pb.len;

	if (env && *env && !g.src_explicit && sanitize(g.src, env, SRC_MAX)) {
		g.src_explicit = 1;
		return;
	}
	if (g.src_explicit) {
		/* a forked child: keep the name, make the instance unique with its pid */
		lp = sanitize(base, env, SRC_MAX - lpid);
		w_raw(&sb, base, lp);
	} else {
		lp = sanitize(prog, program_invocation_short_name, sizeof(prog) - 1);
		if (!lp)
			lp = sanitize(prog, "lws", sizeof(prog) - 1);
		lh = sanitize(host, g.host, SRC_MAX - lp - 1 - lpid);
		if (!lh)
			lh = sanitize(host, "localhost", SRC_MAX - lp - 1 - lpid);
		w_raw(&sb, prog, lp);
		W_LIT(&sb, "@");
		w_raw(&sb, host, lh);
	}
	w_raw(&sb, pid, lpid);
	g.src[sb.len] = '\0';
}

/* -- endpoint and socket ------------------------------------------------------------------- */

static int parse_endpoint(const char *ep)
{
	memset(&g.addr, 0, sizeof(g.addr));
	if (!strncmp(ep, "udp://", 6)) {
		char host[INET6_ADDRSTRLEN + 2];
		const char *h = ep + 6, *colon;
		char *end;
		long port;
		size_t hl;

		if (*h == '[') {
			const char *rb = strchr(h, ']');

			if (!rb || rb[1] != ':')
				return -1;
			hl = (size_t)(rb - h - 1);
			h++;
			colon = rb + 1;
		} else {
			colon = strrchr(h, ':');
			if (!colon)
				return -1;
			hl = (size_t)(colon - h);
		}
		if (!hl || hl >= sizeof(host))
			return -1;
		memcpy(host, h, hl);
		host[hl] = '\0';
		errno = 0;
		port = strtol(colon + 1, &end, 10);
		if (errno || *end || end == colon + 1 || port < 1 || port > 65535)
			return -1;
		if (!strcmp(host, "localhost"))
			strcpy(host, "127.0.0.1");
		{
			struct sockaddr_in *s4 = (struct sockaddr_in *)&g.addr;
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&g.addr;

			if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
				s4->sin_family = AF_INET;
				s4->sin_port = htons((uint16_t)port);
				g.addrlen = sizeof(*s4);
			} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
				s6->sin6_family = AF_INET6;
				s6->sin6_port = htons((uint16_t)port);
				g.addrlen = sizeof(*s6);
			} else
				return -1; /* numeric only: no DNS lookup in an app's process */
		}
		g.is_unix = 0;
		return 0;
	}
	if (!strncmp(ep, "unix:", 5)) {
		struct sockaddr_un *su = (struct sockaddr_un *)&g.addr;
		const char *path = ep + 5;
		size_t pl = strlen(path);

		if (!pl || pl >= sizeof(su->sun_path))
			return -1;
		su->sun_family = AF_UNIX;
		memcpy(su->sun_path, path, pl);
		if (path[0] == '@') /* abstract namespace */
			su->sun_path[0] = '\0';
		g.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + pl +
					(path[0] == '@' ? 0 : 1));
		g.is_unix = 1;
		return 0;
	}
	return -1;
}

/* caller holds g.lock (or is single-threaded init) */
static void try_connect(int64_t now)
{
	g.last_connect_try = now;
	if (g.fd < 0) {
		g.fd = socket(g.addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (g.fd < 0)
			return;
	}
	if (!connect(g.fd, (const struct sockaddr *)&g.addr, g.addrlen))
		g.connected = 1;
}

/* one datagram; never blocks, never retries: 0 sent, -1 failed (the caller counts drops) */
static int send_dgram(const char *p, size_t n, int64_t now)
{
	ssize_t r;

	if (!g.connected && now - g.last_connect_try >= RECONNECT_NS)
		try_connect(now);
	if (!g.connected)
		return -1;
	r = send(g.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r == (ssize_t)n)
		return 0;
	/* a unix receiver that went away must be reconnected when it comes back */
	if (r < 0 && g.is_unix &&
	    (errno == ECONNREFUSED || errno == ENOTCONN || errno == ENOENT)) {
		g.connected = 0;
		g.last_connect_try = now;
	}
	return -1;
}

/* -- batch (caller holds g.lock) ----------------------------------------------------------- */

static void flush_locked(int64_t now)
{
	if (!g.batch_len)
		return;
	if (send_dgram(g.batch, g.batch_len, now)) {
		g.drop += g.batch_lines;
		g.failed_dgrams++;
	} else {
		g.sent_lines += g.batch_lines;
		g.sent_dgrams++;
	}
	g.batch_len = 0;
	g.batch_lines = 0;
	g.last_send = now;
}

static void append_hello_locked(void);

/*
 * Append one line: the common prefix (v, src, seq, t, mono, drop) and `tail`, which starts
 * with `,"r":` and ends with "}\n".
 */
static void append_locked(const char *tail, size_t tail_len, int64_t now)
{
	char pre[PREFIX_MAX];
	struct wbuf b = { pre, 0, sizeof(pre), 0 };
	size_t line_len;

	if (!g.hello_sent)
		append_hello_locked(); /* after fork(): the child is a new source */

	W_LIT(&b, "{\"v\":1,\"src\":\"");
	w_raw(&b, g.src, strlen(g.src));
	W_LIT(&b, "\",\"seq\":");
	w_u64(&b, g.seq);
	W_LIT(&b, ",\"t\":");
	w_i64(&b, clock_ns(CLOCK_REALTIME));
	W_LIT(&b, ",\"mono\":");
	w_i64(&b, now);
	W_LIT(&b, ",\"drop\":");
	w_u64(&b, g.drop);

	g.seq++; /* +1 for every line attempted, sent or not */
	line_len = b.len + tail_len;
	if (b.full || line_len > LINE_MAX_BYTES + 1) {
		g.drop++; /* cannot happen with the bounds above; never send a broken line */
		return;
	}
	if (g.batch_len && g.batch_len + line_len > BATCH_LIMIT)
		flush_locked(now);
	if (!g.batch_len)
		g.batch_first = now;
	memcpy(g.batch + g.batch_len, pre, b.len);
	memcpy(g.batch + g.batch_len + b.len, tail, tail_len);
	g.batch_len += line_len;
	g.batch_lines++;
	if (g.batch_len >= BATCH_LIMIT || now - g.batch_first >= FLUSH_AFTER_NS)
		flush_locked(now); /* piggyback: the first line after 20 ms sends the batch */
}

static size_t pseudo_tail(char *buf, size_t cap, int r, struct lws_context *ctx)
{
	struct wbuf b = { buf, 0, cap, 0 };

	W_LIT(&b, ",\"r\":");
	w_i64(&b, r);
	if (ctx) {
		w_key(&b, "ctx");
		w_hex(&b, (uintptr_t)ctx);
	}
	if (r == PSEUDO_HELLO) {
		const char *v = lws_get_library_version();

		w_key(&b, "lws");
		w_text(&b, v, strlen(v), TEXT_MAX, 64);
		w_key(&b, "pid");
		w_u64(&b, (uint64_t)getpid());
		w_key(&b, "host");
		w_text(&b, g.host, strlen(g.host), TEXT_MAX, 8);
	}
	W_LIT(&b, "}\n");
	return b.full ? 0 : b.len;
}

static void append_pseudo_locked(int r, struct lws_context *ctx, int64_t now)
{
	char tail[1024];
	size_t n = pseudo_tail(tail, sizeof(tail), r, ctx);

	if (n)
		append_locked(tail, n, now);
}

static void append_hello_locked(void)
{
	g.hello_sent = 1;
	append_pseudo_locked(PSEUDO_HELLO, NULL, clock_ns(CLOCK_MONOTONIC));
}

/* -- per-context timers ---------------------------------------------------------------------- */

static struct ctxent *ctx_find(struct lws_context *ctx)
{
	int i;

	for (i = 0; i < MAX_CTX; i++)
		if (g.ctxs[i].used && g.ctxs[i].ctx == ctx)
			return &g.ctxs[i];
	return NULL;
}

static struct ctxent *ctx_get(struct lws_context *ctx)
{
	struct ctxent *e = ctx_find(ctx);
	int i;

	if (e)
		return e;
	for (i = 0; i < MAX_CTX && !e; i++)
		if (!g.ctxs[i].used)
			e = &g.ctxs[i];
	/* full: recycle an idle entry (a context destroyed behind our back leaves one) */
	for (i = 0; i < MAX_CTX && !e; i++)
		if (!g.ctxs[i].armed && !g.ctxs[i].destroying)
			e = &g.ctxs[i];
	if (!e)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->used = 1;
	e->ctx = ctx;
	return e;
}

static void sul_cb(lws_sorted_usec_list_t *sul);

/* decide under g.lock whether e's timer must (re)start for `delay`; the caller schedules */
static int ctx_want_timer(struct ctxent *e, int64_t now, int64_t delay)
{
	if (!e || e->destroying || (e->armed && e->due <= now + delay))
		return 0;
	e->armed = 1;
	e->due = now + delay;
	return 1;
}

static void ctx_schedule(struct ctxent *e, struct lws_context *ctx, int64_t delay)
{
	lws_sul_schedule(ctx, 0, &e->sul, sul_cb, (lws_usec_t)(delay / 1000));
}

/* under g.lock: stop e's timer (lws_sul_cancel only unlinks; it takes no lock) */
static void ctx_cancel(struct ctxent *e)
{
	if (e->armed) {
		lws_sul_cancel(&e->sul);
		e->armed = 0;
	}
}

/* the context's timer: flush what is batched, heartbeat when idle for 2 s, set the next one */
static void sul_cb(lws_sorted_usec_list_t *sul)
{
	struct ctxent *e = (struct ctxent *)((char *)sul - offsetof(struct ctxent, sul));
	struct lws_context *ctx;
	int64_t now, next;
	int again;

	pthread_mutex_lock(&g.lock);
	e->armed = 0; /* lws unlinked it before calling us */
	now = clock_ns(CLOCK_MONOTONIC);
	if (g.state == ST_ACTIVE) {
		flush_locked(now);
		if (now - g.last_send >= HEARTBEAT_NS - HEARTBEAT_SLACK_NS) {
			append_pseudo_locked(PSEUDO_HEARTBEAT, NULL, now);
			flush_locked(now);
		}
	}
	next = g.last_send + HEARTBEAT_NS - now;
	if (next < MIN_TIMER_NS)
		next = MIN_TIMER_NS;
	ctx = e->ctx;
	again = g.state == ST_ACTIVE && e->used && ctx_want_timer(e, now, next);
	pthread_mutex_unlock(&g.lock);
	if (again)
		ctx_schedule(e, ctx, next);
}

/* -- init, fork, exit ------------------------------------------------------------------------ */

static void atfork_child(void)
{
	pthread_mutex_init(&g.lock, NULL);
	if (g.state != ST_ACTIVE)
		return;
	g.batch_len = 0;
	g.batch_lines = 0;
	g.seq = g.drop = g.sent_lines = g.sent_dgrams = g.failed_dgrams = 0;
	build_src();
	g.hello_sent = 0; /* HELLO again, with the child's pid, before its first line */
}

static void init_once(void)
{
	const char *ep = getenv("LWSOBS_ENDPOINT");
	const char *dbg = getenv("LWSOBS_DEBUG");
	int64_t now = clock_ns(CLOCK_MONOTONIC);

	g.debug = dbg && *dbg && strcmp(dbg, "0");
	if (!ep || !*ep)
		ep = "udp://127.0.0.1:7682";
	snprintf(g.endpoint, sizeof(g.endpoint), "%s", ep);
	if (!strcmp(ep, "off") || !strcmp(ep, "none") || !strcmp(ep, "0")) {
		__atomic_store_n(&g.state, ST_OFF, __ATOMIC_RELEASE);
		return;
	}
	if (parse_endpoint(ep)) {
		fprintf(stderr, "lwsobs: LWSOBS_ENDPOINT=%s not understood (udp://IP:PORT, "
				"unix:/path or off): shim off\n", ep);
		__atomic_store_n(&g.state, ST_OFF, __ATOMIC_RELEASE);
		return;
	}
	if (gethostname(g.host, sizeof(g.host) - 1))
		strcpy(g.host, "localhost");
	g.host[sizeof(g.host) - 1] = '\0';
	build_src();
	try_connect(now);
	g.last_send = now;
	pthread_atfork(NULL, NULL, atfork_child);
	if (g.debug)
		fprintf(stderr, "lwsobs: src=%s endpoint=%s%s\n", g.src, g.endpoint,
			g.connected ? "" : " (not connected yet)");

	pthread_mutex_lock(&g.lock);
	__atomic_store_n(&g.state, ST_ACTIVE, __ATOMIC_RELEASE);
	append_hello_locked();
	flush_locked(now);
	pthread_mutex_unlock(&g.lock);
}

static int active(void)
{
	pthread_once(&g_once, init_once);
	return __atomic_load_n(&g.state, __ATOMIC_ACQUIRE) == ST_ACTIVE;
}

__attribute__((destructor)) static void lwsobs_fini(void)
{
	struct timespec until;
	int64_t now;

	if (__atomic_load_n(&g.state, __ATOMIC_ACQUIRE) != ST_ACTIVE)
		return;
	/* bounded wait: exit() from a signal handler while we hold the lock must not hang */
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 100 * NS_PER_MS;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	if (pthread_mutex_timedlock(&g.lock, &until))
		return;
	now = clock_ns(CLOCK_MONOTONIC);
	append_pseudo_locked(PSEUDO_BYE, NULL, now);
	flush_locked(now);
	__atomic_store_n(&g.state, ST_DONE, __ATOMIC_RELEASE);
	if (g.debug)
		fprintf(stderr, "lwsobs: exit: %llu lines, %llu sent in %llu datagrams, "
				"%llu dropped (%llu datagrams failed)\n",
			(unsigned long long)g.seq, (unsigned long long)g.sent_lines,
			(unsigned long long)g.sent_dgrams, (unsigned long long)g.drop,
			(unsigned long long)g.failed_dgrams);
	pthread_mutex_unlock(&g.lock);
	if (g.fd >= 0)
		close(g.fd);
}

/* -- emitting -------------------------------------------------------------------------------- */

/*
 * Submit a formatted tail for a callback of `ctx` (NULL for pseudo-events): append it, keep
 * the context's timer in step, and act on PROTOCOL_DESTROY.
 */
static void submit(const char *tail, size_t n, int reason, struct lws_context *ctx, int flush)
{
	struct ctxent *e = NULL;
	int64_t now, delay = FLUSH_AFTER_NS;
	int sched = 0;

	pthread_mutex_lock(&g.lock);
	if (g.state != ST_ACTIVE) {
		pthread_mutex_unlock(&g.lock);
		return;
	}
	now = clock_ns(CLOCK_MONOTONIC);
	append_locked(tail, n, now);
	if (ctx)
		e = ctx_get(ctx);
	if (e) {
		e->seen_cb = 1;
		if (reason == LWS_CALLBACK_PROTOCOL_DESTROY) {
			/*
			 * A vhost's last callbacks: stop its context's timer, so that no timer of
			 * ours stays linked into a context lws is about to free, even when the app
			 * calls lws_context_destroy() behind our back.  Inside our own
			 * lws_context_destroy() the flush waits for CONTEXT_DESTROYED, which
			 * follows in the same call: one datagram instead of one per protocol
			 * (unix datagram queues hold 10 by default).
			 */
			ctx_cancel(e);
			if (e->destroying) {
				e->saw_pd = 1;
				flush = 0;
			} else
				e->used = 0;
		} else if (!t_in_create && reason != LWS_CALLBACK_PROTOCOL_INIT) {
			/*
			 * Keep a timer of this context due when the batch turns 20 ms old (a
			 * batch may have been started by a line that could not arm one), or
			 * within 2 s for the heartbeat.  Usually it already is: no lws call.
			 */
			if (g.batch_len) {
				delay = g.batch_first + FLUSH_AFTER_NS - now;
				if (delay < 0)
					delay = 0;
			} else
				delay = HEARTBEAT_NS;
			sched = ctx_want_timer(e, now, delay);
		}
	}
	if (flush)
		flush_locked(now);
	pthread_mutex_unlock(&g.lock);
	if (sched)
		ctx_schedule(e, ctx, delay);
}

static void emit_pseudo(int r, struct lws_context *ctx, int flush)
{
	char tail[256];
	size_t n = pseudo_tail(tail, sizeof(tail), r, ctx);

	if (n)
		submit(tail, n, r, NULL, flush);
}

static int is_fake_reason(int r)
{
	switch (r) {
	case LWS_CALLBACK_PROTOCOL_INIT:
	case LWS_CALLBACK_PROTOCOL_DESTROY:
	case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
	case LWS_CALLBACK_VHOST_CERT_AGING:
	case LWS_CALLBACK_VHOST_CERT_UPDATE:
	case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS:
	case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
	case LWS_CALLBACK_GET_THREAD_ID:
		return 1;
	}
	return 0;
}

static int is_noise(int r)
{
	switch (r) {
	case LWS_CALLBACK_LOCK_POLL:
	case LWS_CALLBACK_UNLOCK_POLL:
	case LWS_CALLBACK_ADD_POLL_FD:
	case LWS_CALLBACK_DEL_POLL_FD:
	case LWS_CALLBACK_CHANGE_MODE_POLL_FD:
	case LWS_CALLBACK_GET_THREAD_ID:
		return 1;
	}
	return 0;
}

/* the request method of an h1/h2 server request, when lws has it */
static const char *request_method(struct lws *wsi, char *buf, size_t cap)
{
	static const struct {
		enum lws_token_indexes tok;
		const char *name;
	} m[] = {
		{ WSI_TOKEN_GET_URI, "GET" },
		{ WSI_TOKEN_POST_URI, "POST" },
		{ WSI_TOKEN_HEAD_URI, "HEAD" },
#if defined(LWS_WITH_HTTP_UNCOMMON_HEADERS) || defined(LWS_HTTP_HEADERS_ALL)
		{ WSI_TOKEN_PUT_URI, "PUT" },
		{ WSI_TOKEN_PATCH_URI, "PATCH" },
		{ WSI_TOKEN_DELETE_URI, "DELETE" },
		{ WSI_TOKEN_OPTIONS_URI, "OPTIONS" },
#endif
		{ WSI_TOKEN_CONNECT, "CONNECT" },
	};
	size_t i;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (lws_hdr_total_length(wsi, m[i].tok) > 0)
			return m[i].name;
#if defined(LWS_ROLE_H2) || defined(LWS_HTTP_HEADERS_ALL)
	{
		int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COLON_METHOD);

		if (n > 0 && (size_t)n < cap &&
		    lws_hdr_copy(wsi, buf, (int)cap, WSI_TOKEN_HTTP_COLON_METHOD) > 0)
			return buf;
	}
#endif
	(void)buf;
	(void)cap;
	return NULL;
}

static size_t callback_tail(char *buf, size_t cap, const struct slot *s, struct lws *wsi,
			    int r, void *user, void *in, size_t len, struct lws_context **pctx)
{
	struct wbuf b = { buf, 0, cap - 2, 0 }; /* room for "}\n" is kept aside */
	struct lws_context *ctx = wsi ? lws_get_context(wsi) : NULL;
	struct lws_vhost *vh = wsi ? lws_get_vhost(wsi) : NULL;
	int fake = is_fake_reason(r);
	char tmp[128];

	*pctx = ctx;
	W_LIT(&b, ",\"r\":");
	w_i64(&b, r);
	if (ctx) {
		w_key(&b, "ctx");
		w_hex(&b, (uintptr_t)ctx);
	}
	if (wsi && !fake) {
		struct lws *nwsi = lws_get_network_wsi(wsi), *parent = lws_get_parent(wsi);

		w_key(&b, "wsi");
		w_hex(&b, (uintptr_t)wsi);
		if (nwsi && nwsi != wsi) {
			w_key(&b, "nwsi");
			w_hex(&b, (uintptr_t)nwsi);
		}
		if (parent) {
			w_key(&b, "parent");
			w_hex(&b, (uintptr_t)parent);
		}
		w_key(&b, "fd");
		w_i64(&b, (int64_t)lws_get_socket_fd(wsi));
	}
	if (vh) {
		const char *name = lws_get_vhost_name(vh);

		if (name) {
			w_key(&b, "vh");
			w_text(&b, name, strnlen(name, 4 * TEXT_MAX), TEXT_MAX, 8192);
		}
	}
	if (s->has_name)
		w_raw(&b, s->pcol, s->pcol_len);
	if (fake)
		W_LIT(&b, ",\"fake\":true");
	else if (wsi) {
		if (lws_is_ssl(wsi))
			W_LIT(&b, ",\"ssl\":true");
		else
			W_LIT(&b, ",\"ssl\":false");
#if LWS_LIBRARY_VERSION_MAJOR > 4 || \
	(LWS_LIBRARY_VERSION_MAJOR == 4 && LWS_LIBRARY_VERSION_MINOR >= 2)
		{
			const char *tag = lws_wsi_tag(wsi);

			if (tag && *tag) {
				w_key(&b, "tag");
				w_text(&b, tag, strnlen(tag, 4 * TEXT_MAX), TEXT_MAX, 4096);
			}
		}
#endif
	}

	/* decoded from in/user, only for the reasons the spec names */
	switch (r) {
	case LWS_CALLBACK_HTTP:
	case LWS_CALLBACK_FILTER_HTTP_CONNECTION: {
		const char *m = wsi ? request_method(wsi, tmp, 16) : NULL;

		if (m) {
			w_key(&b, "method");
			w_text(&b, m, strlen(m), 32, 96);
		}
		w_in_text(&b, "uri", in, len);
		break;
	}
	case LWS_CALLBACK_FILTER_NETWORK_CONNECTION: {
		const struct lws_filter_network_conn_args *fa = user;

		w_key(&b, "afd");
		w_i64(&b, (int64_t)(intptr_t)in);
		if (fa && sockaddr_text((const struct sockaddr *)&fa->cli_addr, tmp, sizeof(tmp))) {
			w_key(&b, "peer");
			w_text(&b, tmp, strlen(tmp), TEXT_MAX, 8);
		}
		break;
	}
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		if (wsi) {
			unsigned st = lws_http_client_http_response(wsi);

			if (st) {
				w_key(&b, "status");
				w_u64(&b, st);
			}
		}
		/* fallthrough */
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		/* lws_get_peer_simple() reads the nwsi's fd; skip the syscall when there is none */
		if (wsi && lws_get_socket_fd(lws_get_network_wsi(wsi)) >= 0) {
			const char *p = lws_get_peer_simple(wsi, tmp, sizeof(tmp));

			/* on failure lws writes "getpeername: <error>" into the buffer */
			if (p && *p && strncmp(p, "getpeername", 11)) {
				w_key(&b, "peer");
				w_text(&b, p, strnlen(p, sizeof(tmp)), TEXT_MAX, 8);
			}
		}
		break;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		w_in_text(&b, "upg", in, len);
		break;
	case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
		w_in_text(&b, "sub", in, len);
		break;
	case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_CLIENT_HTTP_DROP_PROTOCOL:
	case LWS_CALLBACK_WS_SERVER_DROP_PROTOCOL:
	case LWS_CALLBACK_WS_CLIENT_DROP_PROTOCOL:
	case LWS_CALLBACK_RAW_SKT_DROP_PROTOCOL:
		w_in_text(&b, "why", in, len);
		break;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		w_in_text(&b, "err", in, len);
		break;
	case LWS_CALLBACK_CHILD_CLOSING:
		if (in) {
			w_key(&b, "child");
			w_hex(&b, (uintptr_t)in);
		}
		break;
	default:
		break;
	}
	if (b.full)
		return 0;
	buf[b.len++] = '}';
	buf[b.len++] = '\n';
	return b.len;
}

static void emit_callback(const struct slot *s, struct lws *wsi, int r, void *user, void *in,
			  size_t len)
{
	char tail[TAIL_MAX];
	struct lws_context *ctx = NULL;
	size_t n = callback_tail(tail, sizeof(tail), s, wsi, r, user, in, len, &ctx);

	if (!n) { /* cannot happen with the bounds above; keep the seq honest anyway */
		struct wbuf b = { tail, 0, sizeof(tail), 0 };

		W_LIT(&b, ",\"r\":");
		w_i64(&b, r);
		W_LIT(&b, "}\n");
		n = b.len;
	}
	submit(tail, n, r, ctx, r == LWS_CALLBACK_PROTOCOL_DESTROY);
}

/* -- trampolines ----------------------------------------------------------------------------- */

static int dispatch(unsigned idx, struct lws *wsi, enum lws_callback_reasons reason, void *user,
		    void *in, size_t len)
{
	const struct slot *s = &g_slots[idx];

	if (__atomic_load_n(&g.state, __ATOMIC_ACQUIRE) == ST_ACTIVE && !is_noise((int)reason)) {
		int saved = errno;

		emit_callback(s, wsi, (int)reason, user, in, len);
		errno = saved;
	}
	return s->orig(wsi, reason, user, in, len);
}

#define TR_ROW(X_, R_)                                                                       \
	X_(R_, 0) X_(R_, 1) X_(R_, 2) X_(R_, 3) X_(R_, 4) X_(R_, 5) X_(R_, 6) X_(R_, 7)         \
	X_(R_, 8) X_(R_, 9) X_(R_, a) X_(R_, b) X_(R_, c) X_(R_, d) X_(R_, e) X_(R_, f)
#define TR_ALL(X_)                                                                           \
	TR_ROW(X_, 0) TR_ROW(X_, 1) TR_ROW(X_, 2) TR_ROW(X_, 3) TR_ROW(X_, 4) TR_ROW(X_, 5)   \
	TR_ROW(X_, 6) TR_ROW(X_, 7) TR_ROW(X_, 8) TR_ROW(X_, 9) TR_ROW(X_, a) TR_ROW(X_, b)   \
	TR_ROW(X_, c) TR_ROW(X_, d) TR_ROW(X_, e) TR_ROW(X_, f)
/* one trampoline per slot: tramp_00 .. tramp_ff call dispatch(0x00 .. 0xff, ...) */
#define TR_DEF(H_, L_)                                                                       \
	static int tramp_##H_##L_(struct lws *w, enum lws_callback_reasons r, void *u,        \
				  void *in, size_t l)                                        \
	{                                                                                    \
		return dispatch(0x##H_##L_, w, r, u, in, l);                                 \
	}
#define TR_REF(H_, L_) tramp_##H_##L_,

TR_ALL(TR_DEF)

static lws_callback_function *const g_tramps[MAX_SLOTS] = { TR_ALL(TR_REF) };

static int is_trampoline(lws_callback_function *cb)
{
	unsigned i;

	for (i = 0; i < MAX_SLOTS; i++)
		if (g_tramps[i] == cb)
			return 1;
	return 0;
}

static int name_eq(const struct slot *s, const char *name)
{
	if (!name)
		return !s->has_name;
	return s->has_name && !strncmp(s->name, name, NAME_MAX_BYTES);
}

/* lock-free: slots below g_nslots are immutable */
static int slot_find(lws_callback_function *cb, const char *name)
{
	unsigned i, n = __atomic_load_n(&g_nslots, __ATOMIC_ACQUIRE);

	for (i = 0; i < n; i++)
		if (g_slots[i].orig == cb && name_eq(&g_slots[i], name))
			return (int)i;
	return -1;
}

/* caller holds g_wrap_lock */
static int slot_get(lws_callback_function *cb, const char *name)
{
	int i = slot_find(cb, name);
	struct slot *s;

	if (i >= 0)
		return i;
	if (g_nslots >= MAX_SLOTS) {
		if (!g_unwrapped++)
			fprintf(stderr, "lwsobs: more than %d distinct protocol callbacks; the "
					"rest are not observed\n", MAX_SLOTS);
		return -1;
	}
	s = &g_slots[g_nslots];
	memset(s, 0, sizeof(*s));
	s->orig = cb;
	if (name) {
		struct wbuf b = { s->pcol, 0, sizeof(s->pcol), 0 };

		s->has_name = 1;
		strncpy(s->name, name, NAME_MAX_BYTES);
		W_LIT(&b, ",\"pcol\":");
		w_text(&b, s->name, strlen(s->name), NAME_MAX_BYTES, 0);
		s->pcol_len = b.len;
	}
	__atomic_store_n(&g_nslots, g_nslots + 1, __ATOMIC_RELEASE);
	return (int)(s - g_slots);
}

/* -- wrapping -------------------------------------------------------------------------------- */

static int proto_eq(const struct lws_protocols *a, const struct lws_protocols *b)
{
	return a->name == b->name && a->callback == b->callback &&
	       a->per_session_data_size == b->per_session_data_size &&
	       a->rx_buffer_size == b->rx_buffer_size && a->id == b->id && a->user == b->user &&
	       a->tx_packet_size == b->tx_packet_size;
}

/*
 * Point info->protocols at a wrapped copy of info->protocols (or of *info->pprotocols).
 * lws (4.1.6 lib/core-net/vhost.c) copies the array into each vhost, so the copy only has
 * to outlive the create call; it is kept anyway, as the app may wrap long before it creates.
 */
static int wrap_info(struct lws_context_creation_info *info)
{
	const struct lws_protocols *src = info->protocols;
	const struct lws_protocols *const *pp = info->pprotocols;
	struct lws_protocols *snap = NULL;
	struct wrapped *w;
	size_t n = 0, i, todo = 0;
	int wrapped = 0;

	if (src)
		while (src[n].callback && n < 4096)
			n++;
	else if (pp)
		while (pp[n] && n < 4096)
			n++;
	if (!n)
		return 0;
	if (!src) {
		snap = malloc(n * sizeof(*snap));
		if (!snap)
			return -1;
		for (i = 0; i < n; i++)
			snap[i] = *pp[i];
		src = snap;
	}
	for (i = 0; i < n; i++)
		todo += !is_trampoline(src[i].callback);
	if (!todo) {
		free(snap);
		return (int)n;
	}

	pthread_mutex_lock(&g_wrap_lock);
	for (w = g_wrapped; w; w = w->next) {
		if (w->n != n)
			continue;
		for (i = 0; i < n && proto_eq(&w->orig[i], &src[i]); i++)
			;
		if (i == n)
			break;
	}
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (w) {
			w->orig = malloc(n * sizeof(*w->orig));
			w->wrap = calloc(n + 1, sizeof(*w->wrap));
		}
		if (!w || !w->orig || !w->wrap) {
			if (w) {
				free(w->orig);
				free(w->wrap);
			}
			free(w);
			pthread_mutex_unlock(&g_wrap_lock);
			free(snap);
			return -1;
		}
		w->n = n;
		memcpy(w->orig, src, n * sizeof(*src));
		memcpy(w->wrap, src, n * sizeof(*src));
		for (i = 0; i < n; i++) {
			int k;

			if (is_trampoline(src[i].callback))
				continue;
			k = slot_get(src[i].callback, src[i].name);
			if (k >= 0)
				w->wrap[i].callback = g_tramps[k];
		}
		w->next = g_wrapped;
		g_wrapped = w;
	}
	for (i = 0; i < n; i++)
		wrapped += is_trampoline(w->wrap[i].callback);
	info->protocols = w->wrap; /* lws prefers .protocols over .pprotocols */
	pthread_mutex_unlock(&g_wrap_lock);
	free(snap);
	return wrapped;
}

API int lwsobs_wrap_protocols(struct lws_context_creation_info *info)
{
	if (!info)
		return -1;
	if (!active())
		return 0;
	return wrap_info(info);
}

API int lwsobs_wrap_vhost_protocols(struct lws_context_creation_info *info)
{
	return lwsobs_wrap_protocols(info);
}

API void lwsobs_flush(void)
{
	if (!active())
		return;
	pthread_mutex_lock(&g.lock);
	if (g.state == ST_ACTIVE)
		flush_locked(clock_ns(CLOCK_MONOTONIC));
	pthread_mutex_unlock(&g.lock);
}

API int lwsobs_enabled(void)
{
	return active();
}

/* -- the real lws functions (for interposing and for the linked-mode wrappers) -------------- */

typedef struct lws_context *(*create_context_fn)(const struct lws_context_creation_info *);
typedef struct lws_vhost *(*create_vhost_fn)(struct lws_context *,
					     const struct lws_context_creation_info *);
typedef void (*context_destroy_fn)(struct lws_context *);
typedef int (*cowap_fn)(const struct lws_context *, const struct lws_protocols *);

/*
 * The definition of `name` in libwebsockets itself.  RTLD_NEXT finds it when we come first in
 * the lookup order (LD_PRELOAD, or linked before -lwebsockets); otherwise open the library our
 * own lws imports resolve to and ask it directly.
 */
static void *resolve_real(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name); /* never ourselves */
	Dl_info di;

	if (p)
		return p;
	if (dladdr((void *)lws_get_library_version, &di) && di.dli_fname) {
		void *h = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);

		if (h) {
			p = dlsym(h, name);
			dlclose(h);
			if (p)
				return p;
		}
	}
	fprintf(stderr, "lwsobs: cannot find libwebsockets' %s\n", name);
	return NULL;
}

#define REAL(type, name)                                                                     \
	static type real_##name;                                                             \
	if (!__atomic_load_n(&real_##name, __ATOMIC_ACQUIRE))                                \
		__atomic_store_n(&real_##name, (type)resolve_real(#name),                     \
				 __ATOMIC_RELEASE);                                          \
	if (!real_##name)                                                                    \
		abort();

static void context_created(struct lws_context *ctx)
{
	struct ctxent *e;
	int sched;

	pthread_mutex_lock(&g.lock);
	e = ctx_find(ctx);
	if (e) /* a context that died unseen at the same address: forget, do not touch lws */
		memset(e, 0, sizeof(*e));
	e = ctx_get(ctx);
	sched = g.state == ST_ACTIVE && ctx_want_timer(e, clock_ns(CLOCK_MONOTONIC),
							FLUSH_AFTER_NS);
	pthread_mutex_unlock(&g.lock);
	if (sched)
		ctx_schedule(e, ctx, FLUSH_AFTER_NS);
}

API struct lws_context *lws_create_context(const struct lws_context_creation_info *info)
{
	struct lws_context_creation_info copy;
	struct lws_context *ctx;

	REAL(create_context_fn, lws_create_context);
	if (!info || !active())
		return real_lws_create_context(info);
	copy = *info;
	wrap_info(&copy);
	t_in_create++;
	ctx = real_lws_create_context(&copy);
	t_in_create--;
	if (ctx)
		context_created(ctx);
	return ctx;
}

API struct lws_vhost *lws_create_vhost(struct lws_context *context,
				       const struct lws_context_creation_info *info)
{
	struct lws_context_creation_info copy;
	struct lws_vhost *vh;

	REAL(create_vhost_fn, lws_create_vhost);
	if (!info || !active())
		return real_lws_create_vhost(context, info);
	copy = *info;
	wrap_info(&copy);
	t_in_create++;
	vh = real_lws_create_vhost(context, &copy);
	t_in_create--;
	return vh;
}

static void destroy(struct lws_context *ctx, context_destroy_fn real)
{
	struct ctxent *e;
	int first = 1, done;

	if (!ctx || !active()) {
		real(ctx);
		return;
	}
	pthread_mutex_lock(&g.lock);
	e = ctx_get(ctx);
	if (e) {
		first = !e->destroying;
		e->destroying = 1;
		ctx_cancel(e);
	}
	pthread_mutex_unlock(&g.lock);
	if (first && !t_destroy_depth)
		emit_pseudo(PSEUDO_CTX_DESTROY_BEGIN, ctx, 1);

	t_destroy_depth++;
	real(ctx);
	t_destroy_depth--;
	if (t_destroy_depth)
		return; /* lws called itself: the outermost call decides */

	/*
	 * Done when the context's last PROTOCOL_DESTROY went by, or it never had a callback of
	 * ours.  Otherwise lws deferred the teardown (called from inside service, or an event
	 * library finishing asynchronously) and a later call, also interposed, finishes it.
	 */
	pthread_mutex_lock(&g.lock);
	e = ctx_find(ctx);
	done = !e || e->saw_pd || !e->seen_cb;
	if (done && e)
		memset(e, 0, sizeof(*e));
	pthread_mutex_unlock(&g.lock);
	if (done)
		emit_pseudo(PSEUDO_CTX_DESTROYED, ctx, 1);
}

API void lws_context_destroy(struct lws_context *ctx)
{
	REAL(context_destroy_fn, lws_context_destroy);
	destroy(ctx, real_lws_context_destroy);
}

API void lwsobs_context_destroy(struct lws_context *ctx)
{
	REAL(context_destroy_fn, lws_context_destroy);
	destroy(ctx, real_lws_context_destroy);
}

/*
 * lws matches the protocol by callback pointer and name (4.1.6 lib/core-net/pollfd.c).  Apps
 * pass a pointer into their own array, whose callback is the original, while the vhost holds
 * the trampoline: ask once for each.
 */
static int cowap(const struct lws_context *ctx, const struct lws_protocols *p, cowap_fn real)
{
	int r = real(ctx, p);

	if (p && p->callback && !is_trampoline(p->callback)) {
		int k = slot_find(p->callback, p->name);

		if (k >= 0) {
			struct lws_protocols tmp = *p;

			tmp.callback = g_tramps[k];
			real(ctx, &tmp);
		}
	}
	return r;
}

API int lws_callback_on_writable_all_protocol(const struct lws_context *ctx,
					      const struct lws_protocols *p)
{
	REAL(cowap_fn, lws_callback_on_writable_all_protocol);
	return cowap(ctx, p, real_lws_callback_on_writable_all_protocol);
}

API int lwsobs_callback_on_writable_all_protocol(const struct lws_context *ctx,
						 const struct lws_protocols *p)
{
	REAL(cowap_fn, lws_callback_on_writable_all_protocol);
	return cowap(ctx, p, real_lws_callback_on_writable_all_protocol);
}
