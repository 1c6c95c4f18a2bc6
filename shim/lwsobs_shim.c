/*
 * lwsobs_shim.c - forward libwebsockets protocol callbacks as wire-v1 NDJSON datagrams.
 *
 * See lwsobs.h for the API and shim/README.md for the design and the version matrix.  In short:
 *
 *  - one build serves every libwebsockets from 4.1 to 5.0: the shim links no libwebsockets and
 *    resolves every lws function at run time in the library the app uses; it checks that
 *    library's version first and turns itself into a pass-through (one warning, a HELLO that
 *    says why) on a version it does not know;
 *  - it relies only on layouts that are the same in every supported version: the first two
 *    fields of struct lws_context_creation_info (iface, protocols), struct
 *    lws_protocols, the first fields of struct lws_client_connect_info and
 *    struct lws_filter_network_conn_args; the creation info is copied through the kernel
 *    (a pipe) at a generous size, so no compile-time sizeof is ever trusted;
 *  - every protocol callback is replaced by a trampoline (a fixed table of MAX_SLOTS static
 *    functions; slot = original callback + protocol name) that formats one line, appends it to
 *    a process-wide batch and calls the original callback; lws's own default protocol (a vhost
 *    without protocols: lws file servers) and every protocol that delegates to lws's
 *    lws_callback_http_dummy() are seen by interposing that function;
 *  - nothing in the callback path allocates or waits: the line is formatted into a stack
 *    buffer with hand-written formatters and appended under a mutex held for a memcpy (and, for
 *    a full batch, one send(MSG_DONTWAIT) on a non-blocking datagram socket);
 *  - a thread of ours (all signals blocked) sends a batch 20 ms after its first line and a
 *    HEARTBEAT after 2 s without a send: the shim never arms an lws timer, so the app's event
 *    loop runs exactly as it would without it;
 *  - a fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) whose disposition was the default
 *    sends what is batched and a FATAL line, then dies by the same signal.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* for the types only: no lws function is called directly (see struct lws_api below) */
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
#define MAX_CTX 16	     /* contexts whose teardown is followed */
#define SRC_MAX 64
#define PROG_MAX 32	     /* the service's `source` label keeps 32 characters of the name */
#define INFO_COPY_MAX 4096   /* creation info copied: lws 5.0's is ~900 bytes */
#define MAX_TOKENS 256	     /* lws header tokens scanned by name at start */

#define NS_PER_MS 1000000LL
#define FLUSH_AFTER_NS (20 * NS_PER_MS)
#define HEARTBEAT_MS 2000
#define HEARTBEAT_NS (HEARTBEAT_MS * NS_PER_MS)
#define RECONNECT_NS (1000 * NS_PER_MS)

#define SHIM_VERSION "2"

/* supported libwebsockets versions, major * 100 + minor */
#define LWS_MIN_SUPPORTED 401
#define LWS_MAX_SUPPORTED 500

enum { ST_UNINIT = 0, ST_OFF = 1, ST_ACTIVE = 2, ST_DONE = 3, ST_PASS = 4 };

enum { PSEUDO_HELLO = -1, PSEUDO_HEARTBEAT = -2, PSEUDO_CTX_DESTROY_BEGIN = -3,
       PSEUDO_CTX_DESTROYED = -4, PSEUDO_BYE = -5, PSEUDO_LISTEN = -6,
       PSEUDO_HTTP_STATUS = -7, PSEUDO_FATAL = -8 };

/*
 * The layout prefix of struct lws_context_creation_info that every version from 4.1 to 5.0
 * shares (the rest moves with the version and the build options).
 */
struct info_prefix {
	const char *iface;
	const struct lws_protocols *protocols;
};
_Static_assert(offsetof(struct info_prefix, protocols) ==
		       offsetof(struct lws_context_creation_info, protocols),
	       "creation info prefix");

/* -- the lws functions, resolved at run time in the app's libwebsockets -------------------------- */

typedef struct lws_context *(*create_context_fn)(const struct lws_context_creation_info *);
typedef struct lws_vhost *(*create_vhost_fn)(struct lws_context *,
					     const struct lws_context_creation_info *);
typedef void (*context_destroy_fn)(struct lws_context *);
typedef int (*cowap_fn)(const struct lws_context *, const struct lws_protocols *);
typedef int (*status_fn)(struct lws *, unsigned int, unsigned char **, unsigned char *);
typedef struct lws *(*connect_fn)(const struct lws_client_connect_info *);

#define LWS_FUNCS(X)                                                                         \
	X(1, const char *, lws_get_library_version, (void))                                  \
	X(1, struct lws_context *, lws_get_context, (const struct lws *))                    \
	X(1, struct lws_vhost *, lws_get_vhost, (struct lws *))                              \
	X(1, struct lws *, lws_get_network_wsi, (struct lws *))                              \
	X(1, struct lws *, lws_get_parent, (const struct lws *))                             \
	X(1, lws_sockfd_type, lws_get_socket_fd, (struct lws *))                             \
	X(1, const char *, lws_get_vhost_name, (struct lws_vhost *))                         \
	X(1, int, lws_get_vhost_listen_port, (struct lws_vhost *))                           \
	X(1, int, lws_is_ssl, (struct lws *))                                                \
	X(1, const struct lws_protocols *, lws_get_protocol, (struct lws *))                 \
	X(1, int, lws_hdr_total_length, (struct lws *, enum lws_token_indexes))              \
	X(1, int, lws_hdr_copy, (struct lws *, char *, int, enum lws_token_indexes))         \
	X(1, const unsigned char *, lws_token_to_string, (enum lws_token_indexes))           \
	X(1, const char *, lws_get_peer_simple, (struct lws *, char *, size_t))              \
	X(1, unsigned int, lws_http_client_http_response, (struct lws *))                    \
	X(1, struct lws_context *, lws_create_context, (const struct lws_context_creation_info *)) \
	X(1, struct lws_vhost *, lws_create_vhost,                                           \
	  (struct lws_context *, const struct lws_context_creation_info *))                  \
	X(1, void, lws_context_destroy, (struct lws_context *))                              \
	X(1, int, lws_callback_on_writable_all_protocol,                                     \
	  (const struct lws_context *, const struct lws_protocols *))                        \
	X(1, int, lws_callback_http_dummy,                                                   \
	  (struct lws *, enum lws_callback_reasons, void *, void *, size_t))                 \
	X(1, int, lws_add_http_header_status,                                                \
	  (struct lws *, unsigned int, unsigned char **, unsigned char *))                   \
	X(1, struct lws *, lws_client_connect_via_info, (const struct lws_client_connect_info *)) \
	X(0, struct lws_vhost *, lws_get_vhost_by_name, (struct lws_context *, const char *)) \
	X(0, int, lws_vhost_foreach_listen_wsi,                                              \
	  (struct lws_context *, void *, int (*)(struct lws_dll2 *, void *)))                \
	X(0, const char *, lws_wsi_tag, (struct lws *))

