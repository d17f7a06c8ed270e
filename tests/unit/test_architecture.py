"""The layering rules of docs/architecture.md, checked on the source so that a break fails the
build.

Each check walks the AST of every module under `src/app` (not a grep: strings and comments that
mention a forbidden name do not count). The newer rules are functions of a list of modules, each
also run on a planted violation (`TestTheRulesCatchPlantedViolations`), so a rule that silently
stopped matching anything fails too.
"""

from __future__ import annotations

import ast
import re
import textwrap
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


def _modules(root: Path = SRC) -> list[Module]:
    modules = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        modules.append(Module(path, name, ast.parse(path.read_text(), filename=str(path))))
    return modules


def _planted(name: str, source: str) -> Module:
    """A module that exists only in a test: `name` as if it were under src/app."""
    path = SRC.parent / Path(*name.split(".")).with_suffix(".py")
    return Module(path, name, ast.parse(textwrap.dedent(source)))


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


# Features depend one way ---------------------------------------------------------------------


def _feature_imports(module: Module) -> Iterator[tuple[int, str]]:
    """The features a module imports, at module level or inside a function, absolute or
    relative: (line, feature)."""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(module.tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            # `from app.features import users` names the feature in the alias.
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        for name in names:
            parts = name.split(".")
            if len(parts) >= 3 and parts[:2] == ["app", "features"]:
                yield node.lineno, parts[2]


def feature_import_cycles(modules: list[Module]) -> list[str]:
    """Every cycle in the graph of features (`x -> y` when a module of x imports y), one entry
    per group of features that reach each other, with the imports that close it."""
    edges: dict[str, dict[str, list[str]]] = {}
    for module in modules:
        if module.feature is None:
            continue
        for line, feature in _feature_imports(module):
            if feature != module.feature:
                where = edges.setdefault(module.feature, {}).setdefault(feature, [])
                where.append(_where(module, line))

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        stack = [start]
        while stack:
            for target in edges.get(stack.pop(), {}):
                if target not in seen:
                    seen.add(target)
                    stack.append(target)
        return seen

    reach = {feature: reachable(feature) for feature in edges}
    cycles: list[str] = []
    done: set[str] = set()
    for feature in sorted(edges):
        if feature in done or feature not in reach[feature]:
            continue
        group = {feature} | {other for other in reach[feature] if feature in reach.get(other, ())}
        done |= group
        closing = [
            f"{source} -> {target} ({', '.join(sorted(set(places))[:2])})"
            for source in sorted(group)
            for target, places in sorted(edges.get(source, {}).items())
            if target in group
        ]
        cycles.append(" | ".join(closing))
    return cycles


def test_the_feature_import_graph_is_acyclic() -> None:
    """Features are layered (docs/architecture.md): users at the bottom, auth and the others
    built on it. A feature that needs one built on it takes what it needs from the app
    assembly (`main.py`), never by importing it."""
    assert feature_import_cycles(MODULES) == []


class TestTheFeatureGraphRuleCatchesPlantedCycles:
    def test_two_features_importing_each_other(self) -> None:
        users = _planted(
            "app.features.users.service",
            """
            from app.features.users.models import User

            async def deactivate(session, user):
                from app.features.auth.service import LoginSessions

                await LoginSessions(session).revoke_all(user.id)
            """,
        )
        auth = _planted(
            "app.features.auth.service", "from app.features.users.service import UserService\n"
        )
        assert feature_import_cycles([users, auth]) == [
            "auth -> users (app/features/auth/service.py:1)"
            " | users -> auth (app/features/users/service.py:5)"
        ]

    def test_a_longer_cycle_with_a_relative_import(self) -> None:
        planted = [
            _planted("app.features.orders.service", "from ..events import publisher\n"),
            _planted("app.features.events.router", "import app.features.products.models\n"),
            _planted("app.features.products.service", "from app.features import orders\n"),
        ]
        (cycle,) = feature_import_cycles(planted)
        assert cycle.count("->") == 3
        assert "orders -> events (app/features/orders/service.py:1)" in cycle

    def test_one_way_imports_are_no_cycle(self) -> None:
        planted = [
            _planted("app.features.auth.service", "from app.features.users import service\n"),
            _planted("app.features.orders.deps", "from app.features.users.deps import Viewer\n"),
            _planted("app.features.users.service", "from app.features.users.models import User\n"),
        ]
        assert feature_import_cycles(planted) == []


# The read side -------------------------------------------------------------------------------

# Where the asyncpg connection under SQLAlchemy may be touched: the read side's connection, and
# the pool's liveness check (it asks the driver whether the socket closed).
RAW_DRIVER_ALLOWED = {"app.core.reads", "app.core.database"}


def raw_driver_access(modules: list[Module]) -> list[str]:
    """Raw driver access (asyncpg, `driver_connection`, `get_raw_connection`) outside the read
    side's connection."""
    offenders = []
    for module in modules:
        if module.name in RAW_DRIVER_ALLOWED:
            continue
        for line, imported in _imports(module):
            if imported.split(".")[0] == "asyncpg":
                offenders.append(f"{_where(module, line)} imports {imported}")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Attribute) and node.attr in {
                "driver_connection",
                "get_raw_connection",
            }:
                offenders.append(f"{_where(module, node.lineno)} uses .{node.attr}")
    return offenders


