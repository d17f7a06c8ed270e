"""The benchmark's pure helpers: reading wrk's output and judging targets (no load is run)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import appglue, profile, report, seed, wrk
from bench.run import write_lua_data

WRK_TEXT = """\
Running 3s test @ http://127.0.0.1:47053
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    93.70ms  150.62ms   1.30s    90.32%
    Req/Sec   629.12    392.46     1.91k    74.14%
  Latency Distribution
     50%   47.51ms
     75%   79.29ms
     90%  237.25ms
     99%  832.51ms
  3641 requests in 3.10s, 1.42MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 12
Requests/sec:   1174.83
Transfer/sec:    468.22KB
"""

BENCH_JSON = (
    'BENCH_JSON {"requests":3641,"duration_us":3099174,"bytes":1485921,"p50_us":47515,'
    '"p90_us":237254,"p99_us":832509,"p999_us":1174249,"max_us":1295904,"mean_us":93699.2,'
    '"non_2xx_3xx":3,"connect":0,"read":1,"write":0,"timeout":0,'
    '"statuses":{"200":3638,"429":3},"error_sample":"429 {\\"code\\":\\"RATE_LIMITED\\"}"}'
)


class TestWrkDurations:
    @pytest.mark.parametrize(
        ("text", "ms"),
        [("812.00us", 0.812), ("47.51ms", 47.51), ("1.30s", 1300.0), ("2m", 120_000.0)],
    )
    def test_each_unit_of_wrk_is_converted_to_milliseconds(self, text: str, ms: float) -> None:
        assert wrk.to_ms(text) == pytest.approx(ms)

    def test_a_value_without_a_unit_is_refused(self) -> None:
        with pytest.raises(ValueError, match="not a wrk duration"):
            wrk.to_ms("12")


class TestParseOutput:
    def test_the_lua_summary_line_is_preferred_to_the_text_report(self) -> None:
        result = wrk.parse_output(WRK_TEXT + BENCH_JSON + "\n")

        assert result.source == "json"
        assert result.requests == 3641
        assert result.rps == pytest.approx(3641 / 3.099174)
        assert result.p50_ms == pytest.approx(47.515)
        assert result.p99_ms == pytest.approx(832.509)
        assert result.statuses == {"200": 3638, "429": 3}
        assert result.errors == 4  # three 429s and one read error
        assert result.error_sample == '429 {"code":"RATE_LIMITED"}'

    def test_the_text_report_is_read_when_the_summary_line_is_missing(self) -> None:
        result = wrk.parse_output(WRK_TEXT)

        assert result.source == "text"
        assert result.requests == 3641
        assert result.duration_s == pytest.approx(3.10)
        assert result.rps == pytest.approx(1174.83)
        assert (result.p50_ms, result.p90_ms, result.p99_ms) == pytest.approx(
            (47.51, 237.25, 832.51)
        )
        assert result.max_ms == pytest.approx(1300.0)
        assert result.non_2xx_3xx == 12
        assert result.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 5}
        assert result.errors == 19

    def test_output_without_any_report_yields_an_empty_result(self) -> None:
        result = wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")

        assert result.source == "none"
        assert (result.requests, result.rps, result.p99_ms) == (0, 0.0, None)

    def test_a_broken_summary_line_falls_back_to_the_text_report(self) -> None:
        result = wrk.parse_output(WRK_TEXT + "BENCH_JSON {not json\n")

        assert result.source == "text"
        assert result.requests == 3641


class TestTargets:
    @pytest.mark.parametrize(
        ("kind", "threshold", "measured", "verdict"),
        [
            ("ratio", 0.5, 0.5, "PASS"),
            ("ratio", 0.5, 0.49, "FAIL"),
            ("p99_ms", 100, 100.0, "PASS"),
            ("p99_ms", 100, 100.1, "FAIL"),
            ("ratio_allowed", 0.8, None, "-"),
        ],
    )
    def test_a_target_passes_only_on_its_side_of_the_threshold(
        self, kind: str, threshold: float, measured: float | None, verdict: str
    ) -> None:
        assert report.judge(kind, threshold, measured) == verdict

    def test_a_ratio_without_a_floor_is_not_a_number(self) -> None:
        assert report.ratio(100.0, None) is None
        assert report.ratio(100.0, 0.0) is None
        assert report.ratio(50.0, 200.0) == 0.25

    def test_latencies_keep_three_significant_digits(self) -> None:
        assert [report.fmt_ms(v) for v in (1.234, 12.34, 123.4, None)] == [
            "1.23",
            "12.3",
            "123",
            "-",
        ]


class TestAppIntrospection:
    def test_argon2_parameters_are_read_from_the_phc_string(self) -> None:
        encoded = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
        assert appglue.argon2_parameters(encoded) == "m=19456,t=2,p=1"
        assert appglue.argon2_parameters("not-a-hash") == "unknown"

    def test_routes_match_whatever_their_parameters_are_named(self) -> None:
        table = {("GET", "/api/v1/orders/{}")}
        assert appglue.has_route(table, "GET", "/api/v1/orders/{order_id}")
        assert not appglue.has_route(table, "POST", "/api/v1/orders/{order_id}")
        assert not appglue.has_route(table, "GET", "/api/v1/orders")

    def test_the_rate_limit_switch_itself_is_never_overridden(self) -> None:
        env = appglue.rate_limit_env()
        assert "APP_RATE_LIMIT_ENABLED" not in env
        assert all(
            v in (appglue.RATE_CEILING, str(appglue.RATE_CEILING_COUNT)) for v in env.values()
        )

    def test_the_apps_route_table_has_the_operations_routes(self) -> None:
        table = appglue.route_table()
        assert ("GET", "/health") in table
        assert ("GET", "/ready") in table


class TestSeedValues:
    def test_ids_are_version_7_uuids_that_sort_by_time(self) -> None:
        early = seed.uuid7(datetime(2026, 1, 1, tzinfo=UTC))
        late = seed.uuid7(datetime(2026, 6, 1, tzinfo=UTC))
        assert early.version == 7
        assert early < late

    def test_an_unknown_not_null_column_gets_a_value_of_its_type(self) -> None:
        def column(data_type: str, labels: list[str] | None = None) -> seed.Column:
            return seed.Column("x", data_type, data_type, False, False, False, labels)

        assert isinstance(seed._fallback(column("uuid")), uuid.UUID)
        assert seed._fallback(column("integer")) == 0
        assert seed._fallback(column("boolean")) is False
        assert seed._fallback(column("jsonb")) == "{}"
        assert seed._fallback(column("USER-DEFINED", ["pending", "paid"])) == "pending"
        with pytest.raises(RuntimeError, match="cannot seed"):
            seed._fallback(column("tsvector"))

    def test_known_values_are_shaped_to_the_column(self) -> None:
        enum = seed.Column("status", "USER-DEFINED", "order_status", False, False, False, ["paid"])
        text = seed.Column("role", "character varying", "varchar", False, False, False)
        naive = seed.Column("at", "timestamp without time zone", "timestamp", False, False, False)
        moment = datetime(2026, 12, 1, 12, tzinfo=UTC)

        assert seed._coerce(enum, "paid") == "paid"
        assert seed._coerce(enum, "unheard-of") == "paid"
        assert seed._coerce(text, 5) == "5"
        assert seed._coerce(naive, moment) == datetime(2026, 12, 1, 12)
        assert seed._coerce(text, None) is None


class TestLuaData:
    def test_the_data_file_is_a_lua_table_literal(self, tmp_path: Path) -> None:
        path = write_lua_data(
            tmp_path / "data.lua",
            {"auth": [{"token": 'a"b', "orders": ["o1"]}], "n": 3, "ok": True},
        )

        assert path.read_text() == (
            'return {["auth"]={{["token"]="a\\"b",["orders"]={"o1"}}},["n"]=3,["ok"]=true}\n'
        )


class TestProfileSummary:
    @pytest.mark.parametrize(
        ("file", "name"),
        [
            ("app/core/middleware.py", "app.core"),
            ("app/features/auth/deps.py", "app.features.auth"),
            ("/work/x/src/app/features/orders/service.py", "app.features.orders"),
            ("sqlalchemy/orm/session.py", "sqlalchemy"),
            ("/venv/lib/python3.11/site-packages/asyncpg/connection.py", "asyncpg"),
            ("asyncio/base_events.py", "stdlib:asyncio"),
            ("/usr/lib/python3.11/json/encoder.py", "stdlib:json"),
            ("threading.py", "stdlib:threading"),
            ("<string>", "<string>"),
        ],
    )
    def test_each_frame_is_attributed_to_its_library(self, file: str, name: str) -> None:
        assert profile.library(file) == name

    def test_self_and_inclusive_time_are_counted_and_waiting_threads_left_out(self) -> None:
        lines = [
            "run (asyncio/runners.py:118);handle (app/core/middleware.py:79);"
            "execute (asyncpg/connection.py:350) 6",
            "run (asyncio/runners.py:118);handle (app/core/middleware.py:80) 4",
            "Thread.run (threading.py:1002);Condition.wait (threading.py:327) 90",
            "not a stack line",
        ]

        summary = profile.summarize(lines)

        assert (summary.samples, summary.waiting) == (10, 90)
        assert summary.self_by_library == {"asyncpg": 6, "app.core": 4}
        assert summary.inclusive_by_function["run (stdlib:asyncio: runners.py)"] == 10
        assert summary.self_by_function["handle (app.core: middleware.py)"] == 4


class TestVariants:
    """`--variant` and `--otel-variants`: the API measured under several settings in one run."""

    def test_otel_variants_are_off_all_and_a_tenth(self) -> None:
        from bench.run import parse_args

        args = parse_args(["--otel-variants", "--scenarios", "health"])
        assert [name for name, _ in args.variants] == ["otel-off", "otel-100", "otel-10"]
        settings = dict(args.variants)
        assert settings["otel-off"] == {"APP_OTEL_ENABLED": "false"}
        assert settings["otel-100"]["OTEL_TRACES_SAMPLER_ARG"] == "1.0"
        assert settings["otel-10"] == {
            "APP_OTEL_ENABLED": "true",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        }

    def test_without_variants_there_is_one_unnamed(self) -> None:
        from bench.run import parse_args

        assert parse_args(["--scenarios", "health"]).variants == [("", {})]

    @pytest.mark.parametrize(
        "spec",
        ["no-colon", ":APP_X=1", "x:PATH=/bin", "x:APP_X", "bad name:APP_X=1"],
    )
    def test_a_malformed_variant_is_refused(self, spec: str) -> None:
        from bench.run import parse_args

        with pytest.raises(SystemExit):
            parse_args(["--variant", spec, "--scenarios", "health"])

    def test_two_variants_of_one_name_are_refused(self) -> None:
        from bench.run import parse_args

        with pytest.raises(SystemExit):
            parse_args(["--variant", "a:APP_X=1", "--variant", "a:APP_X=2"])

    def test_the_report_compares_each_variant_with_the_first(self, tmp_path: Path) -> None:
        from bench.run import Outcome, Run, parse_args
        from bench.scenarios import SCENARIOS

        args = parse_args(["--otel-variants", "--scenarios", "health", "--workers", "1"])
        run = Run(args=args, started=datetime.now(UTC), raw_dir=tmp_path)
        health = next(s for s in SCENARIOS if s.name == "health")
        for name, rps in (("otel-off", 1000.0), ("otel-100", 900.0), ("otel-10", 990.0)):
            result = wrk.parse_output(
                BENCH_JSON.replace('"requests":3641', f'"requests":{int(rps * 3.099174)}')
            )
            run.outcomes.append(Outcome(health, 1, result=result, variant=name))
        text = report.render(run)
        section = text.split("## Variants", 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| GET /health |")]
        assert [row.split(" | ")[2] for row in rows] == ["otel-off", "otel-100", "otel-10"]
        assert [row.split(" | ")[4] for row in rows] == ["-", "-10.0%", "-1.0%"]
        assert "`OTEL_TRACES_SAMPLER_ARG=0.1`" in section
        # The targets are judged on the baseline only: one row set, not three.
        targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
        assert "[otel-100]" not in targets


class TestRealtimeHelpers:
    def test_steal_is_the_eighth_counters_share_of_the_first_eight(self) -> None:
        from bench.realtime import steal_share

        before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
        after = [400, 0, 150, 1100, 0, 0, 0, 150, 7, 7]
        # 300 user + 100 system + 300 idle + 100 steal; guest time (counted in user) is not
        # counted twice.
        assert steal_share(before, after) == pytest.approx(100 / 800)

    def test_no_time_passed_or_no_steal_counter_is_no_steal(self) -> None:
        from bench.realtime import steal_share

        assert steal_share([1] * 10, [1] * 10) == 0.0
        assert steal_share([1, 2, 3, 4], [5, 6, 7, 8]) == 0.0

    def test_the_machines_counters_are_read(self) -> None:
        from bench.realtime import cpu_times

        counters = cpu_times()
        assert len(counters) >= 8
        assert all(value >= 0 for value in counters)
        assert sum(counters[:8]) > 0
