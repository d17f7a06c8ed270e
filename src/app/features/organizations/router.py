"""`/api/v1/organizations` and `/api/v1/invitations/accept`: teams, members, invitations, keys.

Authorization happens in the dependencies: `MemberAccess` (404 for a non-member), and
`ManagerAccess` / `OwnerAccess` (403 FORBIDDEN for a member without the role). Body-dependent
role rules (who may change whose role, who may remove whom) are the service's.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Request, Response, status

from app.core.errors import (
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    error_responses,
)
from app.core.routing import make_router
from app.features.organizations.deps import (
    ManagerAccess,
    MemberAccess,
    OrgServiceDep,
    OwnerAccess,
)
from app.features.organizations.errors import (
    AlreadyMemberError,
    ApiKeyNotFoundError,
    InsufficientScopeError,
    InvitationEmailMismatchError,
    InvitationEmailNotVerifiedError,
    InvitationNotFoundError,
    InvitationTokenError,
    LastOwnerError,
    MemberNotFoundError,
    OrganizationNotFoundError,
    OrgRoleForbiddenError,
    SlugTakenError,
)
from app.features.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPage,
    InvitationAccept,
    InvitationCreate,
    InvitationOut,
    InvitationPage,
    InvitationStatusOut,
    MemberOut,
    MemberPage,
    MemberRoleUpdate,
    OrganizationCreate,
    OrganizationOut,
    OrganizationPage,
    OrganizationUpdate,
)
from app.features.users.deps import CurrentUser
from app.shared.pagination import PageParamsDep

router = make_router(tags=["organizations"])
# `POST /invitations/accept` has a tag of its own (and so its own operationId prefix).
invitations_router = make_router(tags=["invitations"])

ORGS = "/organizations"
ORG = "/organizations/{org_id}"
# Every route of a person: a bad token is 401, an API key 403 INSUFFICIENT_SCOPE.
_USER = (UnauthorizedError, InsufficientScopeError, ServiceUnavailableError)
_MEMBER = (*_USER, OrganizationNotFoundError)
_MANAGER = (*_MEMBER, OrgRoleForbiddenError)
_BODY = (PayloadTooLargeError, UnsupportedMediaTypeError)
_LOCATION = {
    "Location": {"description": "URL of the new organization.", "schema": {"type": "string"}}
}


@router.post(
    ORGS,
    response_model=OrganizationOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "Created", "headers": _LOCATION},
        **error_responses(*_USER, SlugTakenError, *_BODY),
    },
    operation_id="organizations-create",
)
async def create_organization(
    body: OrganizationCreate,
    user: CurrentUser,
    service: OrgServiceDep,
    request: Request,
    response: Response,
) -> OrganizationOut:
    """Create an organization; you become its owner. Without `slug`, one is derived from the
    name (with a random suffix when taken); a `slug` you send that is taken is 409."""
    organization = await service.create(user, name=body.name, slug=body.slug)
    response.headers["Location"] = str(
        request.app.url_path_for("read_organization", org_id=str(organization.id))
    )
    return organization


@router.get(
    ORGS,
    response_model=OrganizationPage,
    responses=error_responses(*_USER),
    operation_id="organizations-list",
)
async def list_organizations(
    user: CurrentUser, service: OrgServiceDep, params: PageParamsDep
) -> OrganizationPage:
    """Your organizations, by name, each with your role."""
    return await service.list_for(user, params)


@router.get(
    ORG,
    response_model=OrganizationOut,
    responses=error_responses(*_MEMBER),
    operation_id="organizations-get",
)
async def read_organization(access: MemberAccess, service: OrgServiceDep) -> OrganizationOut:
    """One of your organizations (404 if you are not a member)."""
    return service.out(access)


@router.patch(
    ORG,
    response_model=OrganizationOut,
    responses=error_responses(*_MANAGER, SlugTakenError, *_BODY),
    operation_id="organizations-update",
)
async def update_organization(
    body: OrganizationUpdate, access: ManagerAccess, service: OrgServiceDep
) -> OrganizationOut:
    """Rename it (the slug stays) or change its slug (owners and admins)."""
    return await service.update(access, name=body.name, slug=body.slug)


@router.delete(
    ORG,
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*_MANAGER),
    operation_id="organizations-delete",
)
async def delete_organization(access: OwnerAccess, service: OrgServiceDep) -> None:
    """Delete it (owners): members lose access and its API keys stop working at once; its
    orders are kept and its slug stays taken."""
    await service.delete(access)


@router.get(
    f"{ORG}/members",
    response_model=MemberPage,
    responses=error_responses(*_MEMBER),
    operation_id="organizations-members-list",
)
async def list_members(
    access: MemberAccess, service: OrgServiceDep, params: PageParamsDep
) -> MemberPage:
    """The members, by the time they joined."""
    return await service.members(access, params)


@router.patch(
    f"{ORG}/members/{{user_id}}",
    response_model=MemberOut,
    responses=error_responses(*_MANAGER, MemberNotFoundError, LastOwnerError, *_BODY),
    operation_id="organizations-members-update",
)
async def change_member_role(
    user_id: uuid.UUID, body: MemberRoleUpdate, access: ManagerAccess, service: OrgServiceDep
) -> MemberOut:
    """Change a member's role: owners any role, admins between `member` and `admin` only.
    Demoting the last active owner is 409 LAST_OWNER."""
    return await service.change_role(access, user_id, body.role)


@router.delete(
    f"{ORG}/members/{{user_id}}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*_MANAGER, MemberNotFoundError, LastOwnerError),
    operation_id="organizations-members-delete",
)
async def remove_member(user_id: uuid.UUID, access: MemberAccess, service: OrgServiceDep) -> None:
    """Remove a member (owners: anyone; admins: members and admins), or leave (your own id).
    The last active owner cannot leave or be removed (409 LAST_OWNER)."""
    await service.remove_member(access, user_id)


@router.post(
    f"{ORG}/invitations",
    response_model=InvitationOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*_MANAGER, AlreadyMemberError, *_BODY),
    operation_id="organizations-invitations-create",
)
async def invite(
    body: InvitationCreate, access: ManagerAccess, user: CurrentUser, service: OrgServiceDep
) -> InvitationOut:
    """Invite someone by email (owners and admins; the `owner` role by owners only). A pending
    invitation to the same address is replaced: its link stops working."""
    return await service.invite(access, user, email=str(body.email), role=body.role)


@router.get(
    f"{ORG}/invitations",
    response_model=InvitationPage,
    responses=error_responses(*_MANAGER),
    operation_id="organizations-invitations-list",
)
async def list_invitations(
    access: ManagerAccess,
    service: OrgServiceDep,
    params: PageParamsDep,
    status_filter: Annotated[
        InvitationStatusOut | None,
        Query(alias="status", description="Only invitations in this status."),
    ] = None,
) -> InvitationPage:
    """The organization's invitations, newest first (owners and admins)."""
    return await service.invitations(access, params, status=status_filter)


