"""libwebsockets callback reason numbers (LWS_CALLBACK_*) by name, for lws 4.1 through 5.0.

The numbers are ABI: lws has never renumbered one, only added and (once) removed. A collector
keyed by number therefore serves every version, and a number it does not know is kept as an
opaque `UNKNOWN_<n>` rather than refused. Negative numbers are the wire's pseudo-events.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Final

from lwsobs.sources.lws.wire import PseudoEvent


class LwsReason(IntEnum):
    """`enum lws_callback_reasons` without the LWS_CALLBACK_ prefix (68, 87, 88 are unused)."""

    ESTABLISHED = 0
    CLIENT_CONNECTION_ERROR = 1
    CLIENT_FILTER_PRE_ESTABLISH = 2
    CLIENT_ESTABLISHED = 3
    CLOSED = 4
    CLOSED_HTTP = 5
    RECEIVE = 6
    RECEIVE_PONG = 7
    CLIENT_RECEIVE = 8
    CLIENT_RECEIVE_PONG = 9
    CLIENT_WRITEABLE = 10
    SERVER_WRITEABLE = 11
    HTTP = 12
    HTTP_BODY = 13
    HTTP_BODY_COMPLETION = 14
    HTTP_FILE_COMPLETION = 15
    HTTP_WRITEABLE = 16
    FILTER_NETWORK_CONNECTION = 17
    FILTER_HTTP_CONNECTION = 18
    SERVER_NEW_CLIENT_INSTANTIATED = 19
    FILTER_PROTOCOL_CONNECTION = 20
    OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS = 21
    OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS = 22
    OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION = 23
    CLIENT_APPEND_HANDSHAKE_HEADER = 24
    CONFIRM_EXTENSION_OKAY = 25
    CLIENT_CONFIRM_EXTENSION_SUPPORTED = 26
    PROTOCOL_INIT = 27
    PROTOCOL_DESTROY = 28
    WSI_CREATE = 29
    WSI_DESTROY = 30
    GET_THREAD_ID = 31
    ADD_POLL_FD = 32
    DEL_POLL_FD = 33
    CHANGE_MODE_POLL_FD = 34
    LOCK_POLL = 35
    UNLOCK_POLL = 36
    OPENSSL_CONTEXT_REQUIRES_PRIVATE_KEY = 37  # removed in 4.3.3
    WS_PEER_INITIATED_CLOSE = 38
    WS_EXT_DEFAULTS = 39
    CGI = 40
    CGI_TERMINATED = 41
    CGI_STDIN_DATA = 42
    CGI_STDIN_COMPLETED = 43
    ESTABLISHED_CLIENT_HTTP = 44
    CLOSED_CLIENT_HTTP = 45
    RECEIVE_CLIENT_HTTP = 46
    COMPLETED_CLIENT_HTTP = 47
    RECEIVE_CLIENT_HTTP_READ = 48
    HTTP_BIND_PROTOCOL = 49
    HTTP_DROP_PROTOCOL = 50
    CHECK_ACCESS_RIGHTS = 51
    PROCESS_HTML = 52
    ADD_HEADERS = 53
    SESSION_INFO = 54
    GS_EVENT = 55
    HTTP_PMO = 56
    CLIENT_HTTP_WRITEABLE = 57
    OPENSSL_PERFORM_SERVER_CERT_VERIFICATION = 58
    RAW_RX = 59
    RAW_CLOSE = 60
    RAW_WRITEABLE = 61
    RAW_ADOPT = 62
    RAW_ADOPT_FILE = 63
    RAW_RX_FILE = 64
    RAW_WRITEABLE_FILE = 65
    RAW_CLOSE_FILE = 66
    SSL_INFO = 67
    CHILD_CLOSING = 69
    CGI_PROCESS_ATTACH = 70
    EVENT_WAIT_CANCELLED = 71
    VHOST_CERT_AGING = 72
    TIMER = 73
    VHOST_CERT_UPDATE = 74
    CLIENT_CLOSED = 75
    CLIENT_HTTP_DROP_PROTOCOL = 76
    WS_SERVER_BIND_PROTOCOL = 77
    WS_SERVER_DROP_PROTOCOL = 78
    WS_CLIENT_BIND_PROTOCOL = 79
    WS_CLIENT_DROP_PROTOCOL = 80
    RAW_SKT_BIND_PROTOCOL = 81
    RAW_SKT_DROP_PROTOCOL = 82
    RAW_FILE_BIND_PROTOCOL = 83
    RAW_FILE_DROP_PROTOCOL = 84
    CLIENT_HTTP_BIND_PROTOCOL = 85
    HTTP_CONFIRM_UPGRADE = 86
    RAW_PROXY_CLI_RX = 89
    RAW_PROXY_SRV_RX = 90
    RAW_PROXY_CLI_CLOSE = 91
    RAW_PROXY_SRV_CLOSE = 92
    RAW_PROXY_CLI_WRITEABLE = 93
    RAW_PROXY_SRV_WRITEABLE = 94
    RAW_PROXY_CLI_ADOPT = 95
    RAW_PROXY_SRV_ADOPT = 96
    RAW_PROXY_CLI_BIND_PROTOCOL = 97
    RAW_PROXY_SRV_BIND_PROTOCOL = 98
    RAW_PROXY_CLI_DROP_PROTOCOL = 99
    RAW_PROXY_SRV_DROP_PROTOCOL = 100
    RAW_CONNECTED = 101
    VERIFY_BASIC_AUTHORIZATION = 102
    WSI_TX_CREDIT_GET = 103
    CLIENT_HTTP_REDIRECT = 104
    CONNECTING = 105  # 4.2
    MQTT_NEW_CLIENT_INSTANTIATED = 200
    MQTT_IDLE = 201
    MQTT_CLIENT_ESTABLISHED = 202
    MQTT_SUBSCRIBED = 203
    MQTT_CLIENT_WRITEABLE = 204
    MQTT_CLIENT_RX = 205
    MQTT_UNSUBSCRIBED = 206
    MQTT_DROP_PROTOCOL = 207
    MQTT_CLIENT_CLOSED = 208
    MQTT_ACK = 209
    MQTT_RESEND = 210
    MQTT_UNSUBSCRIBE_TIMEOUT = 211  # 4.3.0
    MQTT_SHADOW_TIMEOUT = 212  # 4.3.2
    MQTT_QOS2_RX_COMPLETE = 213  # 213..219: 5.0
    HTTP_INTERCEPTOR_CHECK = 214
    GET_PSS_SIZE = 215
    DHT_VERB_DISPATCH = 216
    QT_SERVER_RECEIVE = 217
    QT_CLIENT_RECEIVE = 218
    CLIENT_ESTABLISHED_EARLY = 219
    USER = 1000


REASON_NAMES: Final[Mapping[int, str]] = {reason.value: reason.name for reason in LwsReason}
PSEUDO_NAMES: Final[Mapping[int, str]] = {event.value: event.name for event in PseudoEvent}

# Delivered with a fake wsi (a stack struct or lws_broadcast()'s per-pt fake whose address
# repeats): never a connection, so tracking them would only invent leaked wsis.
FAKE_WSI_REASONS: Final = frozenset(
    {
        LwsReason.OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS,
        LwsReason.OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS,
        LwsReason.PROTOCOL_INIT,
        LwsReason.PROTOCOL_DESTROY,
        LwsReason.GET_THREAD_ID,
        LwsReason.EVENT_WAIT_CANCELLED,
        LwsReason.VHOST_CERT_AGING,
        LwsReason.VHOST_CERT_UPDATE,
    }
)


def reason_name(r: int) -> str:
    """The name of a reason or pseudo-event number; `UNKNOWN_<n>` for any other number."""
    name = REASON_NAMES.get(r) or PSEUDO_NAMES.get(r)
    return name if name is not None else f"UNKNOWN_{r}"


def is_fake_wsi(r: int) -> bool:
    """True for reasons lws delivers with a fake wsi, whatever the producer's `fake` says."""
    return r in FAKE_WSI_REASONS
