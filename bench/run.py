"""The HTTP benchmark runner: lwsobs against plain aiohttp and its peers, in one run.

Every configuration is its own server process on 127.0.0.1 (bench/server.py), pinned to one core
while wrk (keep-alive) and h2load (HTTP/1.1 pipelining, -m8) drive it from the other core, next
to the counting OTLP receiver (bench/otlp_sink.py). Configurations are interleaved across
repetitions (the order rotates each repetition) so that drift of a shared, noisy machine hits
all of them alike, and each ratio is taken against the plain server of the same repetition and
tool. For lwsobs with spans, the runner proves no span was dropped: the receiver must have
decoded exactly transactions + wsis spans, the number lwsobs itself saw.

    python bench/run.py --quick          # < 3 min: 6 configurations x 2 tools
    python bench/run.py --full           # < 10 min
    python bench/run.py --configs plain,lwsobs-spans --duration 3 --reps 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = sys.executable

from server import CONFIGS  # noqa: E402 - bench/ is on sys.path when run as a script

TOOLS = ("wrk", "h2load")
SPAN_CONFIGS = frozenset({"lwsobs-spans", "otel-contrib", "otel-middleware"})
# What the issue asks of lwsobs, and the peers' reference points measured on this machine kind.
TARGETS = {
    "lwsobs-metrics": ">= 0.95",
    "lwsobs-spans": ">= 0.80",
    "otel-contrib": "ref ~0.26",
    "otel-middleware": "ref ~0.42",
    "prom-middleware": "ref ~0.78",
}
MODES = {"quick": (2, 4), "full": (5, 6)}  # (seconds per tool run, repetitions)
CONNECTIONS = 50
SATURATED = 0.9  # server CPU share below which a run measured the load generator, not the server
PIPELINE = 8
WARMUP_S = 0.5
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0


# -- small helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, timeout: float = 2.0) -> bytes:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def wait_until_serving(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    """Poll until `url` answers; False if the process died or the deadline passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError, urllib.error.URLError):
            http("GET", url, timeout=0.5)
            return True
        time.sleep(0.05)
    return False


@dataclass(frozen=True)
class Pinning:
    """Which cores the server and the load side get; None when pinning is not possible."""

    server: str | None
    load: str | None

    @classmethod
    def detect(cls) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return cls(str(cpus[0]), str(cpus[1]))
        return cls(None, None)

    def wrap(self, core: str | None, argv: list[str]) -> list[str]:
        return argv if core is None else ["taskset", "-c", core, *argv]


