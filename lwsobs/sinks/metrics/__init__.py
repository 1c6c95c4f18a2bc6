"""The metrics sink: integer counters and histograms, rendered at scrape time."""
