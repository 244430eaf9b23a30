"""The control-plane routes (modules, versions, deployments, logs) with their request and response schemas."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.access import Permit
from modelport.control.identity import Principal
from modelport.control.manifests import Change
from modelport.control.platform import Services
from modelport.core.errors import BadRequest, Forbidden
from modelport.db import Role
from modelport.gateway.auth import principal_of
from modelport.gateway.identity_api import actor_of

__all__ = ["control_router"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeployRequest(_Strict):
    version: str = Field(min_length=1, max_length=64, description="The version to deploy.")
    replicas: int | None = Field(None, ge=1, le=64, description="Worker processes for the version.")
    canary_percent: int | None = Field(
        None, ge=0, le=100, description="Route this share of calls to `version` as a canary (0 removes it)."
    )


class ManifestRequest(_Strict):
    documents: list[dict[str, Any]] = Field(description="Manifests: Module and Api documents.")
    dry_run: bool = Field(False, description="Compute the changes without making them.")


class ManifestChange(BaseModel):
    kind: str
    name: str
    action: str
    diff: str


class ManifestResult(BaseModel):
    results: list[ManifestChange]


class ServingInfo(BaseModel):
    version: str
    role: str
    workers: int
    ready: bool


class DeploymentInfo(BaseModel):
    module: str
    version: str | None
    target_version: str | None
    previous_version: str | None
    canary_version: str | None
    canary_percent: int
    replicas: int
    generation: int
    observed_generation: int
    status: str
    message: str
    updated_at: str | None
    serving: list[ServingInfo]


class ModuleInfo(BaseModel):
    name: str
    owner: str | None
    created_at: str
    versions: int
    deployment: DeploymentInfo | None


class ModuleList(BaseModel):
    modules: list[ModuleInfo]


class VersionInfo(BaseModel):
    module: str
    name: str
    digest: str
    size: int
    commit: str | None
    tag: str | None
    pushed_by: str | None
    pushed_at: str
    build_status: str
    build_error: str | None
    environment: str | None


class VersionDetail(VersionInfo):
    spec: dict[str, Any]
    manifest: dict[str, Any]


class VersionList(BaseModel):
    versions: list[VersionInfo]


def _developer(request: Request) -> Principal:
    """The caller, if it may manage modules at all (developers and admins); 403 otherwise."""
    principal = principal_of(request.scope)
    if principal.role not in (Role.ADMIN, Role.DEVELOPER):
        raise Forbidden("managing modules needs the developer or admin role")
    return principal


def control_router(services: Services) -> APIRouter:
    policies = services.policies

    def guard(request: Request) -> None:
        """Before anything else, even validation: a module the caller may not see is 404, one it may only
        call is 403, and every route needs the developer or admin role. Pushing creates a new module."""
        module = request.path_params.get("module")
        creating = request.method == "POST" and request.url.path.endswith("/versions")
        if module is not None and (policies.policy(module) is not None or not creating):
            policies.require_manage(principal_of(request.scope), module)
        _developer(request)

    router = APIRouter(prefix="/api/v1", tags=["modules"], dependencies=[Depends(guard)])

    @router.get("/modules", response_model=ModuleList, summary="List the modules you manage")
    def list_modules(request: Request) -> dict[str, Any]:
        return {"modules": services.modules(principal_of(request.scope))}

    @router.get("/modules/{module}", response_model=ModuleInfo, summary="Get a module and its deployment")
    def get_module(request: Request, module: str) -> dict[str, Any]:
        return services.module(module)

    @router.delete("/modules/{module}", status_code=204, summary="Stop serving and delete a module")
    async def delete_module(request: Request, module: str) -> Response:
        await services.deployments.delete(module)
        policies.invalidate()
        services.audit.record(actor_of(request), "module.delete", f"module/{module}")
        return Response(status_code=204)

    @router.get("/modules/{module}/versions", response_model=VersionList, summary="List a module's versions")
    def list_versions(request: Request, module: str) -> dict[str, Any]:
        return {"versions": services.versions.list(module)}

    @router.post(
        "/modules/{module}/versions",
        response_model=VersionInfo,
        status_code=201,
        summary="Push a version",
        description="The body is the version's artifact (`modelport push` makes it: a tar.gz of the module "
        "tree). 201 for a new version, 200 when identical content was already pushed under that name, "
        "409 `version_exists` when the name is taken by different content. The build starts at once.",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def push_version(
        request: Request,
        module: str,
        version: Annotated[str, Query(min_length=1, max_length=64, description="The version's name.")],
        commit: Annotated[str | None, Query(max_length=64)] = None,
        tag: Annotated[str | None, Query(max_length=255)] = None,
        x_content_digest: Annotated[str | None, Header()] = None,
    ) -> Response:
        principal = principal_of(request.scope)
        data = await request.body()
        if not data:
            raise BadRequest("the request body is empty: send the version's artifact")
        info, created = await services.versions.push(
            module,
            version,
            data,
            pushed_by=principal.name,
            permit=Permit(principal, policies),
            commit=commit,
            tag=tag,
            digest=x_content_digest,
        )
        if created:
            policies.invalidate()
            services.audit.record(
                actor_of(request), "version.push", f"module/{module}", version=version, digest=info["digest"]
            )
        return JSONResponse(info, status_code=201 if created else 200)

    @router.get("/modules/{module}/versions/{version}", response_model=VersionDetail, summary="Get a version")
    def get_version(request: Request, module: str, version: str) -> dict[str, Any]:
        return services.versions.get(module, version, with_spec=True)

    @router.post(
        "/modules/{module}/deploy",
        response_model=DeploymentInfo,
        status_code=202,
        summary="Deploy a version",
        description="Records the desired state and returns at once; poll the module until "
        "`deployment.observed_generation` reaches the returned `generation`.",
    )
    async def deploy(request: Request, module: str, body: DeployRequest) -> dict[str, Any]:
        deployment = services.deployments.deploy(
            module, body.version, replicas=body.replicas, canary_percent=body.canary_percent
        )
        services.audit.record(
            actor_of(request), "module.deploy", f"module/{module}", **body.model_dump(exclude_none=True)
        )
        return deployment

    @router.post(
        "/modules/{module}/rollback",
        response_model=DeploymentInfo,
        status_code=202,
        summary="Roll back to the previous version",
    )
    async def rollback(request: Request, module: str) -> dict[str, Any]:
        deployment = services.deployments.rollback(module)
        services.audit.record(
            actor_of(request), "module.rollback", f"module/{module}", version=deployment["version"]
        )
        return deployment

    @router.get(
        "/modules/{module}/logs",
        response_class=PlainTextResponse,
        summary="A module's worker logs, or a version's build log",
    )
    def logs(
        request: Request,
        module: str,
        build: Annotated[str | None, Query(description="Show this version's build log.")] = None,
        tail: Annotated[int, Query(ge=1, le=100_000)] = 200,
    ) -> PlainTextResponse:
        if build is not None:
            return PlainTextResponse(services.versions.build_log(module, build))
        services.module(module)
        return PlainTextResponse(services.logs.tail(module, tail))

    manifests = APIRouter(tags=["manifests"])

    @manifests.post(
        "/apply",
        response_model=ManifestResult,
        summary="Apply manifests",
        description="Validates every document first (422 `invalid_manifest` lists each problem and changes "
        "nothing), then creates or configures them all in one transaction. With `dry_run` nothing is "
        "written; each result's `diff` shows what would change.",
    )
    async def apply(request: Request, body: ManifestRequest) -> dict[str, Any]:
        principal = principal_of(request.scope)
        changes = services.manifests.apply(
            body.documents, dry_run=body.dry_run, actor=principal.name, permit=Permit(principal, policies)
        )
        _audit_changes(request, changes, dry_run=body.dry_run)
        return {"results": [c.to_dict() for c in changes]}

    @manifests.post("/delete", response_model=ManifestResult, summary="Delete the objects manifests name")
    async def delete(request: Request, body: ManifestRequest) -> dict[str, Any]:
        principal = principal_of(request.scope)
        changes = services.manifests.delete(
            body.documents, dry_run=body.dry_run, actor=principal.name, permit=Permit(principal, policies)
        )
        _audit_changes(request, changes, dry_run=body.dry_run)
        return {"results": [c.to_dict() for c in changes]}

    def _audit_changes(request: Request, changes: list[Change], *, dry_run: bool) -> None:
        if dry_run:
            return
        for change in changes:
            if change.action != "unchanged":
                services.audit.record(
                    actor_of(request),
                    f"{change.kind.lower()}.{change.action}",
                    f"{change.kind.lower()}/{change.name}",
                )

    router.include_router(manifests)
    return router