#define API_FIELD(req_, ret_, name_, args_) ret_(*name_) args_;
static struct lws_api {
	LWS_FUNCS(API_FIELD)
} L;

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
	unsigned char used, destroying, saw_pd, seen_cb;
};

struct wrapped {
	struct wrapped *next;
	size_t n;
	struct lws_protocols *orig; /* snapshot of the app's array (n entries) */
	struct lws_protocols *wrap; /* the copy handed to lws (n entries + terminator) */
};

/*
 * The request-line tokens, by the name lws_token_to_string() gives them, and the method each
 * stands for.  lws numbers them differently per version and build: found by name at start.
 */
static const struct {
	const char *token, *method;
} g_verbs[] = {
	{ "get ", "GET" },	   { "post ", "POST" },	      { "head ", "HEAD" },
	{ "put ", "PUT" },	   { "patch ", "PATCH" },     { "delete ", "DELETE" },
	{ "options ", "OPTIONS" }, { "connect ", "CONNECT" },
};
#define N_VERBS (sizeof(g_verbs) / sizeof(g_verbs[0]))

struct tokens {
	int verb[N_VERBS]; /* the token of g_verbs[i], -1 where this lws has none */
	int get;	   /* = verb[0]: the path of an upgrade request */
	int method;	   /* ":method" (h2) */
};

static struct {
	pthread_mutex_t lock; /* batch, counters, socket, ctx table */
	pthread_cond_t wake;  /* the sender thread's: a batch started, or we are exiting */
	int state;
	int fd;
	int is_unix;
	int connected;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int64_t last_connect_try;
	char endpoint[160];
	char src[SRC_MAX + 1];
	char host[256];
	char lws_version[64];
	char unobserved[160]; /* why the shim passes through, for HELLO */
	int debug;
	int hello_sent;
	int thread_running;
	int thread_tried; /* one attempt per process: a failed start is not retried per line */
	uint64_t seq, drop, sent_lines, sent_dgrams, failed_dgrams;
	char batch[BATCH_CAP];
	size_t batch_len;
	uint64_t batch_lines;
	int64_t batch_first;
	int64_t last_send;
	struct ctxent ctxs[MAX_CTX];
	struct tokens tok;
} g = { .lock = PTHREAD_MUTEX_INITIALIZER, .fd = -1 };

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_wrap_lock = PTHREAD_MUTEX_INITIALIZER; /* slots, wrapped-array cache */
static struct slot g_slots[MAX_SLOTS];
static unsigned g_nslots; /* published with release; entries below it never change */
static unsigned g_unwrapped; /* protocols left unwrapped because the slot table was full */
static struct wrapped *g_wrapped;

/* the callback this thread is inside, so lws_callback_http_dummy() reports a call only once */
struct frame {
	const struct lws *wsi;
	int reason;
};
static __thread struct frame t_frame = { NULL, -1 };
static __thread int t_destroy_depth;
static __thread int t_vhosts_created; /* LISTEN lines sent inside lws_create_context() */

/* the request of the lws_client_connect_via_info() call this thread is inside */
static __thread struct {
	int set;
	const char *method, *path, *address;
	int port;
} t_client;

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

/*
 * `<name>@<host>:<pid>`: one process instance, whatever LWSOBS_SOURCE says.  LWSOBS_SOURCE
 * names the program (the service's `source` label, the part before '@'); when it already has
 * an '@' only `:<pid>` is added.  Two processes started with the same LWSOBS_SOURCE therefore
 * never share a `src` (their sequence numbers would corrupt each other), and a restart is a new
 * instance of the same program.  The pid always survives; the host is cut first.
 */
static void build_src(void)
{
	const char *env = getenv("LWSOBS_SOURCE");
	char name[SRC_MAX + 1], host[SRC_MAX + 1], pid[24];
	struct wbuf pb = { pid, 0, sizeof(pid) - 1, 0 };
	struct wbuf sb = { g.src, 0, SRC_MAX, 0 };
	size_t ln, lh = 0, room;
	int has_at;

	W_LIT(&pb, ":");
	w_u64(&pb, (uint64_t)getpid());

	if (env && *env) {
		has_at = strchr(env, '@') != NULL;
		ln = sanitize(name, env, has_at ? SRC_MAX - pb.len : PROG_MAX);
	} else {
		has_at = 0;
		ln = sanitize(name, program_invocation_short_name, PROG_MAX);
	}
	if (!ln)
		ln = sanitize(name, "lws", PROG_MAX);
	w_raw(&sb, name, ln);
	if (!has_at) {
		room = SRC_MAX - ln - 1 - pb.len;
		lh = sanitize(host, g.host, room);
		if (!lh)
			lh = sanitize(host, "localhost", room);
		W_LIT(&sb, "@");
		w_raw(&sb, host, lh);
	}
	w_raw(&sb, pid, pb.len);
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
 * with `,"r":` and ends with "}\n".  A line that starts a batch wakes the sender thread, which
 * sends the batch 20 ms later; a batch that would pass BATCH_LIMIT leaves at once.
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
	if (!g.batch_len) {
		g.batch_first = now;
		if (g.thread_running)
			pthread_cond_signal(&g.wake); /* the sender sleeps until a heartbeat is due */
	}
	memcpy(g.batch + g.batch_len, pre, b.len);
	memcpy(g.batch + g.batch_len + b.len, tail, tail_len);
	g.batch_len += line_len;
	g.batch_lines++;
	if (g.batch_len >= BATCH_LIMIT)
		flush_locked(now);
}

