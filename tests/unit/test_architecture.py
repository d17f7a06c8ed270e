"""The layering rules of ARCHITECTURE.md, checked on the source so that a break fails the build.

Each check walks the AST of every module under `src/app` (not a grep: strings and comments that
mention a forbidden name do not count).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "app"


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted, e.g. app.features.orders.service
    tree: ast.Module

    @property
    def feature(self) -> str | None:
        parts = self.name.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "features" else None

    @property
    def layer(self) -> str:
        return self.name.rsplit(".", 1)[-1]


def _modules() -> list[Module]:
    modules = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        modules.append(Module(path, name, ast.parse(path.read_text(), filename=str(path))))
    return modules


MODULES = _modules()


def _imports(module: Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _calls(module: Module) -> Iterator[tuple[int, str]]:
    """Every call as `name` or `object.attribute` (the last two parts of the callee)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                yield node.lineno, func.id
            elif isinstance(func, ast.Attribute):
                owner = func.value
                prefix = owner.id if isinstance(owner, ast.Name) else ""
                yield node.lineno, f"{prefix}.{func.attr}"


def _where(module: Module, line: int) -> str:
    return f"{module.path.relative_to(SRC.parent)}:{line}"


def test_the_tree_has_modules_to_check() -> None:
    names = {module.name for module in MODULES}
    assert {"app.main", "app.core.database", "app.config"} <= names


def test_only_the_database_core_commits() -> None:
    offenders = [
        _where(module, line)
        for module in MODULES
        if module.name != "app.core.database"
        for line, call in _calls(module)
        if call.endswith(".commit")
    ]
    assert offenders == []


def test_only_config_reads_the_environment() -> None:
    # The CLI and the dev servers set variables for child processes; they may touch os.environ.
    allowed = {"app.config", "app.cli", "app.dev"}
    offenders = []
    for module in MODULES:
        if module.name in allowed:
            continue
        for node in ast.walk(module.tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr in {"getenv", "environ", "putenv"}
            ):
                offenders.append(_where(module, node.lineno))
    assert offenders == []


def test_core_never_imports_a_feature() -> None:
    offenders = [
        _where(module, line)
        for module in MODULES
        if module.name.startswith(("app.core", "app.shared"))
        for line, imported in _imports(module)
        if imported.startswith("app.features")
    ]
    assert offenders == []


def test_features_never_import_another_features_repository_or_router() -> None:
    offenders = []
    for module in MODULES:
        if module.feature is None:
            continue
        for line, imported in _imports(module):
            parts = imported.split(".")
            foreign = len(parts) >= 4 and parts[:2] == ["app", "features"]
            if foreign and parts[2] != module.feature and parts[3] in {"repository", "router"}:
                offenders.append(f"{_where(module, line)} imports {imported}")
    assert offenders == []


@pytest.mark.parametrize("layer", ["service", "repository", "models"])
def test_no_http_exception_below_the_router(layer: str) -> None:
    offenders = [
        _where(module, line)
        for module in MODULES
        if module.feature is not None and module.layer == layer
        for line, imported in _imports(module)
        if imported.endswith("HTTPException")
    ]
    assert offenders == []


def test_no_sql_in_routers() -> None:
    offenders = [
        f"{_where(module, line)} imports {imported}"
        for module in MODULES
        if module.feature is not None and module.layer == "router"
        for line, imported in _imports(module)
        if imported.startswith(("sqlalchemy", "sqlmodel", "asyncpg"))
    ]
    assert offenders == []


def test_no_print_outside_the_command_line() -> None:
    offenders = [
        _where(module, line)
        for module in MODULES
        if module.name not in {"app.cli", "app.dev"}
        for line, call in _calls(module)
        if call == "print"
    ]
    assert offenders == []


def test_only_the_access_module_makes_an_org_access() -> None:
    """Organization data is reached through an `OrgAccess`; only `organizations/access.py`
    makes one (from a membership or a key), so no route can forge an access to another org."""
    offenders = [
        _where(module, line)
        for module in MODULES
        if module.name != "app.features.organizations.access"
        for line, call in _calls(module)
        if call in {"OrgAccess", ".OrgAccess"} or call.endswith(".OrgAccess")
    ]
    assert offenders == []


def test_organization_tables_are_queried_only_by_the_organizations_repository() -> None:
    """No other module imports the organization tables to query them on its own."""
    tables = {"Membership", "Invitation", "ApiKey", "Organization"}
    allowed = {
        "app.features.organizations.repository",
        "app.features.organizations.service",
        "app.features.organizations.models",
        "app.models",
    }
    offenders = [
        f"{_where(module, line)} imports {imported}"
        for module in MODULES
        if module.name not in allowed
        for line, imported in _imports(module)
        if imported.startswith("app.features.organizations.models.")
        and imported.rsplit(".", 1)[-1] in tables
    ]
    assert offenders == []
