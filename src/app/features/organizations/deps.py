"""Dependencies of organizations: the service, the caller's `OrgAccess` (resolved once per
request), role checks, and the callers that may be API keys."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.core.database import SessionDep
from app.core.reads import ReadConnectionDep
from app.core.security import is_api_key
from app.features.organizations.access import OrgAccess, key_access
from app.features.organizations.errors import (
    InsufficientScopeError,
    OrganizationNotFoundError,
    OrgRoleForbiddenError,
)
from app.features.organizations.keyauth import ApiKeyPrincipal, authenticate_key
from app.features.organizations.models import ApiKeyScope, OrgRole
from app.features.organizations.queries import OrgQueries
from app.features.organizations.service import OrganizationService
from app.features.users.deps import BearerToken, CurrentUser, get_current_user, get_viewer
from app.features.users.models import User
from app.features.users.queries import UserView


async def get_org_service(request: Request, session: SessionDep) -> OrganizationService:
    settings: Settings = request.app.state.settings
    return OrganizationService(
        session, redis=request.app.state.redis, frontend_url=settings.frontend_url
    )


OrgServiceDep = Annotated[OrganizationService, Depends(get_org_service)]


async def get_member_access(
    org_id: uuid.UUID, user: CurrentUser, service: OrgServiceDep
) -> OrgAccess:
    """The caller's membership of `{org_id}`: 404 for a non-member (platform admins included)."""
    return await service.access_for_member(user.id, org_id)


MemberAccess = Annotated[OrgAccess, Depends(get_member_access)]


def require_org_role(*roles: OrgRole) -> Callable[[OrgAccess], Awaitable[OrgAccess]]:
    """A member of one of `roles` (403 FORBIDDEN for the other members)."""

    async def check(access: MemberAccess) -> OrgAccess:
        if not access.has_role(*roles):
            raise OrgRoleForbiddenError
        return access

    return check


ManagerAccess = Annotated[OrgAccess, Depends(require_org_role(OrgRole.owner, OrgRole.admin))]
OwnerAccess = Annotated[OrgAccess, Depends(require_org_role(OrgRole.owner))]

# The second security scheme of the OpenAPI document: organization API keys, on the routes that
# take them (beside the OAuth2 scheme of people).
api_key_scheme = HTTPBearer(
    scheme_name="ApiKey",
    description="An organization API key: `Authorization: Bearer sk_...`.",
    auto_error=False,
)
ApiKeyCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_scheme)]


@dataclass(frozen=True, slots=True)
class Caller:
    """A person (`user`) or an organization's API key (`key`, acting as `user_id`)."""

    user: User | UserView | None
    key: ApiKeyPrincipal | None

    @property
    def user_id(self) -> uuid.UUID:
        if self.key is not None:
            return self.key.created_by
        assert self.user is not None
        return self.user.id


def _key_with(request: Request, token: str, scope: ApiKeyScope) -> Awaitable[ApiKeyPrincipal]:
    async def check() -> ApiKeyPrincipal:
        principal = await authenticate_key(request, token)
        if scope.value not in principal.scopes:
            raise InsufficientScopeError(f"This API key lacks the {scope.value} scope")
        return principal

    return check()


def writer_with_scope(scope: ApiKeyScope) -> Callable[..., Awaitable[Caller]]:
    """A user (a write route's tracked account), or an API key that holds `scope`: 401 for a
    bad key, then 403 INSUFFICIENT_SCOPE for a key without it."""

    async def resolve(
        request: Request, token: BearerToken, _: ApiKeyCredentials, session: SessionDep
    ) -> Caller:
        if token and is_api_key(token):
            return Caller(user=None, key=await _key_with(request, token, scope))
        return Caller(user=await get_current_user(request, token, session), key=None)

    return resolve


def reader_with_scope(scope: ApiKeyScope) -> Callable[..., Awaitable[Caller]]:
    """`writer_with_scope` for read routes: the user as a view, from the read connection."""

    async def resolve(
        request: Request, token: BearerToken, _: ApiKeyCredentials, connection: ReadConnectionDep
    ) -> Caller:
        if token and is_api_key(token):
            return Caller(user=None, key=await _key_with(request, token, scope))
        return Caller(user=await get_viewer(request, token, connection), key=None)

    return resolve


OrderReader = Annotated[Caller, Depends(reader_with_scope(ApiKeyScope.orders_read))]
OrderWriter = Annotated[Caller, Depends(writer_with_scope(ApiKeyScope.orders_write))]


async def access_for_caller(
    service: OrganizationService, caller: Caller, org_id: uuid.UUID
) -> OrgAccess:
    """A key reaches its own organization only (another one is 404, as for a non-member)."""
    if caller.key is not None:
        if caller.key.organization_id != org_id:
            raise OrganizationNotFoundError(org_id)
        return key_access(org_id, api_key_id=caller.key.id, scopes=caller.key.scopes)
    assert caller.user is not None
    return await service.access_for_member(caller.user.id, org_id)


async def get_reader_access(
    org_id: uuid.UUID, caller: OrderReader, connection: ReadConnectionDep
) -> OrgAccess:
    """For read routes that keys may use: the key's own organization (another one is 404), or
    the user's membership read on the read connection (404 for a non-member)."""
    if caller.key is not None:
        if caller.key.organization_id != org_id:
            raise OrganizationNotFoundError(org_id)
        return key_access(org_id, api_key_id=caller.key.id, scopes=caller.key.scopes)
    assert caller.user is not None
    access = await OrgQueries(connection).access(org_id, caller.user.id)
    if access is None:
        raise OrganizationNotFoundError(org_id)
    return access


ReaderAccess = Annotated[OrgAccess, Depends(get_reader_access)]
