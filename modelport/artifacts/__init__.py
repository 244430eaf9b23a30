"""Modules as files: reading a module directory, and packing it into a content-addressed artifact.

A leaf: both `modelport push` (through the CLI) and the platform (which unpacks and builds what was pushed)
use it, so it imports only `core` and `sdk`.
"""

from modelport.artifacts.archive import (
    ALWAYS_IGNORED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_FILES,
    IGNORE_FILE,
    Artifact,
    DirtyTree,
    GitState,
    PackError,
    UntaggedHead,
    VersionRequired,
    check_version_name,
    inspect_git,
    pack,
    semver_key,
    unpack,
)
from modelport.artifacts.definition import ModuleDefinition, read_module

__all__ = [
    "ALWAYS_IGNORED",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "IGNORE_FILE",
    "Artifact",
    "DirtyTree",
    "GitState",
    "ModuleDefinition",
    "PackError",
    "UntaggedHead",
    "VersionRequired",
    "check_version_name",
    "inspect_git",
    "pack",
    "read_module",
    "semver_key",
    "unpack",
]
