"""The control-plane routes (modules, versions, deployments) with their request and response schemas.

The services wait on the database, so the routes are plain functions, which run in worker threads; the few
that must be coroutines (pushing streams the body, deleting a module stops its workers) leave the database
work of the services they call to worker threads too. The event loop never waits on the database here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from modelport.control.access import Permit
from modelport.control.identity import Principal
from modelport.control.platform import Services
from modelport.core.errors import BadRequest, Forbidden
from modelport.core.records import (
    ApplyResultList,
    DeploymentInfo,
    ModuleInfo,
    ModuleList,
    VersionDetail,
    VersionInfo,
    VersionList,
)
from modelport.core.roles import Role
from modelport.gateway.auth import principal_of
from modelport.gateway.identity_api import actor_of
from modelport.gateway.routes import SIGNED_IN, allow

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

    router = APIRouter(prefix="/api/v1", tags=["modules"], dependencies=[allow(SIGNED_IN), Depends(guard)])

    @router.get("/modules", response_model=ModuleList, summary="List the modules you manage")
    def list_modules(request: Request) -> ModuleList:
        return ModuleList(modules=services.modules(principal_of(request.scope)))

    @router.get("/modules/{module}", response_model=ModuleInfo, summary="Get a module and its deployment")
    def get_module(request: Request, module: str) -> ModuleInfo:
        return services.module(module)

    @router.delete("/modules/{module}", status_code=204, summary="Stop serving and delete a module")
    async def delete_module(request: Request, module: str) -> Response:
        await services.delete_module(module, actor=actor_of(request))
        return Response(status_code=204)

    @router.get("/modules/{module}/versions", response_model=VersionList, summary="List a module's versions")
    def list_versions(request: Request, module: str) -> VersionList:
        return VersionList(versions=services.versions.list(module))

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
        response: Response,
        module: str,
        version: Annotated[str, Query(min_length=1, max_length=64, description="The version's name.")],
        commit: Annotated[str | None, Query(max_length=64)] = None,
        tag: Annotated[str | None, Query(max_length=255)] = None,
        x_content_digest: Annotated[str | None, Header()] = None,
    ) -> VersionInfo:
        # The artifact goes to a file as it arrives: up to `max_artifact_bytes`, never held in memory.
        async with services.versions.spool(request.stream()) as artifact:
            if not artifact.size:
                raise BadRequest("the request body is empty: send the version's artifact")
            info, created = await services.push_version(
                module,
                version,
                artifact,
                principal=principal_of(request.scope),
                actor=actor_of(request),
                commit=commit,
                tag=tag,
                digest=x_content_digest,
            )
        response.status_code = 201 if created else 200
        return info

    @router.get("/modules/{module}/versions/{version}", response_model=VersionDetail, summary="Get a version")
    def get_version(request: Request, module: str, version: str) -> VersionDetail:
        return services.versions.detail(module, version)

    @router.post(
        "/modules/{module}/deploy",
        response_model=DeploymentInfo,
        status_code=202,
        summary="Deploy a version",
        description="Records the desired state and returns at once; poll the module until "
        "`deployment.observed_generation` reaches the returned `generation`.",
    )
    def deploy(request: Request, module: str, body: DeployRequest) -> DeploymentInfo:
        return services.deployments.deploy(
            module,
            body.version,
            replicas=body.replicas,
            canary_percent=body.canary_percent,
            actor=actor_of(request),
        )

    @router.post(
        "/modules/{module}/rollback",
        response_model=DeploymentInfo,
        status_code=202,
        summary="Roll back to the previous version",
    )
    def rollback(request: Request, module: str) -> DeploymentInfo:
        return services.deployments.rollback(module, actor=actor_of(request))

    manifests = APIRouter(tags=["manifests"])

    @manifests.post(
        "/apply",
        response_model=ApplyResultList,
        summary="Apply manifests",
        description="Validates every document first (422 `invalid_manifest` lists each problem and changes "
        "nothing), then creates or configures them all in one transaction. With `dry_run` nothing is "
        "written; each result's `diff` shows what would change.",
    )
    def apply(request: Request, body: ManifestRequest) -> ApplyResultList:
        principal = principal_of(request.scope)
        changes = services.manifests.apply(
            body.documents, dry_run=body.dry_run, actor=actor_of(request), permit=Permit(principal, policies)
        )
        return ApplyResultList(results=changes)

    @manifests.post("/delete", response_model=ApplyResultList, summary="Delete the objects manifests name")
    def delete(request: Request, body: ManifestRequest) -> ApplyResultList:
        principal = principal_of(request.scope)
        changes = services.manifests.delete(
            body.documents, dry_run=body.dry_run, actor=actor_of(request), permit=Permit(principal, policies)
        )
        return ApplyResultList(results=changes)

    router.include_router(manifests)
    return router
