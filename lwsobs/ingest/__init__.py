"""Ingest of producer events (wire-v1 NDJSON): pure parsing and sequence tracking, no I/O."""
