/*
 * lws_testapp - a small libwebsockets app to drive the lwsobs shim in tests.
 *
 * One process, server and/or client:
 *   server  HTTP/1.1 on 127.0.0.1:PORT.  "/" and "/hello" answer 200, anything else 404; every
 *           reply is deferred to LWS_CALLBACK_HTTP_WRITEABLE (headers, then body), so keep-alive
 *           and pipelined requests are served in order on one connection (lws 4.1.6).
 *           A websocket echo protocol, subprotocol "echo" (its writeable requests go through
 *           lws_callback_on_writable_all_protocol() with a pointer into our own array).
 *           --tls-cert/--tls-key: the same over TLS, ALPN "h2,http/1.1" (HTTP/2 streams).
 *           --dual-stack: an IPv6 socket on ::ffff:127.0.0.1 (still loopback only), so IPv4
 *           clients show up as IPv4-mapped IPv6 peers, as on a dual-stack listener.
 *   client  --client-port P: one HTTP GET of "/" and one ws connection ("echo", sends one
 *           message, waits for the echo, closes) to 127.0.0.1:P (--client-host, --client-path
 *           and --client-mode change that; lws follows 3xx redirects by itself).  Results go
 *           to stdout.
 *
 * Modes: plain (meant for LD_PRELOAD=liblwsobs.so), or --linked: lwsobs_wrap_protocols() before
 * lws_create_context() and lwsobs_context_destroy() at the end (only in the build linked with
 * the shim).
 *
 * Exits 0 after --seconds N (0: never) or on SIGTERM/SIGINT, always through
 * lws_context_destroy().  Prints "READY port=P pid=N" once listening.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libwebsockets.h>

#if !defined(LWS_TESTAPP_PLAIN)
#include "lwsobs.h"
#endif

static volatile sig_atomic_t interrupted;
static int linked;
static int deadline_ticks = -1; /* 50 ms ticks left, -1: no deadline */
static lws_sorted_usec_list_t tick_sul;
static struct lws_context *context;
static const char *client_host = "127.0.0.1";
static const char *client_path = "/";
static int crashable;		/* --crashable: GET /crash dereferences NULL */

/* -- server: http ---------------------------------------------------------------------------- */

