"""The password policy and the shipped list of common passwords."""

from __future__ import annotations

import pytest

from app.features.auth.password_policy import common_passwords, is_common, policy_problem


def test_the_list_holds_ten_thousand_passwords_the_length_rule_lets_through() -> None:
    passwords = common_passwords()
    assert len(passwords) == 10_000
    assert all(8 <= len(password) <= 128 for password in passwords)
    assert {"password", "12345678", "qwertyuiop", "iloveyou"} <= passwords


@pytest.mark.parametrize("password", ["password", "PassWord", "Trustno1"])
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert is_common(password)
    assert policy_problem(password) == "is one of the most common passwords; choose another"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("seven77", "must be 8 to 128 characters long"),
        ("z" * 129, "must be 8 to 128 characters long"),
        ("correct-horse-battery-staple", None),
        ("        ", None),  # no composition rules: eight spaces are eight characters
        ("z" * 128, None),
    ],
)
def test_length_is_the_only_other_rule(password: str, problem: str | None) -> None:
    assert policy_problem(password) == problem
