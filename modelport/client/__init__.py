"""The typed Python client for the platform's HTTP API, and the saved login it starts from.

Answers are the records of `modelport.core.records`, re-exported here.

from modelport.client import Client, resolve_login

login = resolve_login()
with Client(login.url, login.token) as client:
    for module in client.modules():
        print(module.name, module.deployment)
"""

from __future__ import annotations

from modelport.client.api import DEFAULT_TIMEOUT, Client, Progress, Pushed
from modelport.client.config import Login, config_path, load_saved, resolve_login, save_login
from modelport.client.errors import (
    ApiError,
    ClientError,
    ConfigError,
    ConnectionFailed,
    NotLoggedIn,
    TransferFailed,
    WaitTimeout,
)
from modelport.core.records import (
    AccessToken,
    ApplyResult,
    AuditEvent,
    BucketInfo,
    CallerInfo,
    DeploymentInfo,
    DriftFeature,
    DriftReport,
    GroupInfo,
    LogGap,
    LogLine,
    ModuleInfo,
    NewToken,
    ObjectInfo,
    ObjectListing,
    PipelineInfo,
    PipelineStepInfo,
    PresignedUrl,
    RequestDetail,
    RequestList,
    RequestRecord,
    Role,
    RolloutInfo,
    ServingInfo,
    TokenInfo,
    UserInfo,
    VersionDetail,
    VersionInfo,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AccessToken",
    "ApiError",
    "ApplyResult",
    "AuditEvent",
    "BucketInfo",
    "CallerInfo",
    "Client",
    "ClientError",
    "ConfigError",
    "ConnectionFailed",
    "DeploymentInfo",
    "DriftFeature",
    "DriftReport",
    "GroupInfo",
    "LogGap",
    "LogLine",
    "Login",
    "ModuleInfo",
    "NewToken",
    "NotLoggedIn",
    "ObjectInfo",
    "ObjectListing",
    "PipelineInfo",
    "PipelineStepInfo",
    "PresignedUrl",
    "Progress",
    "Pushed",
    "RequestDetail",
    "RequestList",
    "RequestRecord",
    "Role",
    "RolloutInfo",
    "ServingInfo",
    "TokenInfo",
    "TransferFailed",
    "UserInfo",
    "VersionDetail",
    "VersionInfo",
    "WaitTimeout",
    "config_path",
    "load_saved",
    "resolve_login",
    "save_login",
]
