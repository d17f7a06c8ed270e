"""The rules of organizations: roles, the last owner, invitations and API keys.

Flushes, never commits: the request's session commits once the endpoint returns. Every method on
an organization's data takes the caller's `OrgAccess` and works through `OrgRepository(access)`.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from datetime import timedelta
from urllib.parse import urlencode

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import after_commit, utcnow
from app.core.email import queue_email
from app.core.errors import ServiceUnavailableError
from app.core.logging import get_logger
from app.core.security import digest, new_secret
from app.features.organizations.access import OrgAccess, OrgSummary, member_access
from app.features.organizations.errors import (
    AlreadyMemberError,
    ApiKeyNotFoundError,
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
from app.features.organizations.keyauth import PREFIX_LENGTH, forget_keys, new_key
from app.features.organizations.keyauth import digest as key_digest
from app.features.organizations.models import (
    ApiKey,
    ApiKeyScope,
    Invitation,
    InvitationStatus,
    Organization,
    OrgRole,
)
from app.features.organizations.repository import (
    MembershipRow,
    OrganizationDirectory,
    OrgRepository,
)
from app.features.organizations.schemas import (
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyPage,
    InvitationOut,
    InvitationPage,
    InvitationStatusOut,
    MemberOut,
    MemberPage,
    OrganizationOut,
    OrganizationPage,
)
from app.features.users.models import User
from app.features.users.service import UserService
from app.shared.pagination import PageParams

log = get_logger(__name__)

INVITATION_TTL = timedelta(days=7)
SLUG_MAX = 40
SLUG_MIN = 3
SLUG_SUFFIX_HEX = 6
# Admins manage members and admins; only owners touch owners.
ADMIN_MANAGED = frozenset({OrgRole.member, OrgRole.admin})
MANAGERS = (OrgRole.owner, OrgRole.admin)


def derive_slug(name: str) -> str:
    """API.md's derivation: lowercased, accents removed, every run of other characters a `-`,
    trimmed of `-`, cut to 40."""
    ascii_name = (
        unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii").lower()
    )
    return re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:SLUG_MAX]


def with_suffix(base: str) -> str:
    """`base-` and 6 random hex characters, the base cut so that the slug stays within 40.

    An empty base (a name of only other characters) gives the 6 characters alone.
    """
    suffix = secrets.token_hex(SLUG_SUFFIX_HEX // 2)
    base = base[: SLUG_MAX - SLUG_SUFFIX_HEX - 1].rstrip("-")
    return f"{base}-{suffix}" if base else suffix


def organization_out(organization: OrgSummary, role: OrgRole) -> OrganizationOut:
    return OrganizationOut(
        id=organization.id,
        name=organization.name,
        slug=organization.slug,
        role=role,
        created_at=organization.created_at,
        updated_at=organization.updated_at,
    )


def member_out(row: MembershipRow, user: User) -> MemberOut:
    return MemberOut(
        user_id=row.user_id,
        email=user.email,
        full_name=user.full_name,
        role=row.role,
        joined_at=row.joined_at,
    )


def invitation_out(invitation: Invitation) -> InvitationOut:
    status = InvitationStatusOut(invitation.status.value)
    if status is InvitationStatusOut.pending and invitation.expires_at <= utcnow():
        status = InvitationStatusOut.expired
    return InvitationOut(
        id=invitation.id,
        organization_id=invitation.organization_id,
        email=invitation.email,
        role=invitation.role,
        status=status,
        invited_by=invitation.invited_by,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
    )


def key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        organization_id=key.organization_id,
        name=key.name,
        prefix=key.prefix,
        scopes=[ApiKeyScope(scope) for scope in key.scopes],
        created_by=key.created_by,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
    )


async def member_role(
    session: AsyncSession, org_id: uuid.UUID, user_id: uuid.UUID
) -> OrgRole | None:
    """The user's role in a live organization, None for a non-member (for other features'
    rules, such as who may cancel an organization's order)."""
    found = await OrganizationDirectory(session).membership(org_id, user_id)
    return found[1] if found is not None else None


