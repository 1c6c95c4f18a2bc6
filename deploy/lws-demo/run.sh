#!/usr/bin/env bash
# Runs the lws test app twice under the lwsobs shim (LD_PRELOAD):
#   source $LWSOBS_SOURCE      HTTP/1.1 keep-alive, pipelining and the ws "echo" protocol on
#                              127.0.0.1:$LWS_DEMO_HTTP_PORT
#   source $LWSOBS_SOURCE-tls  TLS with ALPN h2,http/1.1 (HTTP/2 streams) on
#                              127.0.0.1:$LWS_DEMO_TLS_PORT
# The app binds 127.0.0.1 only, so the traffic generator shares this container's network
# namespace (docker-compose.yml). The shim takes addresses, never names (no DNS lookup inside
# an app), so the host of LWSOBS_ENDPOINT=udp://HOST:PORT is resolved here first.
# Exits when either app exits; SIGTERM stops both through lws_context_destroy().
set -euo pipefail

: "${LWS_DEMO_APP:?}" "${LWS_DEMO_SHIM:?}" "${LWS_DEMO_TLS_CERT:?}" "${LWS_DEMO_TLS_KEY:?}"
: "${LWS_DEMO_HTTP_PORT:=7681}" "${LWS_DEMO_TLS_PORT:=7443}"
: "${LWSOBS_ENDPOINT:=udp://127.0.0.1:7682}" "${LWSOBS_SOURCE:=lws-demo}"

resolve_endpoint() {
    local endpoint=$1 rest host port addr
    case $endpoint in
    udp://\[*) echo "$endpoint"; return ;;  # an IPv6 literal
    udp://*) rest=${endpoint#udp://} ;;
    *) echo "$endpoint"; return ;;  # unix:, off
    esac
    host=${rest%:*}
    port=${rest##*:}
    if [[ $host =~ ^[0-9.]+$ ]]; then
        echo "$endpoint"
        return
    fi
    for _ in $(seq 1 30); do  # lwsobs may still be starting
        addr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }') || true
        if [[ -n $addr ]]; then
            echo "udp://$addr:$port"
            return
        fi
        sleep 1
    done
    echo "run.sh: cannot resolve $host of LWSOBS_ENDPOINT=$endpoint" >&2
    return 1
}

endpoint=$(resolve_endpoint "$LWSOBS_ENDPOINT")
echo "run.sh: events to $endpoint as $LWSOBS_SOURCE and $LWSOBS_SOURCE-tls"

LD_PRELOAD=$LWS_DEMO_SHIM LWSOBS_ENDPOINT=$endpoint LWSOBS_SOURCE=$LWSOBS_SOURCE \
    "$LWS_DEMO_APP" --port "$LWS_DEMO_HTTP_PORT" &
plain=$!
LD_PRELOAD=$LWS_DEMO_SHIM LWSOBS_ENDPOINT=$endpoint LWSOBS_SOURCE=$LWSOBS_SOURCE-tls \
    "$LWS_DEMO_APP" --port "$LWS_DEMO_TLS_PORT" \
    --tls-cert "$LWS_DEMO_TLS_CERT" --tls-key "$LWS_DEMO_TLS_KEY" &
tls=$!

stopping=0
stop() { kill -TERM "$plain" "$tls" 2>/dev/null || true; }
trap 'stopping=1; stop' TERM INT
status=0
wait -n "$plain" "$tls" || status=$?
stop
wait "$plain" "$tls" 2>/dev/null || true
if ((stopping && status > 128)); then
    status=0  # asked to stop: the apps went through lws_context_destroy()
fi
exit "$status"
