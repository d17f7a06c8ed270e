"""Running wrk and reading what it says.

Each bench Lua script prints one `BENCH_JSON {...}` line from wrk's `done` hook (requests,
duration, latency percentiles, socket errors, a histogram of statuses counted in the `response`
hook). `parse_output` reads that line and falls back to wrk's own text report when it is missing
(an older script, a crashed hook), so a run never silently reports nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LUA_DIR = Path(__file__).resolve().parent / "lua"

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*([\d.]+)(us|ms|s|m|h)\s*$")


@dataclass
class WrkResult:
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    bytes: int = 0  # read by the client, headers included
    non_2xx_3xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    error_sample: str = ""
    source: str = "none"  # "json" (our Lua summary), "text" (wrk's report) or "none"

    @property
    def bytes_per_response(self) -> int:
        return self.bytes // self.requests if self.requests else 0

    @property
    def errors(self) -> int:
        """Every failed request: non-2xx/3xx answers plus connect/read/write/timeout errors."""
        return self.non_2xx_3xx + sum(self.socket_errors.values())


def to_ms(text: str) -> float:
    """wrk's duration notation (`812.00us`, `1.23ms`, `2.01s`) in milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_output(text: str) -> WrkResult:
    """A WrkResult from wrk's stdout (our BENCH_JSON line first, wrk's text report second)."""
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            try:
                data = json.loads(line.removeprefix("BENCH_JSON "))
            except json.JSONDecodeError:
                break
            return _from_json(data)
    return _from_text(text)


def _from_json(data: dict) -> WrkResult:
    duration_s = data["duration_us"] / 1e6
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=duration_s,
        rps=data["requests"] / duration_s if duration_s else 0.0,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        bytes=int(data.get("bytes", 0)),
        non_2xx_3xx=int(data["non_2xx_3xx"]),
        socket_errors={k: int(data[k]) for k in ("connect", "read", "write", "timeout")},
        statuses={str(k): int(v) for k, v in data.get("statuses", {}).items()},
        error_sample=str(data.get("error_sample", "")),
        source="json",
    )


def _from_text(text: str) -> WrkResult:
    result = WrkResult()
    if m := re.search(r"(\d+) requests in ([\d.]+\w+),", text):
        result.requests = int(m.group(1))
        result.duration_s = to_ms(m.group(2)) / 1000
        result.source = "text"
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        result.rps = float(m.group(1))
    for pct, attr in (("50", "p50_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        if m := re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+\w+)\s*$", text, re.MULTILINE):
            setattr(result, attr, to_ms(m.group(1)))
    if m := re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+\w+)", text, re.MULTILINE):
        result.max_ms = to_ms(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text):
        result.non_2xx_3xx = int(m.group(1))
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        result.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    return result


def ensure_wrk() -> str:
    """The wrk binary; installed from Debian's packages (apt-get) when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing the Debian package `wrk` with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(
            "error: wrk is not installed and `apt-get install wrk` failed; "
            "install it (Debian/Ubuntu: apt-get install wrk) and run again"
        )
    return found


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0].removeprefix("wrk ") if first else "unknown"


def command(
    url: str,
    script: str,
    *,
    duration_s: int,
    connections: int,
    threads: int,
    timeout_s: float,
) -> list[str]:
    return [
        "wrk",
        f"-t{max(1, min(threads, connections))}",
        f"-c{connections}",
        f"-d{duration_s}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA_DIR / script),
        url,
    ]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    full_env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), **env}
    return subprocess.Popen(
        cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(process: subprocess.Popen[str], raw_path: Path | None) -> WrkResult:
    out, _ = process.communicate()
    if raw_path is not None:
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        raw_path.write_text(" ".join(map(str, process.args)) + "\n\n" + out)  # type: ignore[arg-type]
    result = parse_output(out)
    if process.returncode != 0 or result.source == "none":
        result.error_sample = result.error_sample or out.strip()[-300:]
    return result