def clean_env() -> dict[str, str]:
    """The caller's environment without OTEL_*/LWSOBS_*: each config sets exactly its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LWSOBS_"))}


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare two runs: cores, CPU, versions, load, lwsobs commit."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "lwsobs"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "missing"

    return {
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "opentelemetry-sdk": version("opentelemetry-sdk"),
        "opentelemetry-instrumentation-aiohttp-server": version(
            "opentelemetry-instrumentation-aiohttp-server"
        ),
        "prometheus-client": version("prometheus-client"),
        "protobuf": version("protobuf"),
        "lwsobs": f"{version('lwsobs')} @ {commit}{' (lwsobs/ modified)' if dirty else ''}",
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# -- load generators ---------------------------------------------------------------------------


@dataclass
class Load:
    """One load generator run: its rate and what it completed, plus anything that went wrong."""

    tool: str
    rps: float = 0.0
    completed: int = 0
    server_cpu: float | None = None  # share of one core the server used while this tool ran
    errors: list[str] = field(default_factory=list)


def parse_wrk(text: str) -> Load:
    load = Load("wrk")
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    done = re.search(r"^\s*(\d+) requests in ", text, re.M)
    if rate is None or done is None:
        load.errors.append("could not parse wrk output")
        return load
    load.rps, load.completed = float(rate.group(1)), int(done.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if non2xx:
        load.errors.append(f"{non2xx.group(1)} non-2xx responses")
    sockets = re.search(r"Socket errors:(.*)", text)
    if sockets:
        load.errors.append(f"socket errors:{sockets.group(1)}")
    return load


def parse_h2load(text: str) -> Load:
    # h2load 1.52: "finished in 2.00s, 18475.50 req/s, 2.77MB/s" and
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    load = Load("h2load")
    rate = re.search(r"^finished in [\d.]+\w*, ([\d.]+) req/s", text, re.M)
    reqs = re.search(
        r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
        re.M,
    )
    if rate is None or reqs is None:
        load.errors.append("could not parse h2load output")
        return load
    load.rps, load.completed = float(rate.group(1)), int(reqs.group(1))
    failed, errored, timeout = (int(reqs.group(i)) for i in (2, 3, 4))
    if failed or errored or timeout:
        load.errors.append(f"{failed} failed, {errored} errored, {timeout} timed out")
    return load


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tool(
    tool: str, url: str, duration: int, connections: int, pin: Pinning, server_pid: int
) -> Load:
    if tool == "wrk":
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", url]
    else:
        argv = ["h2load", "--h1", f"-c{connections}", f"-m{PIPELINE}", "-D", str(duration), url]
    cpu_before, started = cpu_seconds(server_pid), time.monotonic()
    try:
        out = subprocess.run(
            pin.wrap(pin.load, argv), capture_output=True, text=True, timeout=duration + 20
        )
    except subprocess.TimeoutExpired:
        return Load(tool, errors=[f"{tool} did not finish within {duration + 20} s"])
    cpu_after, elapsed = cpu_seconds(server_pid), time.monotonic() - started
    load = (parse_wrk if tool == "wrk" else parse_h2load)(out.stdout)
    if cpu_before is not None and cpu_after is not None:
        # Below ~90% the load generator, not the server, set the pace of this run.
        load.server_cpu = (cpu_after - cpu_before) / elapsed
    if out.returncode != 0:
        load.errors.append(f"{tool} exited {out.returncode}: {out.stderr.strip()[-300:]}")
    return load


def warm_up(url: str, connections: int, pin: Pinning) -> None:
    """~0.5 s of keep-alive load: wrk takes whole seconds only, so it is stopped with SIGINT."""
    argv = pin.wrap(pin.load, ["wrk", "-t1", f"-c{connections}", "-d2s", url])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(WARMUP_S)
    proc.send_signal(signal.SIGINT)  # taskset execs wrk, so this reaches wrk itself
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- one server run ----------------------------------------------------------------------------


@dataclass
class Run:
    """One configuration in one repetition: both tools against one server process."""

    config: str
    rep: int
    loads: dict[str, Load] = field(default_factory=dict)
    sink: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] | None = None
    verification: str | None = None  # "VERIFIED ..." / "FAILED ..." for lwsobs configs
    problems: list[str] = field(default_factory=list)
    log: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not (self.verification or "").startswith("FAILED")


class Sink:
    """The OTLP receiver process, shared by all runs and reset before each server starts."""

    def __init__(self, pin: Pinning) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = pin.wrap(pin.load, [PYTHON, str(BENCH / "otlp_sink.py"), str(self.port)])
        self.proc = subprocess.Popen(argv, env=clean_env(), cwd=ROOT)
        if not wait_until_serving(f"{self.base}/count", self.proc, START_TIMEOUT_S):
            self.close()
            raise RuntimeError("the OTLP sink did not start")

    @property
    def endpoint(self) -> str:
        return f"{self.base}/v1/traces"

    def reset(self) -> None:
        http("POST", f"{self.base}/reset")

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = json.loads(http("GET", f"{self.base}/count"))
        return counts

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(config: str, sink: Sink, stats_path: Path) -> dict[str, str]:
    env = clean_env()
    if config == "lwsobs-metrics":
        env["LWSOBS_SPANS"] = "off"
    if config in SPAN_CONFIGS:
        # lwsobs-spans: only the endpoint; sampling etc. are the standard OTEL_* defaults.
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = sink.endpoint
    if config.startswith("lwsobs"):
        env["LWSOBS_BENCH_STATS"] = str(stats_path)
    return env


def stop(proc: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM and wait: the server shuts down gracefully and flushes; None if it did."""
    if proc.poll() is not None:
        return f"server had already exited with {proc.returncode} before the stop"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return f"server did not stop within {STOP_TIMEOUT_S} s of SIGTERM (killed)"
    return None if code == 0 else f"server exited with {code}"


