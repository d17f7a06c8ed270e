"""Errors of organizations, invitations and API keys, rendered as Problem Details by the core."""

from __future__ import annotations

import uuid

from app.core.errors import BadRequestError, ConflictError, ForbiddenError, NotFoundError

# One class for every route (core): a key on a person's route, or a key without the scope.
from app.core.errors import InsufficientScopeError as InsufficientScopeError


class OrganizationNotFoundError(NotFoundError):
    """Also what a non-member sees of an existing organization: its existence is not revealed."""

    def __init__(self, org_id: uuid.UUID) -> None:
        super().__init__(f"Organization {org_id} not found")


class MemberNotFoundError(NotFoundError):
    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"Member {user_id} not found")


class InvitationNotFoundError(NotFoundError):
    def __init__(self, invitation_id: uuid.UUID) -> None:
        super().__init__(f"Invitation {invitation_id} not found")


class ApiKeyNotFoundError(NotFoundError):
    def __init__(self, key_id: uuid.UUID) -> None:
        super().__init__(f"API key {key_id} not found")


class OrgRoleForbiddenError(ForbiddenError):
    default_detail = "Your role in this organization does not allow this"


class SlugTakenError(ConflictError):
    code = "SLUG_TAKEN"
    default_detail = "This slug is already in use"


class AlreadyMemberError(ConflictError):
    code = "ALREADY_MEMBER"
    default_detail = "This person is already a member of the organization"


class LastOwnerError(ConflictError):
    code = "LAST_OWNER"
    default_detail = "This is the organization's last active owner; make another member owner first"


class InvitationTokenError(BadRequestError):
    code = "INVALID_TOKEN"
    default_detail = "This invitation link is invalid, used or expired"


class InvitationEmailMismatchError(ForbiddenError):
    code = "INVITATION_EMAIL_MISMATCH"
    default_detail = "This invitation was sent to another email address"


class InvitationEmailNotVerifiedError(ForbiddenError):
    code = "EMAIL_NOT_VERIFIED"
    default_detail = "Verify your email address before accepting an invitation"
