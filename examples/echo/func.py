"""The example function of `make demo`: answers with the request body."""

import io

from fdk import response


def handler(ctx, data: io.BytesIO | None = None):
    body = data.getvalue() if data is not None else b""
    return response.Response(ctx, response_data=body, headers={"Content-Type": "text/plain"})
