"""Per-method request parsers for a gRPC server.

gRPC parses each request with the message type's `FromString` before a servicer
sees it, so a bound that depends on the message's shape (not just its size, which
`grpc.max_receive_message_length` bounds for every method alike) has to replace
the parser. `RequestParsers` does that for the methods it is given and leaves
every other method as registered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

Parser = Callable[[bytes], Any]


class RequestParsers(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, parsers: Mapping[str, Parser]):
        """parsers: full method name ("/package.Service/Method") -> parser of its
        request bytes."""
        self._parsers = dict(parsers)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        parser = self._parsers.get(handler_call_details.method)
        if handler is None or parser is None:
            return handler
        return handler._replace(request_deserializer=parser)