@router.delete(
    f"{ORG}/invitations/{{invitation_id}}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*_MANAGER, InvitationNotFoundError),
    operation_id="organizations-invitations-delete",
)
async def revoke_invitation(
    invitation_id: uuid.UUID, access: ManagerAccess, service: OrgServiceDep
) -> None:
    """Revoke an invitation: its link stops working. One no longer pending is left as it is."""
    await service.revoke_invitation(access, invitation_id)


@invitations_router.post(
    "/invitations/accept",
    response_model=OrganizationOut,
    responses=error_responses(
        *_USER,
        InvitationTokenError,
        InvitationEmailMismatchError,
        InvitationEmailNotVerifiedError,
        *_BODY,
    ),
    operation_id="invitations-accept",
    tags=["invitations"],
)
async def accept_invitation(
    body: InvitationAccept, user: CurrentUser, service: OrgServiceDep
) -> OrganizationOut:
    """Join the organization of an emailed invitation. Your verified email must be the invited
    one; the token is single-use and lasts 7 days."""
    return await service.accept(user, body.token)


@router.post(
    f"{ORG}/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(*_MANAGER, *_BODY),
    operation_id="organizations-api-keys-create",
)
async def create_api_key(
    body: ApiKeyCreate, access: ManagerAccess, service: OrgServiceDep, response: Response
) -> ApiKeyCreated:
    """Create an API key (owners and admins). The key is in this response only: store it."""
    response.headers["Cache-Control"] = "no-store"
    return await service.create_key(
        access, name=body.name, scopes=body.scopes, expires_in_days=body.expires_in_days
    )


@router.get(
    f"{ORG}/api-keys",
    response_model=ApiKeyPage,
    responses=error_responses(*_MANAGER),
    operation_id="organizations-api-keys-list",
)
async def list_api_keys(
    access: ManagerAccess, service: OrgServiceDep, params: PageParamsDep
) -> ApiKeyPage:
    """The organization's live API keys, newest first (never the keys themselves)."""
    return await service.keys(access, params)


@router.delete(
    f"{ORG}/api-keys/{{key_id}}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(*_MANAGER, ApiKeyNotFoundError),
    operation_id="organizations-api-keys-delete",
)
async def delete_api_key(key_id: uuid.UUID, access: ManagerAccess, service: OrgServiceDep) -> None:
    """Delete an API key: it stops working at once, on every server."""
    await service.delete_key(access, key_id)