struct pseudo_args {
	struct lws_context *ctx;
	const struct lws *wsi;
	const char *vh;
	int port;   /* LISTEN */
	int count;  /* LISTEN: listen sockets the vhost opened, -1 when lws cannot tell (4.1) */
	int status; /* HTTP_STATUS */
	int sig;    /* FATAL */
};

static size_t pseudo_tail(char *buf, size_t cap, int r, const struct pseudo_args *a)
{
	struct wbuf b = { buf, 0, cap, 0 };

	W_LIT(&b, ",\"r\":");
	w_i64(&b, r);
	if (a && a->ctx) {
		w_key(&b, "ctx");
		w_hex(&b, (uintptr_t)a->ctx);
	}
	if (a && a->wsi) {
		w_key(&b, "wsi");
		w_hex(&b, (uintptr_t)a->wsi);
	}
	if (a && a->vh) {
		w_key(&b, "vh");
		w_text(&b, a->vh, strnlen(a->vh, 4 * TEXT_MAX), TEXT_MAX, 64);
	}
	switch (r) {
	case PSEUDO_HELLO:
		w_key(&b, "lws");
		w_text(&b, g.lws_version, strlen(g.lws_version), TEXT_MAX, 64);
		w_key(&b, "pid");
		w_u64(&b, (uint64_t)getpid());
		w_key(&b, "host");
		w_text(&b, g.host, strlen(g.host), TEXT_MAX, 64);
		W_LIT(&b, ",\"shim\":\"" SHIM_VERSION "\"");
		W_LIT(&b, ",\"hb\":");
		w_u64(&b, HEARTBEAT_MS);
		if (g.unobserved[0]) {
			w_key(&b, "unobserved");
			w_text(&b, g.unobserved, strlen(g.unobserved), TEXT_MAX, 8);
		}
		break;
	case PSEUDO_LISTEN:
		w_key(&b, "port");
		w_i64(&b, a ? a->port : 0);
		if (a && a->count > 0) {
			w_key(&b, "n");
			w_i64(&b, a->count);
		}
		break;
	case PSEUDO_HTTP_STATUS:
		w_key(&b, "status");
		w_i64(&b, a ? a->status : 0);
		break;
	case PSEUDO_FATAL:
		w_key(&b, "sig");
		w_i64(&b, a ? a->sig : 0);
		break;
	default:
		break;
	}
	W_LIT(&b, "}\n");
	return b.full ? 0 : b.len;
}

static void append_pseudo_locked(int r, const struct pseudo_args *a, int64_t now)
{
	char tail[2048];
	size_t n = pseudo_tail(tail, sizeof(tail), r, a);

	if (n)
		append_locked(tail, n, now);
}

static void append_hello_locked(void)
{
	g.hello_sent = 1;
	append_pseudo_locked(PSEUDO_HELLO, NULL, clock_ns(CLOCK_MONOTONIC));
}

/* -- contexts under teardown --------------------------------------------------------------- */

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
	/* full: recycle an entry not in teardown (a context freed behind our back leaves one) */
	for (i = 0; i < MAX_CTX && !e; i++)
		if (!g.ctxs[i].destroying)
			e = &g.ctxs[i];
	if (!e)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->used = 1;
	e->ctx = ctx;
	return e;
}

/* -- the sender thread ------------------------------------------------------------------------ */

/*
 * Sends a batch 20 ms after its first line, and a HEARTBEAT when nothing was sent for 2 s.
 * It sleeps on a CLOCK_MONOTONIC condition variable, so an idle app wakes once every 2 s, and
 * it never touches lws: the app's event loop (its poll timeouts, its timers) is not changed.
 */
static void *sender_main(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g.lock);
	while (g.state == ST_ACTIVE && g.thread_running) {
		int64_t now = clock_ns(CLOCK_MONOTONIC), due;
		struct timespec ts;

		due = g.batch_len ? g.batch_first + FLUSH_AFTER_NS : g.last_send + HEARTBEAT_NS;
		if (now >= due) {
			if (!g.batch_len)
				append_pseudo_locked(PSEUDO_HEARTBEAT, NULL, now);
			flush_locked(now);
			continue;
		}
		ts.tv_sec = (time_t)(due / 1000000000LL);
		ts.tv_nsec = (long)(due % 1000000000LL);
		pthread_cond_timedwait(&g.wake, &g.lock, &ts);
	}
	pthread_mutex_unlock(&g.lock);
	return NULL;
}

/* caller holds g.lock; the thread blocks every signal, so the app's signals reach the app */
static void start_sender_locked(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t tid;

	if (g.thread_running || g.thread_tried)
		return;
	g.thread_tried = 1;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	g.thread_running = 1;
	if (pthread_create(&tid, &attr, sender_main, NULL)) {
		g.thread_running = 0; /* batches still leave when full and at teardown */
		if (g.debug)
			fprintf(stderr, "lwsobs: no sender thread: batches leave when full\n");
	} else
		pthread_setname_np(tid, "lwsobs-send");
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* -- fatal signals ------------------------------------------------------------------------------ */

static const int g_fatal_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };

/*
 * Only async-signal-safe work: our own formatters, clock_gettime, send.  If the crash came
 * while this thread held the lock (inside the shim), nothing is sent rather than deadlock.
 * Then the default action is restored and the signal raised again: the process dies exactly
 * as it would have (same signal, same core dump), with its last lines delivered.
 */