def read_connection_outside_the_read_side(modules: list[Module]) -> list[str]:
    """Services, repositories and models never see the read-only connection: only a feature's
    `queries`, the dependencies that build them and the routes that receive them do."""
    return [
        f"{_where(module, line)} imports {imported}"
        for module in modules
        if module.feature is not None and module.layer in {"service", "repository", "models"}
        for line, imported in _imports(module)
        if imported.startswith("app.core.reads")
    ]


# A statement keyword followed by more SQL: prose ("Select a product") does not match.
SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"WHERE\s+[\w(]|FROM\s+\w+\s+(WHERE|JOIN|ORDER)|JOIN\s+\w+\s+ON)"
)


def _literal_text(node: ast.AST) -> str:
    """The constant text in an expression (the literal parts of an f-string too)."""
    return " ".join(
        part.value
        for part in ast.walk(node)
        if isinstance(part, ast.Constant) and isinstance(part.value, str)
    )


# The dev servers bootstrap their embedded PostgreSQL through psql, which binds nothing: a
# database name (an identifier, checked to be one) is formatted into its text.
SQL_FORMATTING_ALLOWED = {"app.dev"}


def sql_assembled_from_strings(modules: list[Module]) -> list[str]:
    """SQL text built with f-strings, `%`, `.format()` or `.replace()`: statements are either
    constant text with bound parameters or SQLAlchemy Core expressions."""
    offenders = []
    for module in modules:
        if module.name in SQL_FORMATTING_ALLOWED:
            continue
        for node in ast.walk(module.tree):
            built = None
            if isinstance(node, ast.JoinedStr):
                built = "an f-string"
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
                built = "% formatting"
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"replace", "format"}
            ):
                built = f".{node.func.attr}()"
            if built is not None and SQL.search(_literal_text(node)):
                offenders.append(f"{_where(module, node.lineno)} builds SQL with {built}")
    return offenders


def test_raw_driver_access_only_in_the_read_side() -> None:
    assert raw_driver_access(MODULES) == []


def test_the_read_connection_stays_on_the_read_side() -> None:
    assert read_connection_outside_the_read_side(MODULES) == []


def test_no_sql_text_is_assembled_from_strings() -> None:
    assert sql_assembled_from_strings(MODULES) == []


