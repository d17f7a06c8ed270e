"""The results file: one Markdown document per run, with the targets judged at 2 workers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bench import appglue, profile
from bench.scenarios import SCENARIOS

if TYPE_CHECKING:
    from bench.run import Outcome, Run

RSS_LIMIT_MB = 200.0


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_rps(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def mb(kb: int) -> float:
    return kb / 1024


def judge(kind: str, threshold: float, measured: float | None) -> str:
    """PASS or FAIL of one target; `-` when there is nothing to judge."""
    if measured is None:
        return "-"
    if kind == "p99_ms":
        return "PASS" if measured <= threshold else "FAIL"
    return "PASS" if measured >= threshold else "FAIL"


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or not floor:
        return None
    return value / floor


def settings_lines(env: dict[str, str], settings: Any) -> list[str]:
    ceiling = sorted(k for k in appglue.rate_limit_env())
    limits = (
        f"every rate-limit setting raised to a ceiling of `{appglue.RATE_CEILING}` per client "
        f"(counts: {appglue.RATE_CEILING_COUNT:,}): " + ", ".join(f"`{k}`" for k in ceiling)
        if ceiling
        else "no per-route rate-limit settings exist in `Settings` on this tree yet "
        "(nothing to raise)"
    )
    lines = [
        "`saas serve` with `APP_ENVIRONMENT=production`, JSON logs at INFO to a file "
        "(checked for error lines after each scenario, then truncated)",
        f"rate limits on (`APP_RATE_LIMIT_ENABLED=true`); {limits}",
        f"database pool per process: `APP_DB_POOL_SIZE={settings.db_pool_size}` + "
        f"`APP_DB_MAX_OVERFLOW={settings.db_max_overflow}`",
        f"JWT {settings.jwt_algorithm} with a generated 64-character secret; access tokens "
        f"live {settings.access_token_ttl_seconds} s for the run (tokens are minted by logging in "
        "through the API after each server start)",
        "no `saas worker` runs: confirmation emails stay queued in the outbox/ARQ",
    ]
    defaults = {
        "APP_ENVIRONMENT", "APP_DATABASE_URL", "APP_REDIS_URL", "APP_JWT_SECRET", "APP_LOG_LEVEL",
        "APP_LOG_FORMAT", "APP_RATE_LIMIT_ENABLED", "APP_ACCESS_TOKEN_TTL_SECONDS",
        "APP_GRACEFUL_SHUTDOWN_SECONDS", "APP_SMTP_HOST", "APP_SMTP_PORT", *ceiling,
    }  # fmt: skip
    extra = sorted(k for k in env if k.startswith("APP_") and k not in defaults)
    if extra:
        lines.append("extra settings: " + ", ".join(f"`{k}={env[k]}`" for k in extra))
    return lines


def _floor_rps(run: Run) -> dict[tuple[str, int], float]:
    return {(o.scenario.name, o.workers): o.result.rps for o in run.floors if o.result}


def _allowed_logins(run: Run) -> float | None:
    if run.verify is None:
        return None
    return run.verify.allowed_per_second(os.cpu_count() or 1)


def evaluate(run: Run, outcome: Outcome) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL) for each target of the scenario, plus "no errors"."""
    rows: list[tuple[str, str, str]] = []
    result = outcome.result
    if result is None:
        return rows
    floors = _floor_rps(run)
    for target in outcome.scenario.targets:
        if target.kind == "ratio":
            floor = floors.get((outcome.scenario.floor or "", outcome.workers))
            value = ratio(result.rps, floor)
            measured = f"{value:.0%} ({fmt_rps(result.rps)} / {fmt_rps(floor)})" if value else "-"
        elif target.kind == "vs_scenario":
            other = next(
                (
                    o.result.rps
                    for o in run.outcomes
                    if o.scenario.name == target.other and o.workers == outcome.workers and o.result
                ),
                None,
            )
            value = ratio(result.rps, other)
            measured = (
                f"{value:.0%} ({fmt_rps(result.rps)} / {fmt_rps(other)} of `{target.other}`)"
                if value
                else "-"
            )
        elif target.kind == "status_share":
            total = sum(result.statuses.values())
            value = result.statuses.get(target.other, 0) / total if total else None
            measured = f"{value:.1%} of {total:,}" if value is not None else "-"
        elif target.kind == "ratio_allowed":
            allowed = _allowed_logins(run)
            value = ratio(result.rps, allowed)
            measured = f"{value:.0%} ({result.rps:.1f} / {allowed:.1f} per s)" if value else "-"
        else:
            value = result.p99_ms
            measured = f"{fmt_ms(value)} ms"
        rows.append((target.text, measured, judge(target.kind, target.value, value)))
    errors = result.errors
    rows.append(("no errors", str(errors), "PASS" if errors == 0 else "FAIL"))
    return rows


