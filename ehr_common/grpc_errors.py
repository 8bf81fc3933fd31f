"""The one place where ehr-abe errors become gRPC statuses (and back).

Servers install `ErrorMappingInterceptor`: a servicer raises a typed
`EhrAbeError` and the client receives its status code and message. Anything
else becomes INTERNAL with a generic message; the details go to the server log
(exception type and traceback only: messages from third-party code could carry
data, so they are not sent to the caller).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from ehr_common import errors

log = logging.getLogger(__name__)

_BY_STATUS: dict[grpc.StatusCode, type[errors.EhrAbeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.DATA_LOSS: errors.IntegrityError,
    grpc.StatusCode.PERMISSION_DENIED: errors.AccessDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.ABORTED: errors.Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
}


def status_of(exc: errors.EhrAbeError) -> grpc.StatusCode:
    code: grpc.StatusCode = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.INTERNAL)
    return code


def error_from_rpc(exc: grpc.RpcError) -> errors.EhrAbeError:
    """Client side: turn a failed call back into the typed error it came from."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _BY_STATUS.get(code, errors.EhrAbeError)
    err = cls(details or code.name)
    return err


def _wrap_unary(
    behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behaviour(request, context)
        except errors.EhrAbeError as exc:
            context.abort(status_of(exc), str(exc))
        except grpc.RpcError:
            raise  # context.abort() raised it: already mapped
        except Exception:
            log.exception("internal error in %s", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see server log")
        raise AssertionError("unreachable")

    return handler


def _wrap_stream_out(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behaviour(request, context)
        except errors.EhrAbeError as exc:
            context.abort(status_of(exc), str(exc))
        except grpc.RpcError:
            raise
        except Exception:
            log.exception("internal error in %s", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see server log")

    return handler


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.stream_unary is not None:  # client streams: errors map as for unary calls
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream_out(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary(handler.unary_unary, handler_call_details.method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