class OrganizationService:
    def __init__(self, session: AsyncSession, *, redis: Redis, frontend_url: str) -> None:
        self.session = session
        self.redis = redis
        self.frontend_url = frontend_url.rstrip("/")
        self.directory = OrganizationDirectory(session)
        self.users = UserService(session)

    def _repo(self, access: OrgAccess) -> OrgRepository:
        return OrgRepository(self.session, access)

    # Access

    async def access_for_member(self, user_id: uuid.UUID, org_id: uuid.UUID) -> OrgAccess:
        """The caller's access to the organization: 404 when they are not a member (or it is
        deleted), whatever their platform role."""
        found = await self.directory.membership(org_id, user_id)
        if found is None:
            raise OrganizationNotFoundError(org_id)
        organization, role = found
        return member_access(organization, user_id=user_id, role=role)

    # Organizations

    async def create(self, user: User, *, name: str, slug: str | None) -> OrganizationOut:
        """The caller becomes its owner. A sent slug that is taken is 409; a derived one gets a
        random suffix instead."""
        if slug is not None:
            org = Organization(name=name, slug=slug)
            await self.directory.create(org, owner_id=user.id)
        else:
            org = await self._create_with_derived_slug(user, name)
        log.info("organization.created", organization_id=str(org.id), user_id=str(user.id))
        await self.session.refresh(org)
        return organization_out(
            OrgSummary(org.id, org.name, org.slug, org.created_at, org.updated_at), OrgRole.owner
        )

    async def _create_with_derived_slug(self, user: User, name: str) -> Organization:
        base = derive_slug(name)
        candidate = base if len(base) >= SLUG_MIN else with_suffix(base)
        for _ in range(5):
            org = Organization(name=name, slug=candidate)
            try:
                await self.directory.create(org, owner_id=user.id)
            except SlugTakenError:
                candidate = with_suffix(base)
                continue
            return org
        raise SlugTakenError("Could not find a free slug; send one")

    async def list_for(self, user: User, params: PageParams) -> OrganizationPage:
        rows, total = await self.directory.list_for_user(
            user.id, offset=params.offset, limit=params.limit
        )
        items = [organization_out(org, role) for org, role in rows]
        return OrganizationPage.of(items, total=total, params=params)

    def out(self, access: OrgAccess) -> OrganizationOut:
        assert access.organization is not None
        assert access.role is not None
        return organization_out(access.organization, access.role)

    async def update(
        self, access: OrgAccess, *, name: str | None, slug: str | None
    ) -> OrganizationOut:
        """Rename (the slug stays) and/or change the slug (409 SLUG_TAKEN)."""
        assert access.role is not None
        organization = await self._repo(access).update(name=name, slug=slug)
        log.info("organization.updated", organization_id=str(access.org_id))
        return organization_out(organization, access.role)

    async def delete(self, access: OrgAccess) -> None:
        """Gone for everyone at once; its API keys stop working; its orders are kept."""
        hashes = await self._repo(access).soft_delete()
        await self._forget_keys_now_and_after_commit(hashes)
        log.info("organization.deleted", organization_id=str(access.org_id), keys=len(hashes))

    # Members

    async def members(self, access: OrgAccess, params: PageParams) -> MemberPage:
        rows, total = await self._repo(access).members(offset=params.offset, limit=params.limit)
        users = await self.users.get_many([row.user_id for row in rows])
        items = [member_out(row, users[row.user_id]) for row in rows]
        return MemberPage.of(items, total=total, params=params)

    async def _member_out(self, repo: OrgRepository, user_id: uuid.UUID) -> MemberOut:
        row = await repo.member(user_id)
        user = await self.users.get(user_id)
        assert row is not None
        assert user is not None
        return member_out(row, user)

    async def _active(self, user_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        users = await self.users.get_many(user_ids)
        return [user_id for user_id in user_ids if user_id in users and users[user_id].is_active]

    async def change_role(self, access: OrgAccess, user_id: uuid.UUID, role: OrgRole) -> MemberOut:
        """Owners change any role; admins only between `member` and `admin`."""
        repo = self._repo(access)
        target = await repo.member(user_id)
        if target is None:
            raise MemberNotFoundError(user_id)
        if not access.has_role(OrgRole.owner) and (
            target.role not in ADMIN_MANAGED or role not in ADMIN_MANAGED
        ):
            raise OrgRoleForbiddenError("Only an owner may give or take the owner role")
        if target.role == OrgRole.owner and role != OrgRole.owner:
            await self._keep_an_owner(repo, leaving=user_id)
        if role != target.role:
            await repo.set_role(user_id, role)
            log.info(
                "organization.role_changed",
                organization_id=str(access.org_id),
                user_id=str(user_id),
                role=role.value,
            )
        return await self._member_out(repo, user_id)

    async def remove_member(self, access: OrgAccess, user_id: uuid.UUID) -> None:
        """Owners remove anyone, admins members and admins, anyone themself (leaving)."""
        leaving = user_id == access.user_id
        if not leaving and not access.has_role(*MANAGERS):
            raise OrgRoleForbiddenError("Only an owner or an admin may remove members")
        repo = self._repo(access)
        target = await repo.member(user_id)
        if target is None:
            raise MemberNotFoundError(user_id)
        if not leaving and target.role == OrgRole.owner and not access.has_role(OrgRole.owner):
            raise OrgRoleForbiddenError("Only an owner may remove an owner")
        if target.role == OrgRole.owner:
            await self._keep_an_owner(repo, leaving=user_id)
        await repo.remove_member(user_id)
        log.info(
            "organization.member_removed",
            organization_id=str(access.org_id),
            user_id=str(user_id),
            left=leaving,
        )

    async def _keep_an_owner(self, repo: OrgRepository, *, leaving: uuid.UUID) -> None:
        """409 LAST_OWNER unless an active owner other than `leaving` remains. The owner rows
        are locked first, so concurrent changes of owners run one after the other."""
        await repo.lock_owners()
        if not any(owner != leaving for owner in await self._active(await repo.owners())):
            raise LastOwnerError

    async def check_account_can_close(self, user: User) -> None:
        """Before `user` is deactivated: 409 LAST_OWNER if they are the last active owner of an
        organization that has other (active) members."""
        for organization, role in await self.directory.organizations_of(user.id):
            if role != OrgRole.owner:
                continue
            repo = self._repo(member_access(organization, user_id=user.id, role=role))
            await repo.lock_owners()
            others = [
                owner for owner in await self._active(await repo.owners()) if owner != user.id
            ]
            members = [member for member in await repo.member_ids() if member != user.id]
            if not others and await self._active(members):
                raise LastOwnerError(
                    f"You are the last active owner of {organization.name}; make another "
                    "member owner first"
                )

    # Invitations

    async def invite(
        self, access: OrgAccess, inviter: User, *, email: str, role: OrgRole
    ) -> InvitationOut:
        """Invite an address (replacing its pending invitation) and email the link."""
        if role == OrgRole.owner and not access.has_role(OrgRole.owner):
            raise OrgRoleForbiddenError("Only an owner may invite an owner")
        email = email.strip().lower()
        repo = self._repo(access)
        existing = await self.users.get_by_email(email)
        if existing is not None and await repo.is_member(existing.id):
            raise AlreadyMemberError
        await repo.revoke_pending_invitation(email)
        token = new_secret()
        invitation = Invitation(
            organization_id=access.org_id,
            email=email,
            role=role,
            token_hash=digest(token),
            invited_by=inviter.id,
            expires_at=utcnow() + INVITATION_TTL,
        )
        await repo.add_invitation(invitation)
        assert access.organization is not None
        await queue_email(
            self.session,
            to=email,
            template="organization_invitation",
            context={
                "organization": access.organization.name,
                "inviter": inviter.full_name,
                "role": role.value,
                "link": f"{self.frontend_url}/accept-invitation?{urlencode({'token': token})}",
            },
        )
        log.info(
            "organization.invited",
            organization_id=str(access.org_id),
            invitation_id=str(invitation.id),
            role=role.value,
        )
        return invitation_out(invitation)

    async def invitations(
        self, access: OrgAccess, params: PageParams, *, status: InvitationStatusOut | None
    ) -> InvitationPage:
        rows, total = await self._repo(access).invitations(
            status=status.value if status else None,
            now=utcnow(),
            offset=params.offset,
            limit=params.limit,
        )
        return InvitationPage.of([invitation_out(row) for row in rows], total=total, params=params)

    async def revoke_invitation(self, access: OrgAccess, invitation_id: uuid.UUID) -> None:
        """Its link stops working; one no longer pending is left as it is."""
        invitation = await self._repo(access).invitation(invitation_id)
        if invitation is None:
            raise InvitationNotFoundError(invitation_id)
        if invitation.status == InvitationStatus.pending:
            invitation.status = InvitationStatus.revoked
            await self.session.flush()
            log.info("organization.invitation_revoked", invitation_id=str(invitation_id))

    async def accept(self, user: User, token: str) -> OrganizationOut:
        """Join with an emailed token. Checked in API.md's order: the token, then the address,
        then its verification."""
        invitation = await self.directory.invitation_by_token(digest(token))
        if (
            invitation is None
            or invitation.status != InvitationStatus.pending
            or invitation.expires_at <= utcnow()
        ):
            raise InvitationTokenError
        if invitation.email != user.email.lower():
            raise InvitationEmailMismatchError
        if not user.is_verified:
            raise InvitationEmailNotVerifiedError
        invitation.status = InvitationStatus.accepted
        invitation.accepted_at = utcnow()
        invitation.accepted_by = user.id
        role = await self.directory.join(invitation.organization_id, user.id, invitation.role)
        organization = await self.directory.organization(invitation.organization_id)
        assert organization is not None
        log.info(
            "organization.invitation_accepted",
            organization_id=str(organization.id),
            invitation_id=str(invitation.id),
            user_id=str(user.id),
        )
        return organization_out(organization, role)

    # API keys

    async def create_key(
        self,
        access: OrgAccess,
        *,
        name: str,
        scopes: list[ApiKeyScope],
        expires_in_days: int | None,
    ) -> ApiKeyCreated:
        assert access.user_id is not None
        key = new_key()
        record = ApiKey(
            organization_id=access.org_id,
            name=name,
            prefix=key[:PREFIX_LENGTH],
            key_hash=key_digest(key),
            scopes=sorted(scope.value for scope in scopes),
            created_by=access.user_id,
            expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        await self._repo(access).add_key(record)
        log.info(
            "organization.api_key_created",
            organization_id=str(access.org_id),
            api_key_id=str(record.id),
            prefix=record.prefix,
        )
        return ApiKeyCreated(**key_out(record).model_dump(), key=key)

    async def keys(self, access: OrgAccess, params: PageParams) -> ApiKeyPage:
        rows, total = await self._repo(access).keys(offset=params.offset, limit=params.limit)
        return ApiKeyPage.of([key_out(row) for row in rows], total=total, params=params)

    async def delete_key(self, access: OrgAccess, key_id: uuid.UUID) -> None:
        key_hash = await self._repo(access).delete_key(key_id)
        if key_hash is None:
            raise ApiKeyNotFoundError(key_id)
        await self._forget_keys_now_and_after_commit([key_hash])
        log.info("organization.api_key_deleted", api_key_id=str(key_id))

    async def _forget_keys_now_and_after_commit(self, hashes: list[str]) -> None:
        """Tombstone the cached lookups before the commit (a Redis failure fails the request,
        so no delete commits while a cached key lives on) and once more after it (a lookup that
        read the key between the two cannot cache it: it only sets an absent entry)."""
        if not hashes:
            return
        try:
            await forget_keys(self.redis, hashes)
        except (RedisError, OSError):
            raise ServiceUnavailableError("Cannot revoke API keys right now") from None

        async def again() -> None:
            await forget_keys(self.redis, hashes)

        after_commit(self.session, again)
