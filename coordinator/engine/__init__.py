"""The run engine: launches planned instances, watches them, stops them, reports."""
