"""Sinks turn the core's facts into telemetry: metrics, spans, the live view and the log."""