static void fatal_handler(int sig)
{
	int saved = errno;
	struct sigaction dfl;

	if (!pthread_mutex_trylock(&g.lock)) {
		if (g.state == ST_ACTIVE) {
			struct pseudo_args a = { .sig = sig };
			int64_t now = clock_ns(CLOCK_MONOTONIC);

			append_pseudo_locked(PSEUDO_FATAL, &a, now);
			flush_locked(now);
			g.state = ST_DONE;
		}
		pthread_mutex_unlock(&g.lock);
	}
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	errno = saved;
	raise(sig); /* blocked until we return: then it kills with the default action */
}

/* install the handler only where the app has left the default disposition */
static void install_fatal_handlers(void)
{
	const char *env = getenv("LWSOBS_CRASH_HANDLER");
	size_t i;

	if (env && !strcmp(env, "0"))
		return;
	for (i = 0; i < sizeof(g_fatal_signals) / sizeof(g_fatal_signals[0]); i++) {
		struct sigaction old, sa;

		if (sigaction(g_fatal_signals[i], NULL, &old) || (old.sa_flags & SA_SIGINFO) ||
		    old.sa_handler != SIG_DFL)
			continue;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = fatal_handler;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART | SA_ONSTACK;
		sigaction(g_fatal_signals[i], &sa, NULL);
	}
}

/* -- resolving libwebsockets -------------------------------------------------------------------- */

static void drop_self_references(void);

/*
 * Every lws function comes from the libwebsockets the app has loaded, found through a symbol
 * we do not define (lws_get_library_version), so never from ourselves, whatever the load
 * order (LD_PRELOAD, or linked before or after -lwebsockets).  0 when the process has no
 * libwebsockets (a child that inherited LD_PRELOAD) or lacks a function we need.
 */
static int resolve_lws(const char **missing)
{
	void *anchor = dlsym(RTLD_DEFAULT, "lws_get_library_version");
	void *h = NULL;
	Dl_info di;

	*missing = NULL;
	if (!anchor)
		return 0;
	if (dladdr(anchor, &di) && di.dli_fname)
		h = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
	if (!h)
		h = RTLD_NEXT;
#define API_RESOLVE(req_, ret_, name_, args_)                                                \
	*(void **)&L.name_ = dlsym(h, #name_);                                               \
	if (!L.name_ && req_ && !*missing)                                                   \
		*missing = #name_;
	LWS_FUNCS(API_RESOLVE)
	drop_self_references();
	if (!L.lws_create_context && !*missing)
		*missing = "lws_create_context";
	/* the handle stays open: it only pins a library the app already holds */
	return *missing == NULL;
}

/* lws_get_library_version() is "4.3.10-v4.3.10-..." or "5.0.0-unknown": major * 100 + minor */
static int version_code(const char *v)
{
	char *end;
	long major, minor;

	if (!v)
		return -1;
	major = strtol(v, &end, 10);
	if (end == v || *end != '.')
		return -1;
	minor = strtol(end + 1, &end, 10);
	if (major < 0 || major > 99 || minor < 0 || minor > 99)
		return -1;
	return (int)(major * 100 + minor);
}

/* the header tokens by name: their numbers depend on the lws version and its build options */
static void find_tokens(void)
{
	struct tokens *t = &g.tok;
	int i;

	memset(t, -1, sizeof(*t));
	for (i = 0; i < MAX_TOKENS; i++) {
		const char *s = (const char *)L.lws_token_to_string((enum lws_token_indexes)i);
		size_t v;

		if (!s)
			break;
		if (!strcmp(s, ":method"))
			t->method = i;
		for (v = 0; v < N_VERBS; v++)
			if (!strcmp(s, g_verbs[v].token))
				t->verb[v] = i;
	}
	t->get = t->verb[0];
}

/* -- init, fork, exit ------------------------------------------------------------------------ */

/* the sender waits for CLOCK_MONOTONIC deadlines */
static void init_wake(void)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g.wake, &ca);
	pthread_condattr_destroy(&ca);
}

static void atfork_child(void)
{
	pthread_mutex_init(&g.lock, NULL);
	init_wake();
	g.thread_running = 0; /* threads do not survive fork(): the next line starts one */
	g.thread_tried = 0;
	if (g.state != ST_ACTIVE)
		return;
	g.batch_len = 0;
	g.batch_lines = 0;
	g.seq = g.drop = g.sent_lines = g.sent_dgrams = g.failed_dgrams = 0;
	build_src();
	g.hello_sent = 0; /* HELLO again, with the child's pid, before its first line */
}

/* HELLO (saying why) and, at exit, BYE: the service shows the app as unobserved */
static void pass_through(const char *why)
{
	int64_t now = clock_ns(CLOCK_MONOTONIC);

	snprintf(g.unobserved, sizeof(g.unobserved), "%s", why);
	fprintf(stderr, "lwsobs: %s: passing through, nothing observed\n", why);
	pthread_mutex_lock(&g.lock);
	g.state = ST_ACTIVE; /* just for these two lines */
	append_hello_locked();
	flush_locked(now);
	__atomic_store_n(&g.state, ST_PASS, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&g.lock);
}

