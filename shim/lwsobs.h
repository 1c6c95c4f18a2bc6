/*
 * lwsobs.h - public API of liblwsobs, the lwsobs producer shim for libwebsockets.
 *
 * The shim forwards every lws protocol callback (except poll/lock noise) as one NDJSON line of
 * the wire-v1 format (shared/spec/wire-v1.md) to the lwsobs service, over a non-blocking
 * datagram socket.  Two ways to use it:
 *
 *  - linked: call lwsobs_wrap_protocols(&info) right before lws_create_context(&info) or
 *    lws_create_vhost(ctx, &info), and lwsobs_context_destroy(ctx) instead of
 *    lws_context_destroy(ctx) to get the CONTEXT_DESTROY_BEGIN/DESTROYED pseudo-events.
 *
 *  - preloaded: LD_PRELOAD=liblwsobs.so on an unmodified, dynamically linked lws app.  The
 *    shim interposes lws_create_context(), lws_create_vhost(), lws_context_destroy() and
 *    lws_callback_on_writable_all_protocol() and does the above by itself.
 *
 * Configuration comes from the environment, read once at the first use:
 *   LWSOBS_ENDPOINT  udp://127.0.0.1:7682 (default), udp://[::1]:P, udp://localhost:P,
 *                    unix:/path (datagram), unix:@abstract-name, or "off"
 *   LWSOBS_SOURCE    the wire `src` (default <program>@<host>:<pid>), sanitized to
 *                    [A-Za-z0-9._:@-]{1,64}
 *   LWSOBS_DEBUG     1: one line at start and a send/drop summary at exit on stderr
 *
 * All functions are safe to call when the shim is off (LWSOBS_ENDPOINT=off): they then do
 * nothing beyond what lws itself does.
 */
#ifndef LWSOBS_H
#define LWSOBS_H

#include <libwebsockets.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LWSOBS_VERSION "0.1.0"

/*
 * Replace info->protocols by a copy whose callbacks are lwsobs trampolines (each emits one
 * event, then tail-calls the original callback and returns its result).  Works for context
 * and vhost creation info alike (lws 4.x uses the same struct for both) and for
 * info->pprotocols (the copy is then put in info->protocols, which lws prefers).  Idempotent:
 * callbacks that are already trampolines are left alone.  The copy stays valid for the life
 * of the process (identical arrays share one copy).
 *
 * Returns the number of protocols now wrapped, 0 when the shim is off or there is nothing to
 * wrap, -1 on error (info is then unchanged).
 */
int lwsobs_wrap_protocols(struct lws_context_creation_info *info);

/* Same as lwsobs_wrap_protocols(); named for lws_create_vhost() call sites. */
int lwsobs_wrap_vhost_protocols(struct lws_context_creation_info *info);

/*
 * lws_context_destroy(ctx) between CONTEXT_DESTROY_BEGIN (-3) and CONTEXT_DESTROYED (-4),
 * then a flush.  -4 is emitted once the context's last PROTOCOL_DESTROY went by (lws may
 * defer teardown when called from inside service; -4 then follows the call that finished).
 */
void lwsobs_context_destroy(struct lws_context *ctx);

/*
 * lws_callback_on_writable_all_protocol() that also finds vhosts whose copy of `protocol`
 * carries the trampoline (lws matches by callback pointer and name).  Use it in linked mode
 * when passing a pointer into your own, unwrapped protocols array.
 */
int lwsobs_callback_on_writable_all_protocol(const struct lws_context *ctx,
					     const struct lws_protocols *protocol);

/* Send whatever is batched now (one datagram).  Never blocks. */
void lwsobs_flush(void);

/* 1 when events are being produced, 0 when off. */
int lwsobs_enabled(void);

#ifdef __cplusplus
}
#endif

#endif
