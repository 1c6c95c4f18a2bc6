"""The lwsobs service itself: command line, ingest service, web API, demo and status page."""
