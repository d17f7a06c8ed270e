"""The errors of the auth flows, rendered as Problem Details by the core handlers."""

from __future__ import annotations

from app.core.errors import BadRequestError, ForbiddenError, UnauthorizedError


class InvalidCredentialsError(UnauthorizedError):
    """A login with an unknown email or a wrong password: one answer for both, so neither can
    be told apart. 401: the caller is not authenticated (compare `WrongPasswordError`)."""

    code = "INVALID_CREDENTIALS"
    default_detail = "Incorrect email or password"


class AccountDisabledError(ForbiddenError):
    code = "ACCOUNT_DISABLED"
    default_detail = "This account is deactivated"


class InvalidRefreshTokenError(UnauthorizedError):
    default_detail = "Invalid, expired or revoked refresh token"


class InvalidEmailTokenError(BadRequestError):
    """An emailed (verification or reset) token that is unknown, used or expired.

    Not `app.core.security.InvalidTokenError`, which is a JWT that does not decode."""

    code = "INVALID_TOKEN"
    default_detail = "This link is invalid or has expired"


class WrongPasswordError(BadRequestError):
    """The current password given to change it is wrong.

    The same `code` as `InvalidCredentialsError` (API.md: a client shows both as "wrong
    password"), but a different answer on purpose: 400, because the caller *is* authenticated
    (a 401 would tell a client to drop its tokens and log in again), and a detail that names the
    current password, since there is no email here to keep secret."""

    code = "INVALID_CREDENTIALS"
    default_detail = "The current password is incorrect"
