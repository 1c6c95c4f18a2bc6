"""The OTLP exporter: sampled facts -> protobuf (FactEncoder) -> OTLP/HTTP (OtlpHttpSender)."""

from __future__ import annotations

from collections.abc import Sequence

from lwsobs.sinks.spans.builder import SpanBuilder
from lwsobs.sinks.spans.otlp_encode import encode_resource, encode_scope
from lwsobs.sinks.spans.otlp_facts import Fact, FactEncoder
from lwsobs.sinks.spans.otlp_http import OtlpHttpConfig, OtlpHttpSender

SCOPE_NAME, SCOPE_VERSION = "lwsobs", "0.1.0"


class OtlpExporter:
    def __init__(
        self,
        builder: SpanBuilder,
        resource_attributes: dict[str, object],
        config: OtlpHttpConfig | None = None,
    ) -> None:
        self.encoder = FactEncoder(
            builder, encode_resource(resource_attributes), encode_scope(SCOPE_NAME, SCOPE_VERSION)
        )
        self.sender = OtlpHttpSender(config or OtlpHttpConfig.from_env())

    def export(self, facts: Sequence[Fact]) -> bool:
        return self.sender.send(self.encoder.encode(facts))

    def abort(self) -> None:
        """Give up the export in progress now (called from another thread at shutdown)."""
        self.sender.abort()

    def shutdown(self) -> None:
        self.sender.close()
