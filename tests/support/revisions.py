"""The revisions the tests name: the first (otel_traces alone) and head (the summaries)."""

FIRST = "00000000000001"
HEAD = "00000000000007"
