"""The example function of `make demo`: answers with the request body.

It also writes one line to stderr: `fn-core serve` at `FN_LOG_LEVEL=debug` logs it with the call's id.
"""

import io
import sys

from fdk import response


def handler(ctx, data: io.BytesIO | None = None):
    body = data.getvalue() if data is not None else b""
    print(f"echoing {len(body)} bytes", file=sys.stderr, flush=True)
    return response.Response(ctx, response_data=body, headers={"Content-Type": "text/plain"})
