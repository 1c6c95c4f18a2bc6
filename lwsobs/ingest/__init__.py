"""Ingest of producer events (wire-v1): parsing and sequence checks are pure; udp, unix, http
and service are the transports that feed them."""