static void init_once(void)
{
	const char *ep = getenv("LWSOBS_ENDPOINT");
	const char *dbg = getenv("LWSOBS_DEBUG");
	const char *missing = NULL;
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	int have_lws, code;
	char why[160];

	g.debug = dbg && *dbg && strcmp(dbg, "0");
	have_lws = resolve_lws(&missing);
	if (!have_lws && !missing) { /* no libwebsockets in this process: stay out of the way */
		__atomic_store_n(&g.state, ST_OFF, __ATOMIC_RELEASE);
		return;
	}
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
	init_wake();
	try_connect(now);
	g.last_send = now;
	pthread_atfork(NULL, NULL, atfork_child);

	if (L.lws_get_library_version)
		snprintf(g.lws_version, sizeof(g.lws_version), "%s", L.lws_get_library_version());
	code = version_code(g.lws_version);
	if (missing) {
		snprintf(why, sizeof(why), "libwebsockets %s lacks %s", g.lws_version, missing);
		pass_through(why);
		return;
	}
	if (code < LWS_MIN_SUPPORTED || code > LWS_MAX_SUPPORTED) {
		snprintf(why, sizeof(why), "libwebsockets %s not supported (4.1 to 5.0 are)",
			 g.lws_version);
		pass_through(why);
		return;
	}
	find_tokens();
	if (g.debug)
		fprintf(stderr, "lwsobs: src=%s endpoint=%s lws=%s%s\n", g.src, g.endpoint,
			g.lws_version, g.connected ? "" : " (not connected yet)");

	pthread_mutex_lock(&g.lock);
	__atomic_store_n(&g.state, ST_ACTIVE, __ATOMIC_RELEASE);
	append_hello_locked();
	flush_locked(now);
	start_sender_locked();
	pthread_mutex_unlock(&g.lock);
	install_fatal_handlers();
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
	int st = __atomic_load_n(&g.state, __ATOMIC_ACQUIRE);

	if (st != ST_ACTIVE && st != ST_PASS)
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
	g.state = ST_ACTIVE;
	append_pseudo_locked(PSEUDO_BYE, NULL, now);
	flush_locked(now);
	__atomic_store_n(&g.state, ST_DONE, __ATOMIC_RELEASE);
	g.thread_running = 0;
	pthread_cond_signal(&g.wake);
	if (g.debug)
		fprintf(stderr, "lwsobs: exit: %llu lines, %llu sent in %llu datagrams, "
				"%llu dropped (%llu datagrams failed)\n",
			(unsigned long long)g.seq, (unsigned long long)g.sent_lines,
			(unsigned long long)g.sent_dgrams, (unsigned long long)g.drop,
			(unsigned long long)g.failed_dgrams);
	pthread_mutex_unlock(&g.lock);
}

/* -- emitting -------------------------------------------------------------------------------- */

/*
 * Submit a formatted tail for a callback of `ctx` (NULL for pseudo-events) and act on
 * PROTOCOL_DESTROY: a vhost's last callbacks.  Inside our own lws_context_destroy() that flush
 * waits for CONTEXT_DESTROYED, which follows in the same call: one datagram instead of one per
 * protocol (unix datagram queues hold 10 by default).
 */
static void submit(const char *tail, size_t n, int reason, struct lws_context *ctx, int flush)
{
	struct ctxent *e = NULL;
	int64_t now;

	pthread_mutex_lock(&g.lock);
	if (g.state != ST_ACTIVE) {
		pthread_mutex_unlock(&g.lock);
		return;
	}
	now = clock_ns(CLOCK_MONOTONIC);
	start_sender_locked(); /* after fork(): the child's own thread (no-op otherwise) */
	append_locked(tail, n, now);
	if (ctx)
		e = ctx_get(ctx);
	if (e) {
		e->seen_cb = 1;
		if (reason == LWS_CALLBACK_PROTOCOL_DESTROY) {
			if (e->destroying) {
				e->saw_pd = 1;
				flush = 0;
			} else
				e->used = 0;
		}
	}
	if (flush)
		flush_locked(now);
	pthread_mutex_unlock(&g.lock);
}