def _row_ratio(run: Run, outcome: Outcome) -> tuple[str, str]:
    result = outcome.result
    name = outcome.scenario.floor
    if result is None or name is None:
        return "-", "-"
    if name == "argon2":
        allowed = _allowed_logins(run)
        value = ratio(result.rps, allowed)
        return (f"{allowed:.1f} (argon2)" if allowed else "-"), (f"{value:.0%}" if value else "-")
    floor = _floor_rps(run).get((name, outcome.workers))
    value = ratio(result.rps, floor)
    return fmt_rps(floor), (f"{value:.0%}" if value else "-")


def _rss_text(outcome: Outcome) -> str:
    if not outcome.rss_kb:
        return "-"
    per = sorted(outcome.rss_kb.values())
    if len(per) == 1:
        return f"{mb(per[0]):.0f}"
    return f"{mb(sum(per)):.0f} ({' + '.join(f'{mb(v):.0f}' for v in per)})"


def render(run: Run) -> str:
    target_w = run.args.target_workers
    out: list[str] = []
    started = run.started
    took = (__import__("datetime").datetime.now(started.tzinfo) - started).total_seconds()
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--", "src") else ""
    argv = " ".join(sys.argv[1:])
    facts = run.facts
    out += [
        f"# Benchmark results, {started:%Y-%m-%d}",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC on commit `{commit}`{dirty}, "
        f"in {took / 60:.0f} min, with `make bench`" + (f" (`{argv}`)" if argv else "") + ".",
        "Every API scenario is compared with the floor measured in the same run at the same worker "
        "count (see `bench/README.md`); the targets of issue 6 are judged at "
        f"{target_w} workers and {run.args.connections} connections.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {os.cpu_count()} x {_cpu_model()} (usable: {len(os.sched_getaffinity(0))}) |",
        f"| OS | {platform.platform()} |",
        f"| Python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| PostgreSQL | {facts.get('postgresql', '?')} ({facts.get('database_source', '?')}, "
        f"max_connections {facts.get('pg_max_connections', '?')}) |",
        f"| Redis | {run.facts.get('redis', '?')} ({run.facts.get('redis_source', '?')}) |",
        f"| wrk | {run.facts.get('wrk', '?')} |",
        "| libraries | " + ", ".join(f"{k} {v}" for k, v in _versions().items()) + " |",
        "",
        "## Settings",
        "",
        *[f"- {line}" for line in run.settings_lines],
        f"- load: `wrk -t{run.args.threads} -c{run.args.connections} -d{run.args.duration}s "
        f"--latency` with a Lua `response` hook counting every status, after "
        f"{run.args.warmup} s of warm-up per scenario; client and server share the machine",
        f"- worker counts: {', '.join(map(str, run.args.worker_counts))}",
        "",
    ]
    if run.seed is not None:
        s = run.seed
        out += [
            "## Data",
            "",
            f"{s.users:,} users, {s.products:,} products, {s.orders:,} orders with {s.lines:,} "
            f"lines, seeded with COPY in {s.seconds:.1f} s (tables found: "
            + (", ".join(f"{k}=`{v}`" for k, v in s.tables.items()) or "none")
            + "). Every product has a stock of 1,000,000,000 so that `POST /orders` never runs "
            "out. All bench users share one password hash, computed once with the app's hasher.",
            "",
        ]
    if run.verify is not None:
        allowed = _allowed_logins(run) or 0
        out += [
            "## argon2",
            "",
            f"Hasher: {run.hasher}, parameters `{run.argon2_params}`. One verify costs "
            f"{run.verify.cpu_s * 1000:.0f} ms of CPU ({run.verify.wall_s * 1000:.0f} ms wall), "
            f"measured in this run: these parameters allow {os.cpu_count()} cores / "
            f"{run.verify.cpu_s * 1000:.0f} ms = **{allowed:.1f} logins/s** on this machine.",
            "",
        ]
    out += _targets_section(run, target_w)
    for workers in run.args.worker_counts:
        out += _results_section(run, workers, target_w)
    out += _variants_section(run)
    out += _floors_section(run)
    profiled = [o for o in _in_order(run.outcomes) if o.profile_files]
    if profiled:
        out += ["## Profiles", ""]
        for o in profiled:
            title = f"{_title(o)}, {o.workers} worker{'s' if o.workers > 1 else ''}"
            out += profile.markdown(title, profile.read(o.profile_files), o.profile_files)
    notes = list(dict.fromkeys(run.notes))
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    out += [
        "## How to read this",
        "",
        "- **ratio** = the scenario's requests/s divided by its floor's, both measured in this "
        "run with the same worker count: 60% means the API does the job at 60% of the speed of "
        "the least Python code that gives the same answer on the same stack. Absolute numbers "
        "drift with the machine's load; ratios measured side by side mostly do not.",
        "- p50/p99 are wrk's latency percentiles (milliseconds, client side; wrk does not correct "
        "for coordinated omission, so p99 under saturation is a lower bound).",
        "- errors = non-2xx/3xx answers plus socket errors (connect, read, write, timeout).",
        "- RSS is the peak resident memory of each uvicorn worker during the scenario (MB), "
        "`sum (worker + worker)`; the target is on one worker.",
        "- bytes/resp is what the client read per response, headers included: the floor and the "
        "API should answer with bodies of about the same size.",
        "- raw wrk output and server error lines: `bench/results/raw/` (not committed).",
        "",
    ]
    return "\n".join(out)


