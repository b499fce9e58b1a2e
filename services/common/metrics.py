"""Every Prometheus metric Berth exports, defined once (like the error codes) and used by name.

Defined here, recorded where the work happens: HTTP requests by ``http_instrumentation.py`` (every
FastAPI service), blobstore calls by ``services/blobstore/grpc_instrumentation.py`` (server side) and
``services/gateway/blobstore_client.py`` (client side), the rest by the code that counts.

Each service process exports the default registry on /metrics. A labelled metric a service never
touches has no samples there; an unlabelled counter shows 0. Gauges whose 0 means "down" are
labelled, so only the processes that use them report them. Names follow Prometheus conventions: ``berth_`` prefix, base units
(seconds, bytes), ``_total`` on counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# HTTP, on every FastAPI service (route is the route template, never the raw path).
HTTP_REQUESTS = Counter("berth_http_requests_total", "HTTP requests answered.", ["service", "method", "route", "status"])
HTTP_DURATION = Histogram(
    "berth_http_request_duration_seconds",
    "Time from request start to the end of the response body.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
HTTP_BYTES_IN = Counter("berth_http_request_bytes_total", "Request body bytes received.", ["service", "route"])
HTTP_BYTES_OUT = Counter("berth_http_response_bytes_total", "Response body bytes sent.", ["service", "route"])

# Blobstore RPCs: seen from the gateway (client) and served by the blobstore (server).
RPC_DURATION = Histogram(
    "berth_blobstore_rpc_duration_seconds",
    "Blobstore gRPC call durations.",
    ["side", "method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RPC_REFUSED = Counter("berth_blobstore_rpc_refused_total", "gRPC calls refused for missing or wrong credentials.", ["reason"])
UPLOAD_DURATION = Histogram(
    "berth_upload_duration_seconds",
    "Time from an upload session's start to its commit.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800),
)
UPLOAD_BYTES = Counter("berth_upload_bytes_total", "Bytes written into upload sessions.")
DIRECT_READ_BYTES = Counter("berth_direct_read_bytes_total", "Blob bytes the blobstore sent itself, by signed URL (sendfile).")
STORAGE_CALLS = Counter("berth_storage_calls_total", "Calls to the storage backend.", ["driver", "operation"])

# The gateways' Redis metadata cache.
CACHE_REQUESTS = Counter("berth_cache_requests_total", "Metadata cache lookups.", ["kind", "result"])  # result: hit|miss|error
CACHE_UP = Gauge("berth_cache_up", "1 when the Redis cache answered its last call, 0 when it is down.", ["cache"])

# Read-only mode (storage.maintenance.readonly.enabled), as the gateways enforce it.
READONLY = Gauge("berth_readonly", "1 while the registry refuses every write (read-only mode), else 0.", ["service"])

# Notifications.
EVENTS_QUEUED = Gauge("berth_notification_queue_depth", "Events waiting per endpoint.", ["endpoint"])
EVENTS_SENT = Counter("berth_notifications_sent_total", "Events delivered.", ["endpoint"])
EVENTS_FAILED = Counter("berth_notification_failures_total", "Failed delivery attempts.", ["endpoint"])
EVENTS_DROPPED = Counter("berth_notifications_dropped_total", "Events dropped from a full queue.", ["endpoint"])

# The token service.
TOKENS_ISSUED = Counter("berth_tokens_issued_total", "Access tokens issued.", ["grant"])
TOKEN_DENIALS = Counter("berth_token_denials_total", "Token requests refused.", ["reason"])
ACCESS_DENIED = Counter("berth_access_denied_total", "Registry requests refused by the access controller.", ["reason"])

# Alerts.
EXCEPTIONS = Counter("berth_unhandled_exceptions_total", "Unhandled exceptions.", ["service"])
EXCEPTION_MAILS = Counter("berth_exception_mails_total", "Exception mails sent or suppressed.", ["result"])

# The pull-through cache (proxy): kind is manifest|blob; result hit (served from the cache),
# miss (fetched from the upstream), stale (the upstream failed, the cached copy was served).
MIRROR_REQUESTS = Counter("berth_mirror_requests_total", "Mirrored pulls by how they were served.", ["upstream", "kind", "result"])
MIRROR_UPSTREAM_BYTES = Counter("berth_mirror_upstream_bytes_total", "Bytes fetched from upstream registries.", ["upstream"])
MIRROR_STALE = Counter("berth_mirror_stale_total", "Cached tags served while their upstream failed.", ["upstream"])
MIRROR_UPSTREAM_ERRORS = Counter("berth_mirror_upstream_errors_total", "Failed upstream requests.", ["upstream", "reason"])