static void emit_pseudo(int r, const struct pseudo_args *a, int flush)
{
	char tail[2048];
	size_t n = pseudo_tail(tail, sizeof(tail), r, a);

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

/* the client-family reasons lws may deliver first, inside lws_client_connect_via_info() */
static int is_client_first(int r)
{
	switch (r) {
	case LWS_CALLBACK_CLIENT_HTTP_BIND_PROTOCOL:
	case 105: /* LWS_CALLBACK_CONNECTING, lws 4.2+ */
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_WSI_CREATE:
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		return 1;
	}
	return 0;
}

static int has_token(struct lws *wsi, int tok)
{
	return tok >= 0 && L.lws_hdr_total_length(wsi, (enum lws_token_indexes)tok) > 0;
}

/* the request method of an h1/h2 server request, when lws has it */
static const char *request_method(struct lws *wsi, char *buf, size_t cap)
{
	const struct tokens *t = &g.tok;
	size_t v;

	for (v = 0; v < N_VERBS; v++)
		if (has_token(wsi, t->verb[v]))
			return g_verbs[v].method;
	if (has_token(wsi, t->method) &&
	    L.lws_hdr_copy(wsi, buf, (int)cap, (enum lws_token_indexes)t->method) > 0)
		return buf;
	return NULL;
}

static void w_int_field(struct wbuf *b, const char *key, int64_t v)
{
	w_key(b, key);
	w_i64(b, v);
}

static void w_str_field(struct wbuf *b, const char *key, const char *s, size_t max)
{
	if (!s)
		return;
	w_key(b, key);
	w_text(b, s, strnlen(s, 4 * max), max, 96);
}

/*
 * One callback as a line tail.  `pcol` is the pre-escaped `,"pcol":"..."` of the protocol whose
 * callback ran (NULL: take the name of the protocol bound to the wsi).
 */
static size_t callback_tail(char *buf, size_t cap, const char *pcol, size_t pcol_len,
			    struct lws *wsi, int r, void *user, void *in, size_t len,
			    struct lws_context **pctx)
{
	struct wbuf b = { buf, 0, cap - 2, 0 }; /* room for "}\n" is kept aside */
	struct lws_context *ctx = wsi ? L.lws_get_context(wsi) : NULL;
	struct lws_vhost *vh = wsi ? L.lws_get_vhost(wsi) : NULL;
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
		struct lws *nwsi = L.lws_get_network_wsi(wsi), *parent = L.lws_get_parent(wsi);

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
		w_int_field(&b, "fd", (int64_t)L.lws_get_socket_fd(wsi));
	}
	if (vh) {
		const char *name = L.lws_get_vhost_name(vh);

		if (name) {
			w_key(&b, "vh");
			w_text(&b, name, strnlen(name, 4 * TEXT_MAX), TEXT_MAX, 8192);
		}
	}
	if (pcol)
		w_raw(&b, pcol, pcol_len);
	else if (wsi) {
		const struct lws_protocols *p = L.lws_get_protocol(wsi);

		if (p && p->name)
			w_str_field(&b, "pcol", p->name, NAME_MAX_BYTES);
	}
	if (fake)
		W_LIT(&b, ",\"fake\":true");
	else if (wsi) {
		if (L.lws_is_ssl(wsi))
			W_LIT(&b, ",\"ssl\":true");
		else
			W_LIT(&b, ",\"ssl\":false");
		if (L.lws_wsi_tag) { /* lws 4.2 and later */
			const char *tag = L.lws_wsi_tag(wsi);

			if (tag && *tag) {
				w_key(&b, "tag");
				w_text(&b, tag, strnlen(tag, 4 * TEXT_MAX), TEXT_MAX, 4096);
			}
		}
	}
	if (t_client.set && wsi && is_client_first(r)) {
		/* the request of the connect call we are inside: once, on its first line */
		t_client.set = 0;
		w_str_field(&b, "method", t_client.method ? t_client.method : "GET", 32);
		w_str_field(&b, "uri", t_client.path, TEXT_MAX);
		w_str_field(&b, "addr", t_client.address, 256);
		if (t_client.port > 0)
			w_int_field(&b, "port", t_client.port);
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
		/* cli_addr is the first field of lws_filter_network_conn_args in 4.1 to 5.0 */
		const struct sockaddr_storage *cli = user;

		w_int_field(&b, "afd", (int64_t)(intptr_t)in);
		if (cli && sockaddr_text((const struct sockaddr *)cli, tmp, sizeof(tmp))) {
			w_key(&b, "peer");
			w_text(&b, tmp, strlen(tmp), TEXT_MAX, 8);
		}
		if (vh)
			w_int_field(&b, "port", L.lws_get_vhost_listen_port(vh));
		break;
	}
	case LWS_CALLBACK_WSI_DESTROY:
		if (vh)
			w_int_field(&b, "port", L.lws_get_vhost_listen_port(vh));
		break;
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		if (wsi) {
			unsigned st = L.lws_http_client_http_response(wsi);

			if (st)
				w_int_field(&b, "status", st);
		}
		/* fallthrough */
	case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		/* lws_get_peer_simple() reads the nwsi's fd; skip the syscall when there is none */
		if (wsi && L.lws_get_socket_fd(L.lws_get_network_wsi(wsi)) >= 0) {
			const char *p = L.lws_get_peer_simple(wsi, tmp, sizeof(tmp));

			/* on failure lws writes "getpeername: <error>" into the buffer */
			if (p && *p && strncmp(p, "getpeername", 11)) {
				w_key(&b, "peer");
				w_text(&b, p, strnlen(p, sizeof(tmp)), TEXT_MAX, 8);
			}
		}
		break;
	case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
		w_in_text(&b, "upg", in, len);
		if (wsi && has_token(wsi, g.tok.get)) {
			char path[TEXT_MAX + 1];

			if (L.lws_hdr_copy(wsi, path, sizeof(path),
					   (enum lws_token_indexes)g.tok.get) > 0) {
				w_key(&b, "uri");
				w_text(&b, path, strnlen(path, sizeof(path)), TEXT_MAX, 96);
			}
		}
		break;
	case LWS_CALLBACK_CLIENT_HTTP_REDIRECT:
		/* in: the Location, NUL-terminated; len: the status, not a length */
		if (in)
			w_str_field(&b, "uri", (const char *)in, TEXT_MAX);
		if (len >= 100 && len <= 999)
			w_int_field(&b, "status", (int64_t)len);
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
	size_t n = callback_tail(tail, sizeof(tail), s && s->has_name ? s->pcol : NULL,
				 s ? s->pcol_len : 0, wsi, r, user, in, len, &ctx);

	if (!n) { /* cannot happen with the bounds above; keep the seq honest anyway */
		struct wbuf b = { tail, 0, sizeof(tail), 0 };

		W_LIT(&b, ",\"r\":");
		w_i64(&b, r);
		W_LIT(&b, "}\n");
		n = b.len;
	}
	submit(tail, n, r, ctx, r == LWS_CALLBACK_PROTOCOL_DESTROY);
}

static int observing(void)
{
	return __atomic_load_n(&g.state, __ATOMIC_ACQUIRE) == ST_ACTIVE;
}

/* -- trampolines ----------------------------------------------------------------------------- */

static int dispatch(unsigned idx, struct lws *wsi, enum lws_callback_reasons reason, void *user,
		    void *in, size_t len)
{
	const struct slot *s = &g_slots[idx];
	struct frame saved = t_frame;
	int ret;

	if (observing() && !is_noise((int)reason)) {
		int err = errno;

		emit_callback(s, wsi, (int)reason, user, in, len);
		errno = err;
	}
	t_frame.wsi = wsi;
	t_frame.reason = (int)reason;
	ret = s->orig(wsi, reason, user, in, len);
	t_frame = saved;
	return ret;
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
 * The wrapped copy of a protocols array (n entries), made once per distinct array and kept
 * for the life of the process (lws copies it into each vhost; the app may wrap long before it
 * creates).  NULL when out of memory: the caller then leaves the app's array alone.
 */
static const struct lws_protocols *wrapped_copy(const struct lws_protocols *src, size_t n)
{
	struct wrapped *w;
	size_t i;

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
			return NULL;
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
	pthread_mutex_unlock(&g_wrap_lock);
	return w->wrap;
}

/* how many protocols of `p` the copy wraps (or -1); 0 when none needed wrapping */
static int wrap_array(const struct lws_protocols *src, const struct lws_protocols **out)
{
	const struct lws_protocols *w;
	size_t n = 0, i, todo = 0;
	int wrapped = 0;

	*out = src;
	if (!src)
		return 0;
	while (src[n].callback && n < 4096)
		n++;
	for (i = 0; i < n; i++)
		todo += !is_trampoline(src[i].callback);
	if (!todo)
		return (int)n;
	w = wrapped_copy(src, n);
	if (!w)
		return -1;
	for (i = 0; i < n; i++)
		wrapped += is_trampoline(w[i].callback);
	*out = w;
	return wrapped;
}

/*
 * A copy of the app's creation info whose protocols point at the wrapped array.  The size of
 * struct lws_context_creation_info depends on the lws version and its build options (672 to
 * ~900 bytes from 4.1 to 5.0), so no compile-time size is trusted: up to INFO_COPY_MAX bytes
 * are copied through a pipe, which copies what is readable and stops, without a fault, where
 * the app's memory ends.  lws reads only its own size of it; the bytes past the app's struct
 * are never looked at.  Returns 0 (use the app's info unchanged) when nothing is to wrap or
 * the copy failed.
 *
 * .pprotocols (an array of pointers; its offset moves with the build) is never touched: lws
 * uses it only when .protocols is NULL, and then so do we.  Such vhosts, and lws's own default
 * protocol, are seen through lws_callback_http_dummy() where they use it.
 */
static int copy_info(const struct lws_context_creation_info *info, unsigned char *buf)
{
	struct info_prefix pre;
	const struct lws_protocols *wrapped;
	int fds[2];
	ssize_t n;

	memset(buf, 0, INFO_COPY_MAX);
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK))
		return 0;
	n = write(fds[1], info, INFO_COPY_MAX);
	if (n > 0)
		n = read(fds[0], buf, (size_t)n);
	close(fds[0]);
	close(fds[1]);
	if (n < (ssize_t)sizeof(pre))
		return 0;
	memcpy(&pre, buf, sizeof(pre));
	if (wrap_array(pre.protocols, &wrapped) <= 0 || wrapped == pre.protocols)
		return 0;
	pre.protocols = wrapped;
	memcpy(buf + offsetof(struct info_prefix, protocols), &pre.protocols,
	       sizeof(pre.protocols));
	return 1;
}

