"""Schemathesis hooks for test_openapi_fuzz.py (loaded by name through SCHEMATHESIS_HOOKS)."""

import schemathesis


@schemathesis.hook
def map_query(context, query):  # type: ignore[no-untyped-def]
    # A followed log streams until the job ends, and the fuzzed jobs never start (admission is
    # paused): ask for the log as it is instead.
    if query is not None and "follow" in query:
        query["follow"] = "false"
    return query
