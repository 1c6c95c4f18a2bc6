"""The span sink: finished facts queued, sampled and exported as OTLP spans by a worker thread."""