struct pss_http {
	int status;
	int phase; /* 0 idle, 1 headers due, 2 body due */
	const char *body;
	size_t body_len;
};

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		   size_t len)
{
	struct pss_http *pss = user;
	uint8_t buf[LWS_PRE + 512], *start = &buf[LWS_PRE], *p = start,
						  *end = &buf[sizeof(buf) - 1];

	switch (reason) {
	case LWS_CALLBACK_HTTP:
		if (!pss)
			return -1;
		if (crashable && !strcmp((const char *)in, "/crash"))
			*(volatile int *)NULL = 1; /* a real fault: SIGSEGV */
		if (!strcmp((const char *)in, "/") || !strcmp((const char *)in, "/hello")) {
			pss->status = HTTP_STATUS_OK;
			pss->body = "hello\n";
		} else {
			pss->status = HTTP_STATUS_NOT_FOUND;
			pss->body = "not found\n";
		}
		pss->body_len = strlen(pss->body);
		pss->phase = 1;
		lws_callback_on_writable(wsi); /* reply later, from HTTP_WRITEABLE */
		return 0;

	case LWS_CALLBACK_HTTP_WRITEABLE:
		if (!pss || !pss->phase)
			break;
		if (pss->phase == 1) {
			if (lws_add_http_common_headers(wsi, (unsigned int)pss->status,
							"text/plain", pss->body_len, &p, end) ||
			    lws_finalize_write_http_header(wsi, start, &p, end))
				return 1;
			pss->phase = 2;
			lws_callback_on_writable(wsi);
			return 0;
		}
		memcpy(start, pss->body, pss->body_len);
		if (lws_write(wsi, start, pss->body_len, LWS_WRITE_HTTP_FINAL) !=
		    (int)pss->body_len)
			return 1;
		pss->phase = 0;
		/* keep-alive: back to waiting for headers; Connection: close: nonzero, close */
		if (lws_http_transaction_completed(wsi))
			return -1;
		return 0;

	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* -- server: ws echo ------------------------------------------------------------------------- */

static int cb_echo(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		   size_t len);
static const struct lws_protocols *echo_protocol(void);

/*
 * Ask for SERVER_WRITEABLE on every echo connection, naming the protocol by a pointer into our
 * own array, the way many apps do: lws matches it by callback and name, so this only works
 * under the shim because the shim handles that lookup (see shim/README.md).
 */
static void echo_writable_all(struct lws *wsi)
{
#if !defined(LWS_TESTAPP_PLAIN)
	if (linked) {
		lwsobs_callback_on_writable_all_protocol(lws_get_context(wsi), echo_protocol());
		return;
	}
#endif
	lws_callback_on_writable_all_protocol(lws_get_context(wsi), echo_protocol());
}

struct pss_echo {
	unsigned char buf[LWS_PRE + 1024];
	size_t len;
	int binary;
};

static int cb_echo(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		   size_t len)
{
	struct pss_echo *pss = user;

	switch (reason) {
	case LWS_CALLBACK_ESTABLISHED:
		pss->len = 0;
		break;
	case LWS_CALLBACK_RECEIVE:
		if (len > sizeof(pss->buf) - LWS_PRE)
			len = sizeof(pss->buf) - LWS_PRE;
		memcpy(pss->buf + LWS_PRE, in, len);
		pss->len = len;
		pss->binary = lws_frame_is_binary(wsi);
		echo_writable_all(wsi);
		break;
	case LWS_CALLBACK_SERVER_WRITEABLE:
		if (!pss->len)
			break;
		if (lws_write(wsi, pss->buf + LWS_PRE, pss->len,
			      pss->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT) < (int)pss->len)
			return -1;
		pss->len = 0;
		break;
	default:
		break;
	}
	return 0;
}

/* -- client ----------------------------------------------------------------------------------- */

static const char ws_msg[] = "hello-ws";

struct pss_client {
	int sent;
	size_t bytes;
};

static int cb_client(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
		     size_t len)
{
	struct pss_client *pss = user;
	unsigned char buf[LWS_PRE + 1024];

	switch (reason) {
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		printf("CLIENT error %s\n", in ? (const char *)in : "(null)");
		fflush(stdout);
		break;

	/* http */
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP: {
		char *px = (char *)buf + LWS_PRE;
		int lenx = (int)sizeof(buf) - LWS_PRE;

		if (lws_http_client_read(wsi, &px, &lenx) < 0)
			return -1;
		return 0;
	}
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
		if (pss)
			pss->bytes += len;
		return 0;
	case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
		printf("CLIENT http status=%u bytes=%zu\n", lws_http_client_http_response(wsi),
		       pss ? pss->bytes : 0);
		fflush(stdout);
		break;
	case LWS_CALLBACK_CLIENT_HTTP_REDIRECT:
		/* lws follows it (no LCCSCF_HTTP_NO_FOLLOW_REDIRECT); 0 lets it */
		printf("CLIENT redirect %d %s\n", (int)len, in ? (const char *)in : "(null)");
		fflush(stdout);
		if (pss)
			pss->bytes = 0;
		return 0;

	/* ws */
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		lws_callback_on_writable(wsi);
		break;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		if (!pss || pss->sent)
			break;
		memcpy(buf + LWS_PRE, ws_msg, sizeof(ws_msg) - 1);
		if (lws_write(wsi, buf + LWS_PRE, sizeof(ws_msg) - 1, LWS_WRITE_TEXT) <
		    (int)sizeof(ws_msg) - 1)
			return -1;
		pss->sent = 1;
		break;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		printf("CLIENT ws echo %s\n",
		       len == sizeof(ws_msg) - 1 && !memcmp(in, ws_msg, len) ? "ok" : "mismatch");
		fflush(stdout);
		lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
		return -1;
	case LWS_CALLBACK_CLIENT_CLOSED:
		printf("CLIENT ws closed\n");
		fflush(stdout);
		break;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols protocols[] = {
	{ "http", cb_http, sizeof(struct pss_http), 0, 0, NULL, 0 },
	{ "echo", cb_echo, sizeof(struct pss_echo), 1024, 0, NULL, 0 },
	{ "client", cb_client, sizeof(struct pss_client), 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 }
};

static const struct lws_protocols *echo_protocol(void)
{
	return &protocols[1];
}

static void client_connect(int port, int ws)
{
	struct lws_client_connect_info i;

	memset(&i, 0, sizeof(i));
	i.context = context;
	i.address = client_host;
	i.port = port;
	i.path = ws ? "/" : client_path;
	i.host = i.address;
	i.origin = i.address;
	i.local_protocol_name = "client";
	i.alpn = "http/1.1";
	if (ws)
		i.protocol = "echo";
	else
		i.method = "GET";
	if (!lws_client_connect_via_info(&i)) {
		printf("CLIENT connect %s failed\n", ws ? "ws" : "http");
		fflush(stdout);
	}
}

/* -- main ------------------------------------------------------------------------------------ */

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void tick(lws_sorted_usec_list_t *sul)
{
	if (deadline_ticks > 0 && !--deadline_ticks)
		interrupted = 1;
	lws_sul_schedule(context, 0, sul, tick, 50 * LWS_US_PER_MS);
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--port P] [--dual-stack] [--tls-cert PATH --tls-key PATH]\n"
		"       [--client-port P] [--client-host HOST] [--client-path PATH]\n"
		"       [--client-mode both|http|ws] [--seconds N] [--linked] [--debug]\n"
		"  --port P            serve HTTP/1.1 + ws echo on 127.0.0.1:P (0: no server)\n"
		"  --dual-stack        listen on an IPv6 socket bound to ::ffff:127.0.0.1 instead\n"
		"  --tls-cert PATH     serve over TLS with this PEM certificate, ALPN h2,http/1.1\n"
		"  --tls-key PATH      its PEM private key (both or neither)\n"
		"  --client-port P     one http GET and one ws echo exchange with 127.0.0.1:P\n"
		"  --client-host HOST  connect to HOST instead of 127.0.0.1 (a name is resolved\n"
		"                      by lws, blocking, inside the connect call)\n"
		"  --client-path PATH  the path of the http GET (default /; 3xx are followed)\n"
		"  --client-mode M     both (default), http (only the GET) or ws (only the echo)\n"
		"  --seconds N         exit after N seconds (default 0: on SIGTERM/SIGINT only)\n"
		"  --linked            wrap protocols with lwsobs_wrap_protocols()\n"
		"  --mount DIR         an lws file server instead: no protocols of ours, DIR\n"
		"                      mounted at / (lws's own default protocol serves it)\n"
		"  --second-port P     a second vhost listening on 127.0.0.1:P (never used)\n"
		"  --crashable         GET /crash makes the app crash with SIGSEGV\n"
		"  --debug             lws notice and info logs on stderr\n",
		argv0);
}

int main(int argc, char **argv)
{
	struct lws_context_creation_info info;
	int port = 0, client_port = 0, seconds = 0, debug = 0, n = 0, i;
	int client_http = 1, client_ws = 1, dual_stack = 0, second_port = 0;
	const char *tls_cert = NULL, *tls_key = NULL, *mount_dir = NULL;
	static struct lws_http_mount mount;
	struct sigaction sa;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--port") && i + 1 < argc)
			port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--client-port") && i + 1 < argc)
			client_port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--client-host") && i + 1 < argc)
			client_host = argv[++i];
		else if (!strcmp(argv[i], "--client-path") && i + 1 < argc)
			client_path = argv[++i];
		else if (!strcmp(argv[i], "--client-mode") && i + 1 < argc) {
			const char *m = argv[++i];

			client_http = !strcmp(m, "both") || !strcmp(m, "http");
			client_ws = !strcmp(m, "both") || !strcmp(m, "ws");
			if (!client_http && !client_ws) {
				usage(argv[0]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--tls-cert") && i + 1 < argc)
			tls_cert = argv[++i];
		else if (!strcmp(argv[i], "--tls-key") && i + 1 < argc)
			tls_key = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--mount") && i + 1 < argc)
			mount_dir = argv[++i];
		else if (!strcmp(argv[i], "--second-port") && i + 1 < argc)
			second_port = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--crashable"))
			crashable = 1;
		else if (!strcmp(argv[i], "--dual-stack"))
			dual_stack = 1;
		else if (!strcmp(argv[i], "--linked"))
			linked = 1;
		else if (!strcmp(argv[i], "--debug"))
			debug = 1;
		else {
			usage(argv[0]);
			return 2;
		}
	}
	if (!tls_cert != !tls_key) {
		fprintf(stderr, "--tls-cert and --tls-key go together\n");
		usage(argv[0]);
		return 2;
	}
#if defined(LWS_TESTAPP_PLAIN)
	if (linked) {
		fprintf(stderr, "this build is not linked with liblwsobs: use lws_testapp\n");
		return 2;
	}
#endif

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: the signal ends the poll wait */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	lws_set_log_level(debug ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO : LLL_ERR | LLL_WARN,
			  NULL);

	memset(&info, 0, sizeof(info));
	info.port = port ? port : CONTEXT_PORT_NO_LISTEN;
	info.iface = port ? "127.0.0.1" : NULL;
	/* lws 4.1.6 with IPv6 on binds an IPv4 address "iface" to [::] (all interfaces) */
	info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
	if (dual_stack && port) {
		/* an AF_INET6 socket on the IPv4-mapped loopback address, IPV6_V6ONLY off */
		info.iface = "::ffff:127.0.0.1";
		info.options = LWS_SERVER_OPTION_IPV6_V6ONLY_MODIFY;
	}
	info.vhost_name = "lwsobs-test";
	info.protocols = protocols;
	if (mount_dir) {
		/* the usual shape of an lws file server: mounts, no protocol list of its own */
		mount.mountpoint = "/";
		mount.mountpoint_len = 1;
		mount.origin = mount_dir;
		mount.def = "index.html";
		mount.origin_protocol = LWSMPRO_FILE;
		info.mounts = &mount;
		info.protocols = NULL;
	}
	if (tls_cert) {
		/* the server vhost speaks TLS only; ALPN picks h2 or http/1.1 per connection */
		info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
		info.ssl_cert_filepath = tls_cert;
		info.ssl_private_key_filepath = tls_key;
		info.alpn = "h2,http/1.1";
	}
#if !defined(LWS_TESTAPP_PLAIN)
	if (linked) {
		int w = lwsobs_wrap_protocols(&info);

		fprintf(stderr, "lws_testapp: lwsobs_wrap_protocols: %d\n", w);
	}
#endif
	context = lws_create_context(&info);
	if (!context) {
		fprintf(stderr, "lws_testapp: lws_create_context failed\n");
		return 1;
	}
	if (second_port) {
		struct lws_context_creation_info vi = info;

		vi.port = second_port;
		vi.vhost_name = "lwsobs-second";
		if (!lws_create_vhost(context, &vi)) {
			fprintf(stderr, "lws_testapp: second vhost failed\n");
			lws_context_destroy(context);
			return 1;
		}
	}
	if (seconds > 0)
		deadline_ticks = seconds * 20;
	lws_sul_schedule(context, 0, &tick_sul, tick, 50 * LWS_US_PER_MS);

	printf("READY port=%d pid=%d\n", port, (int)getpid());
	fflush(stdout);

	if (client_port) {
		if (client_http)
			client_connect(client_port, 0);
		if (client_ws)
			client_connect(client_port, 1);
	}

	while (n >= 0 && !interrupted)
		n = lws_service(context, 0);

	lws_sul_schedule(context, 0, &tick_sul, NULL, LWS_SET_TIMER_USEC_CANCEL);
#if !defined(LWS_TESTAPP_PLAIN)
	if (linked)
		lwsobs_context_destroy(context);
	else
#endif
		lws_context_destroy(context);

	printf("EXIT\n");
	fflush(stdout);
	return 0;
}