class TestTheRulesCatchPlantedViolations:
    """Each rule, run on a module planted with the violation it forbids, reports it."""

    def test_raw_driver_access(self) -> None:
        planted = _planted(
            "app.features.orders.repository",
            """
            async def read(session):
                connection = await session.connection()
                raw = await connection.get_raw_connection()
                return await raw.driver_connection.fetch("SELECT 1")
            """,
        )
        assert len(raw_driver_access([planted])) == 2
        importing = _planted("app.features.users.service", "import asyncpg\n")
        assert raw_driver_access([importing]) == ["app/features/users/service.py:1 imports asyncpg"]

    def test_read_connection_in_a_service(self) -> None:
        planted = _planted(
            "app.features.orders.service", "from app.core.reads import ReadConnection\n"
        )
        assert read_connection_outside_the_read_side([planted]) != []
        allowed = _planted(
            "app.features.orders.queries", "from app.core.reads import ReadConnection\n"
        )
        assert read_connection_outside_the_read_side([allowed]) == []

    @pytest.mark.parametrize(
        "source",
        [
            'q = f"SELECT {columns} FROM orders WHERE id = $1"',
            'q = BASE.replace("WHERE o.id = $1", "WHERE o.id = $1 AND o.user_id = $2")',
            'q = "SELECT id FROM {} WHERE id = $1".format(table)',
            'q = "DELETE FROM %s" % table',
            'q = text(f"UPDATE users SET name = {name!r}")',
        ],
    )
    def test_sql_assembled_from_strings(self, source: str) -> None:
        planted = _planted("app.features.orders.repository", source)
        assert len(sql_assembled_from_strings([planted])) == 1

    def test_prose_and_bound_sql_are_not_sql_assembly(self) -> None:
        planted = _planted(
            "app.features.orders.errors",
            """
            detail = f"Select a product from {count} choices"
            QUERY = text("SELECT id FROM orders WHERE id = :id")
            """,
        )
        assert sql_assembled_from_strings([planted]) == []


# Tables and their owners --------------------------------------------------------------------

# A core table belongs to the module that defines it; these modules share one.
SHARED_CORE_TABLES = {"EmailDelivery": {"app.core.email"}}
# Imports every model for Alembic; touches none.
TABLE_REGISTRY = "app.models"


def _tables(modules: list[Module]) -> dict[str, tuple[Module, str]]:
    """Every table model: class name -> (defining module, table name)."""
    tables = {}
    for module in modules:
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.ClassDef):
                continue
            is_table = any(
                kw.arg == "table" and isinstance(kw.value, ast.Constant) and kw.value.value is True
                for kw in node.keywords
            )
            if not is_table:
                continue
            name = node.name
            for item in node.body:
                targets = (
                    [item.target]
                    if isinstance(item, ast.AnnAssign)
                    else item.targets
                    if isinstance(item, ast.Assign)
                    else []
                )
                value = item.value
                named = any(isinstance(t, ast.Name) and t.id == "__tablename__" for t in targets)
                if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    tables[name] = (module, value.value)
    return tables


def _owns(owner: Module, user: Module, table_class: str) -> bool:
    if user.name == owner.name or user.name == TABLE_REGISTRY:
        return True
    if owner.feature is not None:
        return user.feature == owner.feature
    return user.name in SHARED_CORE_TABLES.get(table_class, set())


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside a type (an annotation, or a type alias such as
    `Annotated[User, ...]`): using a table as a type is not a query."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations: list[ast.expr | None] = []
        if isinstance(node, ast.Subscript):
            annotations.append(node.slice)
        if isinstance(node, ast.AnnAssign | ast.arg):
            annotations.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            annotations.append(node.returns)
        for annotation in annotations:
            if annotation is not None:
                inside.update(id(child) for child in ast.walk(annotation))
    return inside


