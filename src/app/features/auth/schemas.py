"""Wire shapes of the auth flows. Passwords come in; only tokens of the caller go out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from app.features.auth.passwords import GivenPassword, NewPassword
from app.features.users.schemas import FullName, RequestModel

# Tokens are JWTs or 43-character URL-safe strings; the bound only stops abuse.
TokenText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class RegisterIn(RequestModel):
    email: EmailStr
    password: NewPassword = Field(
        description="8-128 characters, no composition rules, not a common password."
    )
    full_name: FullName


class LoginIn(RequestModel):
    email: EmailStr
    password: GivenPassword


class RefreshIn(RequestModel):
    refresh_token: TokenText


class TokenIn(RequestModel):
    token: TokenText


class EmailIn(RequestModel):
    email: EmailStr


class ResetPasswordIn(RequestModel):
    token: TokenText
    new_password: NewPassword


class PasswordChangeIn(RequestModel):
    current_password: GivenPassword
    new_password: NewPassword


class TokenPair(BaseModel):
    # Every member is always sent: generated clients should see `token_type` as required.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int = Field(description="Seconds until the access token expires.")


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: uuid.UUID
    issued_at: int = 0  # the pair's `iat`


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def token_pair(issued: IssuedTokens, response: Response) -> TokenPair:
    """The wire pair; tokens must never be kept by a browser or proxy cache."""
    response.headers.update(NO_STORE)
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )
