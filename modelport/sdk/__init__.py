"""What module authors touch: the `inference` contract, the docstring grammar and the frozen `ApiSpec`."""

from modelport.sdk.files import File
from modelport.sdk.spec import ApiSpec, FieldSpec, Kind, SpecError, TypeSpec, parse_docstring

__all__ = ["ApiSpec", "FieldSpec", "File", "Kind", "SpecError", "TypeSpec", "parse_docstring"]