API int lwsobs_wrap_protocols(struct lws_context_creation_info *info)
{
	const struct lws_protocols *wrapped;
	int n;

	if (!info)
		return -1;
	if (!active())
		return 0;
	n = wrap_array(info->protocols, &wrapped);
	info->protocols = wrapped; /* the app's own struct: it asked us to */
	return n;
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

/* -- the interposed lws functions ------------------------------------------------------------- */

/* the real function: resolved by init; a process without lws never gets here */
#define REAL(name_)                                                                          \
	do {                                                                                 \
		pthread_once(&g_once, init_once);                                            \
		if (!L.name_)                                                                \
			*(void **)&L.name_ = dlsym(RTLD_NEXT, #name_);                       \
	} while (0)

static int count_listen(struct lws_dll2 *d, void *user)
{
	(void)d;
	(*(int *)user)++;
	return 0;
}

/* every listen socket of the context (an IPv4 and an IPv6 one per port, on 5.0): -1 unknown */
static int listen_sockets(struct lws_context *ctx)
{
	int n = 0;

	if (!L.lws_vhost_foreach_listen_wsi || !ctx)
		return -1;
	L.lws_vhost_foreach_listen_wsi(ctx, &n, count_listen);
	return n;
}

/*
 * LISTEN for a vhost that listens on a port (vhosts sharing a port share one socket); where lws
 * can enumerate listen sockets (4.3+), `n` says how many this vhost opened (before: `before`).
 */
static void vhost_created(struct lws_context *ctx, struct lws_vhost *vh, int before)
{
	struct pseudo_args a = { .ctx = ctx, .count = -1 };
	int after;

	if (!vh || !observing())
		return;
	after = listen_sockets(ctx);
	if (before >= 0 && after >= before)
		a.count = after - before;
	a.port = L.lws_get_vhost_listen_port(vh);
	a.vh = L.lws_get_vhost_name(vh);
	t_vhosts_created++;
	if (a.port > 0 && a.count != 0) /* 0: it shares an earlier vhost's socket */
		emit_pseudo(PSEUDO_LISTEN, &a, 0);
}

API struct lws_context *lws_create_context(const struct lws_context_creation_info *info)
{
	unsigned char copy[INFO_COPY_MAX] __attribute__((aligned(16)));
	const struct lws_context_creation_info *use = info;
	struct lws_context *ctx;
	int before = t_vhosts_created;

	REAL(lws_create_context);
	if (!L.lws_create_context)
		return NULL;
	if (!info || !active())
		return L.lws_create_context(info);
	if (copy_info(info, copy))
		use = (const struct lws_context_creation_info *)copy;
	ctx = L.lws_create_context(use);
	if (!ctx)
		return NULL;
	pthread_mutex_lock(&g.lock);
	{
		struct ctxent *e = ctx_find(ctx);

		if (e) /* a context that died unseen at the same address: forget it */
			memset(e, 0, sizeof(*e));
	}
	pthread_mutex_unlock(&g.lock);
	/* the default vhost, when lws created it without going through our lws_create_vhost */
	if (t_vhosts_created == before && L.lws_get_vhost_by_name)
		vhost_created(ctx, L.lws_get_vhost_by_name(ctx, "default"), -1);
	return ctx;
}

API struct lws_vhost *lws_create_vhost(struct lws_context *context,
				       const struct lws_context_creation_info *info)
{
	unsigned char copy[INFO_COPY_MAX] __attribute__((aligned(16)));
	const struct lws_context_creation_info *use = info;
	struct lws_vhost *vh;
	int before;

	REAL(lws_create_vhost);
	if (!L.lws_create_vhost)
		return NULL;
	if (!info || !active())
		return L.lws_create_vhost(context, info);
	if (copy_info(info, copy))
		use = (const struct lws_context_creation_info *)copy;
	before = listen_sockets(context);
	vh = L.lws_create_vhost(context, use);
	vhost_created(context, vh, before);
	return vh;
}

static void destroy(struct lws_context *ctx)
{
	struct pseudo_args a = { .ctx = ctx };
	struct ctxent *e;
	int first = 1, done;

	if (!ctx || !active()) {
		L.lws_context_destroy(ctx);
		return;
	}
	pthread_mutex_lock(&g.lock);
	e = ctx_get(ctx);
	if (e) {
		first = !e->destroying;
		e->destroying = 1;
	}
	pthread_mutex_unlock(&g.lock);
	if (first && !t_destroy_depth)
		emit_pseudo(PSEUDO_CTX_DESTROY_BEGIN, &a, 1);

	t_destroy_depth++;
	L.lws_context_destroy(ctx);
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
		emit_pseudo(PSEUDO_CTX_DESTROYED, &a, 1);
}

API void lws_context_destroy(struct lws_context *ctx)
{
	REAL(lws_context_destroy);
	if (L.lws_context_destroy)
		destroy(ctx);
}

API void lwsobs_context_destroy(struct lws_context *ctx)
{
	REAL(lws_context_destroy);
	if (L.lws_context_destroy)
		destroy(ctx); /* not through lws_context_destroy(): that name may bind to lws's */
}

/*
 * lws matches the protocol by callback pointer and name (4.1.6 lib/core-net/pollfd.c).  Apps
 * pass a pointer into their own array, whose callback is the original, while the vhost holds
 * the trampoline: ask once for each.
 */
static int cowap(const struct lws_context *ctx, const struct lws_protocols *p)
{
	int r;

	REAL(lws_callback_on_writable_all_protocol);
	if (!L.lws_callback_on_writable_all_protocol)
		return -1;
	r = L.lws_callback_on_writable_all_protocol(ctx, p);
	if (p && p->callback && !is_trampoline(p->callback)) {
		int k = slot_find(p->callback, p->name);

		if (k >= 0) {
			struct lws_protocols tmp = *p;

			tmp.callback = g_tramps[k];
			L.lws_callback_on_writable_all_protocol(ctx, &tmp);
		}
	}
	return r;
}

API int lws_callback_on_writable_all_protocol(const struct lws_context *ctx,
					      const struct lws_protocols *p)
{
	return cowap(ctx, p);
}

API int lwsobs_callback_on_writable_all_protocol(const struct lws_context *ctx,
						 const struct lws_protocols *p)
{
	return cowap(ctx, p);
}

/*
 * lws's own callback for protocols that do nothing special: its default protocol (a vhost
 * created without protocols, as lws file servers are), and every protocol whose callback is,
 * or ends by calling, lws_callback_http_dummy().  A call that a trampoline already reported
 * (the app's callback delegating to it) is not reported again.
 */
API int lws_callback_http_dummy(struct lws *wsi, enum lws_callback_reasons reason, void *user,
				void *in, size_t len)
{
	struct frame saved = t_frame;
	int ret;

	REAL(lws_callback_http_dummy);
	if (!L.lws_callback_http_dummy)
		return 0;
	if (observing() && !is_noise((int)reason) &&
	    !(saved.wsi == wsi && saved.reason == (int)reason)) {
		int err = errno;

		emit_callback(NULL, wsi, (int)reason, user, in, len);
		errno = err;
	}
	t_frame.wsi = wsi;
	t_frame.reason = (int)reason;
	ret = L.lws_callback_http_dummy(wsi, reason, user, in, len);
	t_frame = saved;
	return ret;
}

/*
 * Every server response status goes through here: the app's, lws's file server's and lws's
 * own refusals (h1 and h2 alike).  Reported as HTTP_STATUS before the status is written.
 */
API int lws_add_http_header_status(struct lws *wsi, unsigned int code, unsigned char **p,
				   unsigned char *end)
{
	REAL(lws_add_http_header_status);
	if (!L.lws_add_http_header_status)
		return 1;
	if (wsi && observing()) {
		unsigned st = code & 0xffffu; /* LWSAHH_CODE_MASK: the rest are flags */

		if (st >= 100 && st <= 999) {
			struct pseudo_args a = { .wsi = wsi, .status = (int)st };
			int err = errno;

			a.ctx = L.lws_get_context(wsi);
			emit_pseudo(PSEUDO_HTTP_STATUS, &a, 0);
			errno = err;
		}
	}
	return L.lws_add_http_header_status(wsi, code, p, end);
}

/*
 * The request of a client connection: its method, path, address and port travel on the first
 * client line lws delivers inside this call (the leading fields of the struct are the same in
 * 4.1 to 5.0).
 */
API struct lws *lws_client_connect_via_info(const struct lws_client_connect_info *i)
{
	__typeof__(t_client) saved = t_client;
	struct lws *wsi;

	REAL(lws_client_connect_via_info);
	if (!L.lws_client_connect_via_info)
		return NULL;
	if (i && observing()) {
		t_client.set = 1;
		t_client.method = i->method;
		t_client.path = i->path;
		t_client.address = i->address;
		t_client.port = i->port;
	}
	wsi = L.lws_client_connect_via_info(i);
	t_client = saved;
	return wsi;
}

/*
 * A handle that is the program itself (lws linked in statically, symbols exported) can hand
 * back our own interposers: never call ourselves as "the real one".  Our own addresses come
 * from hidden aliases: `&lws_create_context` inside this library goes through the GOT and may
 * name libwebsockets' definition.
 */
#define SELF_ALIAS(name_)                                                                    \
	extern __typeof__(name_) self_##name_                                                \
		__attribute__((alias(#name_), visibility("hidden")));
SELF_ALIAS(lws_create_context)
SELF_ALIAS(lws_create_vhost)
SELF_ALIAS(lws_context_destroy)
SELF_ALIAS(lws_callback_on_writable_all_protocol)
SELF_ALIAS(lws_callback_http_dummy)
SELF_ALIAS(lws_add_http_header_status)
SELF_ALIAS(lws_client_connect_via_info)

static void drop_self_references(void)
{
#define NOT_SELF(name_)                                                                      \
	if ((void *)L.name_ == (void *)&self_##name_)                                        \
		L.name_ = NULL;
	NOT_SELF(lws_create_context)
	NOT_SELF(lws_create_vhost)
	NOT_SELF(lws_context_destroy)
	NOT_SELF(lws_callback_on_writable_all_protocol)
	NOT_SELF(lws_callback_http_dummy)
	NOT_SELF(lws_add_http_header_status)
	NOT_SELF(lws_client_connect_via_info)
}
