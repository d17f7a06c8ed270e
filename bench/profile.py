"""Where a worker's CPU goes: py-spy's collapsed stacks summarised for the results file.

`make bench ARGS="--profile users_me"` runs the scenario a second time (after the measured run,
so the numbers are not perturbed) with `py-spy record --format raw` attached to every worker.
The raw files (collapsed stacks: `frame;frame;... count`) open in speedscope or flamegraph.pl;
the summary here gives the self time per library and the hottest functions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/(?P<pkg>[A-Za-z0-9_]+)")
_STDLIB = re.compile(r"/lib/python3[.\d]*/(?P<mod>.+)$")
# Leaves where a thread waits rather than runs (py-spy does not always see them as idle).
_WAITING = frozenset({"Condition.wait", "Event.wait", "_wait_for_tstate_lock", "select", "poll"})
_APP = re.compile(r"(?:^|/)src/app/(?P<mod>[A-Za-z0-9_/]+)\.py$")


@dataclass
class Profile:
    samples: int = 0
    waiting: int = 0  # samples of threads blocked in a wait, left out of the shares
    self_by_library: Counter[str] = field(default_factory=Counter)
    self_by_function: Counter[str] = field(default_factory=Counter)
    inclusive_by_function: Counter[str] = field(default_factory=Counter)


def library(file: str) -> str:
    """The package a frame's file belongs to: `sqlalchemy`, `app.core`, `stdlib:asyncio`...

    py-spy names files relative to the sys.path entry they came from (`anyio/_core.py`,
    `threading.py`, `app/core/middleware.py`), or absolute when they are outside it.
    """
    if m := _APP.search(file):
        file = "app/" + m.group("mod") + ".py"
    elif m := _SITE.search(file):
        file = file[m.start("pkg") :]
    elif m := _STDLIB.search(file):
        file = m.group("mod")
    if file.startswith("<"):
        return file
    parts = Path(file).parts
    if parts and parts[0] == "app":
        inner = [p.removesuffix(".py") for p in parts[1:]]
        return "app." + ".".join(inner[:2] if inner and inner[0] == "features" else inner[:1])
    name = (parts[0] if parts else file).removesuffix(".py")
    return f"stdlib:{name}" if name in sys.stdlib_module_names else name


def _function(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, frame
    file = m.group("file")
    return f"{m.group('func')} ({library(file)}: {Path(file).name})", file


def summarize(lines: list[str]) -> Profile:
    profile = Profile()
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        if not frames:
            continue
        leaf = stack.rsplit(";", 1)[-1].split(" (", 1)[0]
        if leaf in _WAITING:
            profile.waiting += count
            continue
        profile.samples += count
        name, file = frames[-1]
        profile.self_by_function[name] += count
        profile.self_by_library[library(file)] += count
        for seen in {n for n, _ in frames}:
            profile.inclusive_by_function[seen] += count
    return profile


def read(paths: list[Path]) -> Profile:
    lines: list[str] = []
    for path in paths:
        if path.exists():
            lines += path.read_text(errors="replace").splitlines()
    return summarize(lines)


def markdown(title: str, profile: Profile, files: list[Path], top: int = 12) -> list[str]:
    if not profile.samples:
        return [f"### {title}", "", "No samples (py-spy could not attach?).", ""]
    total = profile.samples

    def pct(n: int) -> str:
        return f"{n / total:.0%}"

    out = [
        f"### {title}",
        "",
        f"{total:,} samples of running stacks over every worker (py-spy, 100 Hz; "
        f"{profile.waiting:,} samples of waiting threads left out); raw: "
        + ", ".join(f"`raw/{p.parent.name}/{p.name}`" for p in files),
        "",
        "Self time by library: "
        + ", ".join(f"{lib} {pct(n)}" for lib, n in profile.self_by_library.most_common(10))
        + ".",
        "",
        "| hottest functions (self) | self | inclusive |",
        "|---|---:|---:|",
    ]
    for name, n in profile.self_by_function.most_common(top):
        out.append(f"| `{name}` | {pct(n)} | {pct(profile.inclusive_by_function[name])} |")
    return [*out, ""]


def py_spy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else None


def start(pid: int, duration_s: int, output: Path) -> subprocess.Popen[bytes] | None:
    binary = py_spy()
    if binary is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", "100",
         "--format", "raw", "--output", str(output), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