def foreign_table_access(modules: list[Module]) -> list[str]:
    """A module using another feature's (or another core module's) table in code, or naming
    it in SQL text: each table is read and written only by its owner."""
    tables = _tables(modules)
    offenders = []
    for module in modules:
        foreign = {
            name: table for name, (owner, table) in tables.items() if not _owns(owner, module, name)
        }
        if not foreign:
            continue
        annotations = _annotation_nodes(module.tree)
        foreign_tables = set(foreign.values())
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Name) and node.id in foreign and id(node) not in annotations:
                offenders.append(f"{_where(module, node.lineno)} uses {node.id}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                for match in re.finditer(
                    r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(\w+)", node.value, flags=re.IGNORECASE
                ):
                    if match.group(1) in foreign_tables:
                        offenders.append(
                            f"{_where(module, node.lineno)} names table {match.group(1)}"
                        )
    return offenders


def test_each_table_is_used_only_by_its_owner() -> None:
    assert foreign_table_access(MODULES) == []


class TestTheTableRuleCatchesPlantedViolations:
    def test_a_feature_selecting_another_features_table(self) -> None:
        users = _planted(
            "app.features.users.models",
            """
            class User(UUIDModel, table=True):
                __tablename__ = "users"
            """,
        )
        orders = _planted(
            "app.features.orders.repository",
            """
            from app.features.users.models import User

            async def owner_email(session, user_id: uuid.UUID, owner: User) -> str:
                return await session.scalar(select(User.email).where(User.id == user_id))
            """,
        )
        offenders = foreign_table_access([users, orders])
        assert offenders == [
            "app/features/orders/repository.py:5 uses User",
            "app/features/orders/repository.py:5 uses User",
        ]

    def test_sql_text_naming_another_features_table(self) -> None:
        users = _planted(
            "app.features.users.models",
            'class User(SQLModel, table=True):\n    __tablename__ = "users"\n',
        )
        orders = _planted(
            "app.features.orders.queries",
            'Q = text("SELECT o.id FROM orders o JOIN users u ON u.id = o.user_id")\n',
        )
        assert foreign_table_access([users, orders]) == [
            "app/features/orders/queries.py:1 names table users"
        ]

    def test_the_outbox_belongs_to_its_module_alone(self) -> None:
        outbox = _planted(
            "app.core.outbox",
            'class OutboxMessage(UUIDModel, table=True):\n    __tablename__ = "outbox"\n',
        )
        email = _planted(
            "app.core.email",
            """
            from app.core.outbox import OutboxMessage

            STATEMENT = update(OutboxMessage).values(payload={})
            """,
        )
        assert foreign_table_access([outbox, email]) == ["app/core/email.py:4 uses OutboxMessage"]
        # Its own module and the Alembic registry may.
        registry = _planted("app.models", "from app.core import outbox\nTABLES = [OutboxMessage]\n")
        assert foreign_table_access([outbox, registry]) == []


def created_at_declared_by_hand(modules: list[Module]) -> list[str]:
    """A model declaring `created_at` itself instead of taking it from `CreatedAtMixin` (or
    `TimestampMixin`), which keep the column the same everywhere."""
    return [
        f"{_where(module, item.lineno)} declares {node.name}.created_at"
        for module in modules
        if module.name != "app.core.database"
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
        for item in node.body
        if isinstance(item, ast.AnnAssign)
        and isinstance(item.target, ast.Name)
        and item.target.id == "created_at"
        and "Field" in ast.dump(item.value or ast.Constant(None))
    ]


def test_created_at_comes_from_the_mixin() -> None:
    assert created_at_declared_by_hand(MODULES) == []


def test_a_model_declaring_its_own_created_at_is_caught() -> None:
    planted = _planted(
        "app.features.auth.models",
        """
        class LoginSession(UUIDModel, table=True):
            created_at: datetime = Field(default_factory=utcnow)
        """,
    )
    assert created_at_declared_by_hand([planted]) == [
        "app/features/auth/models.py:3 declares LoginSession.created_at"
    ]
    mixed = _planted(
        "app.features.auth.models",
        "class LoginSession(UUIDModel, CreatedAtMixin, table=True):\n    user_id: uuid.UUID\n",
    )
    assert created_at_declared_by_hand([mixed]) == []


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
