"""gRPC over HTTP/2, for the one service fn-core speaks between nodes (Fn's RunnerProtocol).

Why our own: on the 2-core machines we run on, grpcio's asyncio API cost ~1.2 ms of CPU per
Engage exchange (LB and runner together; bench/results), more than the container's work and the
rest of fn-core combined, which capped an LB + runner pair near 900 calls/s. This package does
only what the RunnerProtocol needs, on a plain asyncio protocol, at about a fifth of that CPU:

* one HTTP/2 connection per runner, many concurrent calls as streams on it (both ends);
* length-prefixed, uncompressed gRPC messages; status in trailers (``grpc-status``/``grpc-message``);
* flow control both ways, SETTINGS, PING, GOAWAY, RST_STREAM, CONTINUATION, TLS with ALPN ``h2``;
* header blocks we send never use HPACK's dynamic table (they are literals, built once per
  channel); blocks we receive are read in one pass when they are like ours, and by the ``hpack``
  package's decoder otherwise (Huffman and dynamic table included): `hpack_codec`.

It speaks the wire format every gRPC implementation speaks: the test suite drives our runner with
grpcio's client and points our LB at grpcio servers, with and without mTLS.
"""

from fn_core.transport.client import Channel, ClientStream
from fn_core.transport.errors import OutOfTime, RpcError, StreamRefused, Unreachable
from fn_core.transport.server import GrpcServer, ServerStream

__all__ = ["Channel", "ClientStream", "GrpcServer", "OutOfTime", "RpcError", "ServerStream", "StreamRefused", "Unreachable"]
