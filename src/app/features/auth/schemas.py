"""Wire shapes of the auth flows. Passwords come in; only tokens of the caller go out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from app.features.auth.password_policy import GivenPassword, NewPassword
from app.features.users.schemas import FullName
from app.shared.schemas import RequestModel

# Tokens are JWTs or 43-character URL-safe strings; the bound only stops abuse.
TokenText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class RegisterIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "password": "correct horse battery",
                    "full_name": "Ada Lovelace",
                }
            ]
        }
    )

    email: EmailStr
    password: NewPassword = Field(
        description="8-128 characters, no composition rules, not a common password."
    )
    full_name: FullName


class LoginIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"email": "ada@example.com", "password": "correct horse battery"}]
        }
    )

    email: EmailStr
    password: GivenPassword


class TokenForm(BaseModel):
    """The OAuth2 password grant (RFC 6749, section 4.3) as a form: `username` is the email.

    What Swagger's Authorize button and OAuth2 client libraries send; other fields they may
    add are ignored.
    """

    grant_type: Annotated[str | None, Field(pattern="^password$")] = None
    username: Annotated[str, StringConstraints(max_length=320)] = Field(
        description="The account's email."
    )
    password: GivenPassword
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


class RefreshIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"refresh_token": "eyJhbGciOiJIUzI1NiJ9.eyJ0eXBlIjoicmVmcmVzaCJ9.c2ln"}]
        }
    )

    refresh_token: TokenText


class TokenIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "Xq3vG0b8Jm1tZ2pQw7yR4sK9aL6dF5hC0nE8uB3iV2o"}]}
    )

    token: TokenText


class EmailIn(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "ada@example.com"}]})

    email: EmailStr


class ResetPasswordIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "token": "Xq3vG0b8Jm1tZ2pQw7yR4sK9aL6dF5hC0nE8uB3iV2o",
                    "new_password": "a new long passphrase",
                }
            ]
        }
    )

    token: TokenText
    new_password: NewPassword


class PasswordChangeIn(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "current_password": "correct horse battery",
                    "new_password": "a new long passphrase",
                }
            ]
        }
    )

    current_password: GivenPassword
    new_password: NewPassword


class TokenPair(BaseModel):
    # Every member is always sent: generated clients should see `token_type` as required.
    model_config = ConfigDict(
        json_schema_serialization_defaults_required=True,
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIwMTkwIn0.c2ln",
                    "refresh_token": "eyJhbGciOiJIUzI1NiJ9.eyJ0eXBlIjoicmVmIn0.c2ln",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        },
    )

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