def verify(run: Run) -> str | None:
    """Check that lwsobs saw every request, and with spans that every span was delivered."""
    stats, sink = run.stats, run.sink
    if stats is None:
        return "FAILED: no stats file from the server (crashed or killed?)"
    completed = sum(load.completed for load in run.loads.values())
    txns, wsis = int(stats["transactions"]), int(stats["wsis"])
    seen = f"lwsobs saw {txns} transactions (load generators completed {completed})"
    if txns < completed:
        return f"FAILED: {seen}: transactions missing"
    spans = stats["spans"]
    if run.config == "lwsobs-metrics":
        if spans is not None or sink.get("spans", 0):
            return f"FAILED: spans were on with LWSOBS_SPANS=off (sink got {sink.get('spans')})"
        return f"VERIFIED: {seen}, {wsis} wsis, no spans built"
    expected = txns + wsis
    received = sink.get("spans", -1)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(spans["dropped_by_reason"].items()))
    detail = (
        f"sink received {received} spans, expected {expected} = {txns} transactions + "
        f"{wsis} wsis; exported {spans['exported']}, dropped {spans['dropped']}"
        f"{f' ({reasons})' if reasons else ''}, sampled out {spans['sampled_out']}, "
        f"rejected by sink {sink.get('rejected', 0)}"
    )
    if (
        received == expected
        and spans["dropped"] == 0
        and spans["sampled_out"] == 0
        and spans["exported"] == expected
        and sink.get("rejected", 0) == 0
    ):
        return f"VERIFIED: {detail}"
    return f"FAILED: {detail}"


def run_once(
    config: str,
    rep: int,
    tools: tuple[str, ...],
    duration: int,
    connections: int,
    pin: Pinning,
    sink: Sink,
) -> Run:
    run = Run(config, rep)
    with tempfile.TemporaryDirectory(prefix="lwsobs-bench-") as tmp:
        stats_path, log_path = Path(tmp) / "stats.json", Path(tmp) / "server.log"
        sink.reset()
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        argv = pin.wrap(pin.server, [PYTHON, str(BENCH / "server.py"), config, str(port)])
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                argv,
                env=server_env(config, sink, stats_path),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                if not wait_until_serving(url, proc, START_TIMEOUT_S):
                    run.problems.append("server did not start")
                else:
                    warm_up(url, connections, pin)
                    for tool in tools:
                        load = run.loads[tool] = run_tool(
                            tool, url, duration, connections, pin, proc.pid
                        )
                        run.problems += [f"{tool}: {e}" for e in load.errors]
                        if proc.poll() is not None:
                            run.problems.append(f"server died during {tool}")
                            break
            finally:
                problem = stop(proc)
                if problem:
                    run.problems.append(problem)
        run.log = log_path.read_text(errors="replace")
        if "Traceback" in run.log or re.search(r"^(ERROR|CRITICAL)", run.log, re.M):
            run.problems.append("server logged errors")
        with contextlib.suppress(OSError, urllib.error.URLError):
            run.sink = sink.count()
        if stats_path.exists():
            run.stats = json.loads(stats_path.read_text())
    if config.startswith("lwsobs"):
        run.verification = verify(run)
    return run


