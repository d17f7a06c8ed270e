"""The errors of the auth flows, rendered as Problem Details by the core handlers."""

from __future__ import annotations

from app.core.errors import BadRequestError, ForbiddenError, UnauthorizedError


class InvalidCredentialsError(UnauthorizedError):
    """Unknown email or wrong password: one answer for both, so neither can be told apart."""

    code = "INVALID_CREDENTIALS"
    default_detail = "Incorrect email or password"


class AccountDisabledError(ForbiddenError):
    code = "ACCOUNT_DISABLED"
    default_detail = "This account is deactivated"


class InvalidRefreshTokenError(UnauthorizedError):
    default_detail = "Invalid, expired or revoked refresh token"


class InvalidTokenError(BadRequestError):
    """A verification or reset token that is unknown, used or expired."""

    code = "INVALID_TOKEN"
    default_detail = "This link is invalid or has expired"


class WrongPasswordError(BadRequestError):
    """The current password given to change it is wrong (400: the caller is authenticated)."""

    code = "INVALID_CREDENTIALS"
    default_detail = "The current password is incorrect"
