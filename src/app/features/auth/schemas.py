"""Wire shapes of the auth flows. Passwords come in; only tokens of the caller go out."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, StringConstraints

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
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")