# -- results -----------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def summarize(runs: list[Run], configs: list[str], tools: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per config and tool: median and range of req/s, median of per-repetition ratios."""
    plain = {(r.rep, t): r.loads[t].rps for r in runs if r.config == "plain" for t in r.loads}
    rows: list[dict[str, Any]] = []
    for config in configs:
        for tool in tools:
            samples = [
                (r.rep, r.loads[tool].rps)
                for r in runs
                if r.config == config and tool in r.loads and r.loads[tool].rps > 0
            ]
            if not samples:
                rows.append({"config": config, "tool": tool, "n": 0})
                continue
            rates = [rate for _, rate in samples]
            cpus = [
                cpu
                for r in runs
                if r.config == config and tool in r.loads
                for cpu in [r.loads[tool].server_cpu]
                if cpu is not None
            ]
            ratios = [rate / plain[(rep, tool)] for rep, rate in samples if plain.get((rep, tool))]
            rows.append(
                {
                    "config": config,
                    "tool": tool,
                    "n": len(rates),
                    "rps_median": statistics.median(rates),
                    "rps_min": min(rates),
                    "rps_max": max(rates),
                    "ratio_median": statistics.median(ratios) if ratios else None,
                    "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                    "server_cpu_median": statistics.median(cpus) if cpus else None,
                    "server_cpu_min": min(cpus) if cpus else None,
                    "target": TARGETS.get(config, ""),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]], info: dict[str, Any], settings: str) -> None:
    print()
    print(
        f"machine: nproc={info['nproc']} cpu={info['cpu']!r} python {info['python']} "
        f"aiohttp {info['aiohttp']} lwsobs {info['lwsobs']}"
    )
    print(
        f"tools: {info['wrk']} | {info['h2load']} | otel-sdk {info['opentelemetry-sdk']}, "
        f"contrib {info['opentelemetry-instrumentation-aiohttp-server']}, "
        f"prometheus-client {info['prometheus-client']}, protobuf {info['protobuf']}"
    )
    print(
        f"load average start {' '.join(info['loadavg_start'])}, end {' '.join(info['loadavg_end'])}"
    )
    print(settings)
    print(
        "ratio = median over repetitions of (config req/s / plain req/s in the same repetition "
        "and tool), with its min-max; srv cpu = median share of one core the server used "
        "during the tool run"
    )
    header = (
        f"{'configuration':<17} {'tool':<7} {'req/s median':>12} {'min-max':>17} "
        f"{'ratio to plain':>14} {'ratio min-max':>13} {'srv cpu':>7}  target"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        if not row["n"]:
            print(f"{row['config']:<17} {row['tool']:<7} {'no data':>12}")
            continue
        span = f"{fmt_rate(row['rps_min'])}-{fmt_rate(row['rps_max'])}"
        if row["ratio_median"] is None:
            ratio, ratio_span = "n/a", ""
        else:
            ratio = f"{row['ratio_median']:.2f}x"
            ratio_span = f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f}"
        cpu = row["server_cpu_median"]
        cpu_text = "?" if cpu is None else f"{cpu:.0%}"
        print(
            f"{row['config']:<17} {row['tool']:<7} {fmt_rate(row['rps_median']):>12} "
            f"{span:>17} {ratio:>14} {ratio_span:>13} {cpu_text:>7}  {row['target']}"
        )


def save_failed_log(run: Run) -> Path | None:
    with contextlib.suppress(OSError):
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"failed-{run.config}-rep{run.rep}.log"
        path.write_text(run.log)
        return path
    return None


