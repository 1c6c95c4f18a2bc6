"""The lws callback reason table: known numbers, later additions, unknowns, fake-wsi reasons."""

from __future__ import annotations

import pytest

from lwsobs.sources.lws.reasons import (
    FAKE_WSI_REASONS,
    PSEUDO_NAMES,
    REASON_NAMES,
    LwsReason,
    is_fake_wsi,
    reason_name,
)
from lwsobs.sources.lws.wire import PseudoEvent


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "ESTABLISHED"),
        (1, "CLIENT_CONNECTION_ERROR"),
        (5, "CLOSED_HTTP"),
        (12, "HTTP"),
        (17, "FILTER_NETWORK_CONNECTION"),
        (18, "FILTER_HTTP_CONNECTION"),
        (19, "SERVER_NEW_CLIENT_INSTANTIATED"),
        (29, "WSI_CREATE"),
        (30, "WSI_DESTROY"),
        (37, "OPENSSL_CONTEXT_REQUIRES_PRIVATE_KEY"),  # 4.1 only, still named
        (44, "ESTABLISHED_CLIENT_HTTP"),
        (50, "HTTP_DROP_PROTOCOL"),
        (67, "SSL_INFO"),
        (69, "CHILD_CLOSING"),
        (86, "HTTP_CONFIRM_UPGRADE"),
        (89, "RAW_PROXY_CLI_RX"),
        (100, "RAW_PROXY_SRV_DROP_PROTOCOL"),
        (104, "CLIENT_HTTP_REDIRECT"),
        (105, "CONNECTING"),
        (200, "MQTT_NEW_CLIENT_INSTANTIATED"),
        (210, "MQTT_RESEND"),
        (211, "MQTT_UNSUBSCRIBE_TIMEOUT"),
        (212, "MQTT_SHADOW_TIMEOUT"),
        (213, "MQTT_QOS2_RX_COMPLETE"),
        (214, "HTTP_INTERCEPTOR_CHECK"),
        (215, "GET_PSS_SIZE"),
        (216, "DHT_VERB_DISPATCH"),
        (217, "QT_SERVER_RECEIVE"),
        (218, "QT_CLIENT_RECEIVE"),
        (219, "CLIENT_ESTABLISHED_EARLY"),
        (1000, "USER"),
    ],
)
def test_known_reasons(number: int, name: str) -> None:
    assert reason_name(number) == name
    assert LwsReason[name] == number


def test_the_table_covers_every_documented_number() -> None:
    """Section 1: 0..104 except the unused 68, 87, 88; 105; 200..219; USER."""
    documented = (set(range(0, 106)) - {68, 87, 88}) | set(range(200, 220)) | {1000}
    assert set(REASON_NAMES) == documented
    assert len(set(REASON_NAMES.values())) == len(REASON_NAMES)


@pytest.mark.parametrize("number", [68, 87, 88, 106, 199, 220, 999, 1001, 1 << 40, -9, -1000])
def test_unknown_numbers_are_opaque(number: int) -> None:
    assert reason_name(number) == f"UNKNOWN_{number}"


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (-1, "HELLO"),
        (-2, "HEARTBEAT"),
        (-3, "CONTEXT_DESTROY_BEGIN"),
        (-4, "CONTEXT_DESTROYED"),
        (-5, "BYE"),
    ],
)
def test_pseudo_event_names(number: int, name: str) -> None:
    assert reason_name(number) == name
    assert PSEUDO_NAMES[number] == PseudoEvent[name].name


def test_fake_wsi_reasons() -> None:
    assert {27, 28, 71, 72, 74, 21, 22, 31} == FAKE_WSI_REASONS
    assert {reason_name(r) for r in FAKE_WSI_REASONS} == {
        "PROTOCOL_INIT",
        "PROTOCOL_DESTROY",
        "EVENT_WAIT_CANCELLED",
        "VHOST_CERT_AGING",
        "VHOST_CERT_UPDATE",
        "OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS",
        "OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS",
        "GET_THREAD_ID",
    }
    assert all(is_fake_wsi(r) for r in FAKE_WSI_REASONS)


@pytest.mark.parametrize("number", [29, 30, 17, 19, 73, 0, -1, 424242])
def test_real_wsi_reasons_are_not_fake(number: int) -> None:
    assert not is_fake_wsi(number)