def _targets_section(run: Run, target_w: int) -> list[str]:
    out = [f"## Targets ({target_w} workers, {run.args.connections} connections)", ""]
    # Judged on the first variant (the baseline: without --variant, the only one).
    baseline = _variants(run)[0]
    rows = _in_order(o for o in run.outcomes if o.workers == target_w and o.variant == baseline)
    if not rows:
        return [*out, f"Not measured: no run at {target_w} workers.", ""]
    out += ["| scenario | target | measured | result |", "|---|---|---|---|"]
    for outcome in rows:
        if outcome.skipped:
            targets = ", ".join(t.text for t in outcome.scenario.targets) or "no errors"
            out.append(f"| {outcome.scenario.title} | {targets} | {outcome.skipped} | not run |")
            continue
        for target, measured, verdict in evaluate(run, outcome):
            out.append(f"| {outcome.scenario.title} | {target} | {measured} | **{verdict}** |")
    peaks = [max(o.rss_kb.values()) for o in rows if o.rss_kb]
    if peaks:
        peak = mb(max(peaks))
        verdict = "PASS" if peak <= RSS_LIMIT_MB else "FAIL"
        out.append(
            f"| any API scenario | RSS of one worker <= {RSS_LIMIT_MB:.0f} MB | "
            f"{peak:.0f} MB peak | **{verdict}** |"
        )
    return [*out, ""]


