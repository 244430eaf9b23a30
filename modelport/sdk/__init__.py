"""What module authors touch: the `inference` contract, the docstring grammar and the frozen `ApiSpec`."""

from modelport.sdk.context import CallContext, current_call
from modelport.sdk.errors import RejectedInput
from modelport.sdk.files import File
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, SpecError, TypeSpec, parse_docstring

__all__ = [
    "ApiSpec",
    "CallContext",
    "FieldSpec",
    "File",
    "Kind",
    "RejectedInput",
    "SpecError",
    "TypeSpec",
    "current_call",
    "parse_docstring",
]
