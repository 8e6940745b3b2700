"""schemathesis hooks for the gateway's API (loaded by .ci/schemathesis with SCHEMATHESIS_HOOKS).

`POST /v1/events/batch` reads NDJSON: its schema is the list of lines, and the body is each
line as JSON, one per line. Anything that is not a list (schemathesis's negative cases) is
sent as one line, as a carrier's broken exporter would.
"""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    lines = value if isinstance(value, list) else [value]
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
