"""The error tree: every failure a caller can see, with its HTTP status and stable code.

Handlers never build error bodies; they raise one of these and the gateway's single mapping turns it into
`{"error": {"code", "message", "details"}}`. Server-side errors (5xx) carry a generic public message; the
specific one is logged with the request id.
"""

from __future__ import annotations

from typing import Any


class ModelportError(Exception):
    """Base of every error modelport reports to a caller."""

    status: int = 500
    code: str = "internal_error"
    public: bool = False  # whether `message` may be shown to the caller for a 5xx
    retry_after: float | None = None

    def __init__(self, message: str = "", *, details: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details
        if retry_after is not None:
            self.retry_after = retry_after

    def public_message(self) -> str:
        if self.status < 500 or self.public:
            return self.message
        return "The server failed to handle this request."


# 4xx: the caller's fault


class BadRequest(ModelportError):
    """The request is malformed."""

    status, code = 400, "bad_request"


class InvalidJson(BadRequest):
    """The request body is not valid JSON."""

    code = "invalid_json"


class NotFound(ModelportError):
    """No such resource."""

    status, code = 404, "not_found"


class BucketNotFound(NotFound):
    """No such bucket, or none the caller may see."""

    code = "bucket_not_found"


class ObjectNotFound(NotFound):
    """No such object in this bucket."""

    code = "object_not_found"


class ModuleNotFound(NotFound):
    """No such module."""

    code = "module_not_found"


class PipelineNotFound(NotFound):
    """No such pipeline, or none the caller may see."""

    code = "pipeline_not_found"


class JobNotFound(NotFound):
    """No such job, or none the caller may see."""

    code = "job_not_found"


class WebhookSecretNotFound(NotFound):
    """The caller has no webhook signing secret yet."""

    code = "webhook_secret_not_found"


class ModelNotFound(NotFound):
    """No weights for this model key in the module's bucket."""

    code = "model_not_found"


class VersionNotFound(NotFound):
    """No such version of this module."""

    code = "version_not_found"


class Unauthorized(ModelportError):
    """The request carries no valid credentials."""

    status, code = 401, "unauthorized"


class InvalidToken(Unauthorized):
    """The bearer token is not valid: unknown, revoked, expired, or not signed by a trusted issuer."""

    code = "invalid_token"


class InvalidCredentials(Unauthorized):
    """The user name or password is wrong."""

    code = "invalid_credentials"


class Forbidden(ModelportError):
    """The caller may not do this."""

    status, code = 403, "forbidden"


class TooManyRequests(ModelportError):
    """The caller sent too many requests; `Retry-After` says when to try again."""

    status, code = 429, "rate_limited"


class TooManyLoginAttempts(TooManyRequests):
    """Too many failed logins for this account or address; `Retry-After` says when to try again."""

    code = "too_many_attempts"


class Conflict(ModelportError):
    """The request conflicts with the current state."""

    status, code = 409, "conflict"


class VersionExists(Conflict):
    """A version of this name already exists with different content."""

    code = "version_exists"


class NoPreviousVersion(Conflict):
    """There is no earlier version to roll back to."""

    code = "no_previous_version"


class VersionFailed(Conflict):
    """The version failed to build and cannot be deployed."""

    code = "version_failed"


class JobFinished(Conflict):
    """The job has already finished: there is nothing left to cancel."""

    code = "job_finished"


class JobExists(Conflict):
    """A job with this id already exists with another request."""

    code = "job_exists"


class InvalidCursor(BadRequest):
    """The cursor is not one this server gave: pass back a page's `next_cursor` unchanged."""

    code = "invalid_cursor"


class InvalidKey(BadRequest):
    """The object key is not acceptable: empty, too long, or a path that could leave its bucket."""

    code = "invalid_key"


class InvalidModule(BadRequest):
    """The uploaded module cannot be read: a broken archive, manifest or docstring."""

    code = "invalid_module"


class MethodNotAllowed(ModelportError):
    """This method is not allowed on this path."""

    status, code = 405, "method_not_allowed"


class PayloadTooLarge(ModelportError):
    """The request body is larger than the server accepts."""

    status, code = 413, "payload_too_large"


class LengthRequired(ModelportError):
    """The upload must say its size in `Content-Length`."""

    status, code = 411, "length_required"


class BodyTimeout(ModelportError):
    """The request's body did not arrive in time; the connection is closed."""

    status, code = 408, "body_timeout"


class RangeNotSatisfiable(ModelportError):
    """The requested byte range lies outside the object."""

    status, code = 416, "range_not_satisfiable"


class UnsupportedMediaType(ModelportError):
    """The request's content type is not supported here."""

    status, code = 415, "unsupported_media_type"


class ValidationFailed(ModelportError):
    """The request does not match the module's API; `details` lists each bad field."""

    status, code = 422, "validation_failed"


class InputRejected(ModelportError):
    """The module refused the request for a reason its API's types cannot state (it raised `RejectedInput`:
    a prompt longer than the model's context, an unknown role); `code` is the module's own."""

    status, code = 400, "invalid_input"

    def __init__(self, message: str, *, code: str = "invalid_input", field: str | None = None) -> None:
        super().__init__(message, details=[field_error(field, code, message)] if field is not None else None)
        self.code = code


class IdempotencyConflict(ModelportError):
    """This `Idempotency-Key` was used before with another request; use a new key for a new request."""

    status, code = 422, "idempotency_conflict"


class WebhookRefused(ModelportError):
    """The webhook URL is not one the platform may call: not http(s), or an address it may not reach."""

    status, code = 422, "webhook_refused"


class JobCanceled(ModelportError):
    """The job was canceled before it finished."""

    status, code, public = 499, "canceled", True


# 5xx: the module's or the platform's fault


class ModuleError(ModelportError):
    """The module's code raised while handling this request."""

    status, code, public = 500, "module_error", True


class BadModuleOutput(ModuleError):
    """The module returned something that does not match its declared outputs."""

    code = "bad_module_output"


class ModuleUnavailable(ModelportError):
    """No worker of this module can take the request now."""

    status, code, public = 503, "module_unavailable", True
    retry_after = 1.0


class StepUnavailable(ModuleUnavailable):
    """A step of this pipeline has no module version to run it (its module was deleted or is not deployed, or
    its version no longer fits the pipeline)."""

    code = "step_unavailable"


class StepFailed(ModelportError):
    """A step of a pipeline call failed: the step's own error, its status and code kept, naming the step."""

    public = True

    @classmethod
    def of(cls, step: str, module: str, error: ModelportError) -> StepFailed:
        failed = cls(
            f"step {step!r} (module {module!r}) failed: {error.public_message()}",
            details={
                "step": step,
                "module": module,
                "details": error.details if error.status < 500 or error.public else None,
            },
            retry_after=error.retry_after,
        )
        failed.status, failed.code = error.status, error.code
        return failed


class WorkerDied(ModuleUnavailable):
    """The worker handling this request died; the request may be retried."""

    code = "worker_died"


class Overloaded(ModuleUnavailable):
    """The module's queue is full."""

    code = "overloaded"


class TooManyConnections(ModelportError):
    """This address holds as many connections as the server allows one address; close one or retry later."""

    status, code, public = 503, "too_many_connections", True
    retry_after = 1.0


class ModuleTimeout(ModelportError):
    """The module did not answer within its time limit."""

    status, code, public = 504, "module_timeout", True


class QueueTimeout(ModuleTimeout):
    """The call waited for a free worker until its deadline and never ran; retrying it later is safe."""

    code = "queue_timeout"


class SetupFailed(ModelportError):
    """A worker could not start: the module failed to import or its `load` raised."""

    status, code, public = 503, "setup_failed", True
    retry_after = 5.0


class QuotaExceeded(ModelportError):
    """The bucket's quota leaves no room for this object."""

    status, code, public = 507, "quota_exceeded", True


class CorruptObject(ModelportError):
    """A stored object does not match the checksum recorded when it was written."""

    status, code, public = 500, "corrupt_object", True


class StorageUnavailable(ModelportError):
    """The object store cannot be reached or failed."""

    status, code, public = 503, "storage_unavailable", True
    retry_after = 5.0


class DatabaseUnavailable(ModelportError):
    """The platform's database cannot be reached or did not answer in time; try again shortly."""

    status, code, public = 503, "database_unavailable", True
    retry_after = 2.0


def field_error(field: str, code: str, message: str) -> dict[str, str]:
    """One entry of a 422's `details` list."""
    return {"field": field, "code": code, "message": message}
