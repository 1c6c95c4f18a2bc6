"""The libwebsockets source: wire-v1 events from the shim, received, ordered, decoded."""
