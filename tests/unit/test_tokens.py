"""Only our own HS256 tokens pass: other algorithms and key-carrying headers are refused.

python-jose >= 3.5.0 (CVE-2024-33663: algorithm confusion with OpenSSH ECDSA keys;
CVE-2024-33664: JWE decompression bomb). Whatever the library does, `Tokens.decode` allows one
algorithm and a header of `alg` and `typ` only.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt

from app.config import load_settings
from app.core.security import InvalidTokenError, Tokens

SECRET = "unit-tokens-" + "s" * 40


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(
        load_settings(
            database_url="postgresql+asyncpg://localhost/x",
            redis_url="redis://127.0.0.1:6379/0",
            jwt_secret=SECRET,
        )
    )


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(uuid.uuid4()),
        "type": "access",
        "jti": uuid.uuid4().hex,
        "sid": str(uuid.uuid4()),
        "ver": 0,
        "iat": now,
        "exp": now + 600,
        "iss": "saas-backend",
        "aud": "saas-backend-api",
        "role": "admin",
    }


def pem(key: Any) -> bytes:
    result: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return result


def test_our_own_token_passes(tokens: Tokens) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert tokens.decode(token, "access").role == "admin"


@pytest.mark.parametrize(
    ("algorithm", "key"),
    [
        pytest.param("RS256", lambda: pem(rsa.generate_private_key(65537, 2048)), id="RS256"),
        pytest.param("ES256", lambda: pem(ec.generate_private_key(ec.SECP256R1())), id="ES256"),
        pytest.param("HS512", lambda: SECRET, id="HS512-other-than-configured"),
    ],
)
def test_tokens_of_another_algorithm_are_refused(tokens: Tokens, algorithm: str, key: Any) -> None:
    token = jwt.encode(claims(), key(), algorithm=algorithm)
    with pytest.raises(InvalidTokenError):
        tokens.decode(token, "access")


def test_an_attacker_key_embedded_as_jwk_is_refused(tokens: Tokens) -> None:
    private = rsa.generate_private_key(65537, 2048)
    numbers = private.public_key().public_numbers()
    jwk = {"kty": "RSA", "n": str(numbers.n), "e": str(numbers.e)}
    token = jwt.encode(claims(), pem(private), algorithm="RS256", headers={"jwk": jwk})
    with pytest.raises(InvalidTokenError):
        tokens.decode(token, "access")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}, id="jwk"),
        pytest.param({"kid": "../../dev/null"}, id="kid"),
        pytest.param({"jku": "https://attacker.example/keys.json"}, id="jku"),
        pytest.param({"x5u": "https://attacker.example/cert.pem"}, id="x5u"),
        pytest.param({"crit": ["exp"]}, id="crit"),
    ],
)
def test_key_carrying_or_key_pointing_headers_are_refused_even_with_our_signature(
    tokens: Tokens, header: dict[str, Any]
) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256", headers=header)
    with pytest.raises(InvalidTokenError):
        tokens.decode(token, "access")


def test_none_and_garbage_headers_are_refused(tokens: Tokens) -> None:
    unsigned = jwt.encode(claims(), SECRET, algorithm="HS256").rsplit(".", 1)[0]
    header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    for token in (f"{header}.{unsigned.split('.')[1]}.", "not.a.token", "%%%"):
        with pytest.raises(InvalidTokenError):
            tokens.decode(token, "access")


def test_the_dependency_floor_is_past_the_2024_cves() -> None:
    from importlib.metadata import version

    major, minor, *_ = (int(part) for part in version("python-jose").split(".")[:2])
    assert (major, minor) >= (3, 5)


class TestVerifiedTokens:
    """A token's signature and claims are checked once; its expiry on every use."""

    def _token(self, tokens: Tokens, *, ttl_left: int) -> str:
        now = int(time.time())
        token, _ = tokens.encode(
            type="access",
            subject=uuid.uuid4(),
            session_id=uuid.uuid4(),
            version=0,
            now=now - tokens.access_ttl + ttl_left,
        )
        return token

    def test_a_second_use_is_not_verified_again(
        self, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = self._token(tokens, ttl_left=600)
        first = tokens.decode(token, "access")
        calls: list[str] = []
        real = jwt.decode
        monkeypatch.setattr(jwt, "decode", lambda *a, **k: calls.append("decode") or real(*a, **k))
        assert tokens.decode(token, "access") == first
        assert calls == []

    def test_a_remembered_token_is_refused_once_it_expires(
        self, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = self._token(tokens, ttl_left=60)
        claims = tokens.decode(token, "access")
        later = claims.expires_at + 1
        monkeypatch.setattr("app.core.security.time.time", lambda: float(later))
        with pytest.raises(InvalidTokenError, match="Expired"):
            tokens.decode(token, "access")

    def test_a_remembered_token_is_still_refused_as_another_type(self, tokens: Tokens) -> None:
        token = self._token(tokens, ttl_left=600)
        tokens.decode(token, "access")
        with pytest.raises(InvalidTokenError, match="wrong token type"):
            tokens.decode(token, "refresh")

    def test_a_forged_copy_of_a_remembered_token_is_refused(self, tokens: Tokens) -> None:
        token = self._token(tokens, ttl_left=600)
        tokens.decode(token, "access")
        head, payload, signature = token.split(".")
        forged = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        with pytest.raises(InvalidTokenError):
            tokens.decode(forged, "access")