def report_run(run: Run, reps: int) -> None:
    rates = "  ".join(
        f"{tool} {fmt_rate(load.rps):>7} req/s ({load.completed} done, "
        f"srv cpu {'?' if load.server_cpu is None else f'{load.server_cpu:.0%}'})"
        for tool, load in run.loads.items()
    )
    print(f"[rep {run.rep}/{reps}] {run.config:<16} {rates}", flush=True)
    if run.config in SPAN_CONFIGS and not run.config.startswith("lwsobs"):
        print(f"    sink received {run.sink.get('spans', '?')} spans", flush=True)
    if run.verification:
        if run.verification.startswith("FAILED"):
            print(f"    !!!!! {run.config} rep {run.rep} {run.verification} !!!!!", flush=True)
        else:
            print(f"    {run.verification}", flush=True)
    for problem in run.problems:
        print(f"    !!!!! PROBLEM: {problem}", flush=True)
    if not run.ok and run.log.strip():
        path = save_failed_log(run)
        tail = "\n".join(run.log.rstrip().splitlines()[-60:])
        print(f"    server output (full log in {path}):\n{tail}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="lwsobs HTTP benchmark against aiohttp and peers")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short runs, < 3 min (default)")
    mode.add_argument("--full", action="store_true", help="longer runs, < 10 min")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--duration", type=int, help="seconds per tool run (whole seconds)")
    parser.add_argument("--reps", type=int, help="repetitions (config order rotates)")
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="connections per load generator"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()

    mode_name = "full" if args.full else "quick"
    duration, reps = MODES[mode_name]
    duration = args.duration or duration
    reps = args.reps or reps
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    tools = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    unknown = [c for c in configs if c not in CONFIGS] + [t for t in tools if t not in TOOLS]
    connections = args.connections
    if unknown or not configs or not tools or duration < 1 or reps < 1 or connections < 1:
        parser.error(f"bad --configs/--tools/--duration/--reps/--connections (unknown: {unknown})")
    for binary in ("wrk", "h2load"):
        if binary in tools and not shutil.which(binary):
            parser.error(f"{binary} is not installed (scripts/system-deps installs it)")

    started = time.monotonic()
    info = machine_info()
    pin = Pinning.detect()
    pinning = (
        f"server on core {pin.server}, load generators and OTLP sink on core {pin.load}"
        if pin.server is not None
        else "NOT pinned (fewer than 2 usable cores or no taskset): ratios are noisier"
    )
    settings = (
        f"mode {mode_name}: {reps} repetitions x {len(configs)} configs, {duration} s per tool, "
        f"wrk -t1 -c{connections} (keep-alive), h2load --h1 -c{connections} -m{PIPELINE} "
        f"(pipelined); {pinning}"
    )
    print(settings, flush=True)

    sink = Sink(pin)
    runs: list[Run] = []
    try:
        for rep in range(1, reps + 1):
            shift = (rep - 1) % len(configs)
            for config in configs[shift:] + configs[:shift]:  # rotate: interleave positions
                run = run_once(config, rep, tools, duration, connections, pin, sink)
                runs.append(run)
                report_run(run, reps)
    finally:
        sink.close()

    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    rows = summarize(runs, configs, tools)
    print_table(rows, info, settings)
    for tool in tools:
        unsaturated = [
            f"{r.config}#{r.rep} {cpu:.0%}"
            for r in runs
            if tool in r.loads
            for cpu in [r.loads[tool].server_cpu]
            if cpu is not None and cpu < SATURATED
        ]
        if unsaturated:
            which = ", ".join(unsaturated)
            print(
                f"WARNING {tool}: the server used under {SATURATED:.0%} of its core in "
                f"{which}: the load generator set the pace or something else took the core, "
                "so those rates (and ratios against them) do not measure server cost alone"
            )
    failed = [r for r in runs if not r.ok]
    verifications = [r for r in runs if r.config == "lwsobs-spans"]
    wall = time.monotonic() - started
    print()
    if any(r.verification and r.verification.startswith("FAILED") for r in runs):
        print("SPAN VERIFICATION FAILED: see the FAILED lines above", flush=True)
    elif verifications:
        print(
            f"span verification: VERIFIED in all {len(verifications)} lwsobs-spans runs "
            "(received at the sink == transactions + wsis, nothing dropped)"
        )
    if failed:
        print(
            f"{len(failed)} run(s) had problems: "
            + ", ".join(f"{r.config}#{r.rep}" for r in failed)
        )
    print(f"total wall time {wall:.0f} s")

    result = {
        "mode": mode_name,
        "settings": settings,
        "ratio_method": "median of per-repetition ratios to plain (same repetition and tool)",
        "duration_s": duration,
        "reps": reps,
        "configs": configs,
        "tools": list(tools),
        "machine": info,
        "rows": rows,
        "runs": [
            {
                "config": r.config,
                "rep": r.rep,
                "loads": {t: asdict(load) for t, load in r.loads.items()},
                "sink": r.sink,
                "stats": r.stats,
                "verification": r.verification,
                "problems": r.problems,
            }
            for r in runs
        ],
        "ok": not failed,
        "wall_s": round(wall, 1),
    }
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.out}")
    except OSError as exc:
        print(f"could not write {args.out}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
