"""What every blobstore call leaves behind: its duration and status in RPC_DURATION, and the
gateway's request id as the current one while it runs, so the blobstore's log lines about a
request can be found with the id the client was given. The gRPC counterpart of
``services.common.http_instrumentation``; the metrics are defined in ``services.common.metrics``,
and the gateway records its side of the same calls in ``services.gateway.blobstore_client``.

An interceptor rather than code in each method, so streams, refusals and methods added later are
all counted the same way.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from services.common import request_ids
from services.common.metrics import RPC_DURATION

log = logging.getLogger("berth.blobstore.calls")

# Only the registry's own service: health probes (one per few seconds, and Watch calls that last
# for hours) would only blur the latencies that matter, and wrapping the health servicer would
# lose its non-blocking Watch.
_OBSERVED_PREFIX = "/berth.blobstore.v1.Blobstore/"


class CallObserver(grpc.ServerInterceptor):
    """Wraps each Blobstore method's handler so the call is timed and runs under its request id."""

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(_OBSERVED_PREFIX):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        request_id = _request_id(details.invocation_metadata)
        behavior: Callable[..., Any] | None
        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        else:
            behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
        if behavior is None:  # the flags name the behavior a handler has; this one does not: leave it alone
            return handler
        wrapped = (_streaming if handler.response_streaming else _unary)(behavior, method, request_id)
        return factory(wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


def _request_id(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == request_ids.METADATA_KEY:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


def _enter(request_id: str) -> contextvars.Token[str]:
    """Makes the caller's id (or, when it sent none or an unusable one, a fresh one) current in
    this worker thread; the token restores what was there."""
    token = request_ids.set_current("")
    request_ids.adopt(request_id)
    return token


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]  # in grpc (an experimental API), not in its stubs
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return code.name


def _unary(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        token = _enter(request_id)
        started = time.perf_counter()
        failed = True
        try:
            result = behavior(request, context)
            failed = False
            return result
        finally:
            _finish(method, _code(context, failed), started)
            _reset(token)

    return call


def _streaming(behavior: Callable[..., Any], method: str, request_id: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        token = _enter(request_id)
        started = time.perf_counter()
        outcome = "UNKNOWN"
        try:
            yield from behavior(request, context)
            outcome = _code(context, failed=False)
        except GeneratorExit:
            outcome = "CANCELLED"  # the caller went away mid-stream
            raise
        except BaseException:
            outcome = _code(context, failed=True)
            raise
        finally:
            _finish(method, outcome, started)
            _reset(token)

    return call


def _finish(method: str, code: str, started: float) -> None:
    """Records the call; at debug level also logs it, under the caller's request id (still current)."""
    elapsed = time.perf_counter() - started
    RPC_DURATION.labels(side="server", method=method, code=code).observe(elapsed)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s in %.1f ms", method, code, elapsed * 1000)


def _reset(token: contextvars.Token[str]) -> None:
    """Best effort: a stream abandoned by its caller is closed by the garbage collector, maybe in
    another thread, where the token does not belong. Every call sets its own id on entry, so a
    value left behind is never read by the next call."""
    try:
        request_ids.reset(token)
    except ValueError:
        pass