def _results_section(run: Run, workers: int, target_w: int) -> list[str]:
    rows = _in_order(o for o in run.outcomes if o.workers == workers)
    plural = "s" if workers > 1 else ""
    out = [
        f"## Results, {workers} worker{plural}",
        "",
        "| scenario | req/s | p50 ms | p99 ms | errors | floor req/s | ratio | result | "
        "RSS MB | bytes/resp | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for outcome in rows:
        title = _title(outcome)
        if outcome.skipped:
            out.append(f"| {title} | - | - | - | - | - | - | not run | - | - | {outcome.skipped} |")
            continue
        r = outcome.result
        assert r is not None
        floor, value = _row_ratio(run, outcome)
        verdicts = [v for _, _, v in evaluate(run, outcome)]
        verdict = "FAIL" if "FAIL" in verdicts else "PASS"
        if workers != target_w:
            verdict = f"({verdict.lower()})"
        notes = list(outcome.notes)
        if r.errors:
            codes = ", ".join(f"{k}: {v}" for k, v in sorted(r.statuses.items()))
            sockets = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v)
            notes.append("statuses " + codes + (f"; socket errors {sockets}" if sockets else ""))
            if r.error_sample:
                notes.append("first error: `" + _cell(r.error_sample[:160]) + "`")
        out.append(
            f"| {title} | {fmt_rps(r.rps)} | {fmt_ms(r.p50_ms)} | {fmt_ms(r.p99_ms)} | "
            f"{r.errors} | {floor} | {value} | {verdict} | {_rss_text(outcome)} | "
            f"{r.bytes_per_response:,} | {_cell('; '.join(notes))} |"
        )
    if workers != target_w:
        out.append("")
        out.append(
            f"(Targets are judged at {target_w} workers; lowercase verdicts are for orientation.)"
        )
    return [*out, ""]


def _floors_section(run: Run) -> list[str]:
    if not run.floors:
        return []
    out = [
        "## Floors (bench/floor.py, same run)",
        "",
        "| floor | workers | req/s | p50 ms | p99 ms | errors | RSS MB | bytes/resp |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in run.floors:
        r = o.result
        assert r is not None
        out.append(
            f"| {o.scenario.title} | {o.workers} | {fmt_rps(r.rps)} | {fmt_ms(r.p50_ms)} | "
            f"{fmt_ms(r.p99_ms)} | {r.errors} | {_rss_text(o)} | {r.bytes_per_response:,} |"
        )
    return [*out, ""]


def _in_order(outcomes: Iterable[Outcome]) -> list[Outcome]:
    order = {s.name: i for i, s in enumerate(SCENARIOS)}
    return sorted(outcomes, key=lambda o: order.get(o.scenario.name, len(order)))


def _variants(run: Run) -> list[str]:
    return [name for name, _ in getattr(run.args, "variants", None) or [("", {})]]


def _title(outcome: Outcome) -> str:
    suffix = f" [{outcome.variant}]" if outcome.variant else ""
    return outcome.scenario.title + suffix


def _variants_section(run: Run) -> list[str]:
    """Each scenario under each variant side by side, against the first (the baseline)."""
    variants = _variants(run)
    if len(variants) < 2:
        return []
    settings = {name: extra for name, extra in run.args.variants}
    out = [
        "## Variants",
        "",
        "The same scenarios, one API server per variant, one after the other in this run; "
        f"change is against **{variants[0]}**.",
        "",
        *[
            f"- **{name}**: "
            + (", ".join(f"`{k}={v}`" for k, v in settings[name].items()) or "no extra setting")
            for name in variants
        ],
        "",
        "| scenario | workers | variant | req/s | change | p50 ms | p99 ms | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    measured = {
        (o.scenario.name, o.workers, o.variant): o.result
        for o in run.outcomes
        if o.result is not None
    }
    for workers in run.args.worker_counts:
        for scenario in SCENARIOS:
            base = measured.get((scenario.name, workers, variants[0]))
            for name in variants:
                result = measured.get((scenario.name, workers, name))
                if result is None:
                    continue
                change = "-"
                if base is not None and base.rps and name != variants[0]:
                    change = f"{(result.rps - base.rps) / base.rps:+.1%}"
                out.append(
                    f"| {scenario.title} | {workers} | {name} | {fmt_rps(result.rps)} | "
                    f"{change} | {fmt_ms(result.p50_ms)} | {fmt_ms(result.p99_ms)} | "
                    f"{result.errors} |"
                )
    return [*out, ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _git(*args: str) -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = [
        "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy",
        "sqlmodel", "asyncpg", "redis", "python-jose", "argon2-cffi", "structlog", "slowapi",
        "prometheus-client",
    ]  # fmt: skip
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
