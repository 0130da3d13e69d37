"""IVR callers per process and per cluster, side by side; the cluster's failover and drain times.

Two configurations answer the same calls in one run, step by step:

- **one process**: ``callbridge serve``;
- **cluster**: ``running_cluster`` (app/cluster/launcher.py): Kamailio in front of
  --workers callbridge workers (2 on this 2-core machine), Redis between them.

Both answer with the demo line. For each step N (--calls) SIPp places N calls
(bench/scenarios/ivr_menu_uac.xml, ramped at --rate calls/s) that stay in the
IVR's main menu together for at least --window seconds: ``X-Lang: en`` skips
the language menu, and every --press-every seconds the caller presses "9"
(repeat the menu, RFC 4733), so it hears the menu prompt, the silence while the
menu waits and the prompt again. SIPp's ``-rtp_echo`` sends every packet back
(RTP both ways); the calls are recorded (--no-record to turn that off).

Measured outside the servers, as bench/rtp_echo.py does (its capture reader
and analysis are reused): ``dumpcap`` on ``lo`` captures the RTP between the
workers and SIPp; per stream, the p99 gap between the worker's packets to the
caller and the packets lost (sequence gaps, packets never echoed), kernel
receive drops on the servers' sockets, CPU (100% = one core; the cluster's is
its workers, Kamailio's processes and Redis together). A step PASSES with every
call up for the window, 0 loss and p99 spacing <= --max-p99 ms; the largest
passing N of each configuration is the result.

Then, on the cluster (skip with --no-failover / --no-drain):

- **failover**: short calls at --probe-rate calls/s through Kamailio; after
  --probe-lead s one worker is killed with SIGKILL. Reported: the time from the
  kill to the first call placed after it that was answered (by the survivor),
  the slowest INVITE->200 of the calls placed in the --probe-after seconds
  after the kill (a caller the proxy first sent to the dead worker waits for
  its 1 s branch timeout), when Kamailio marked the worker down, and the calls
  that failed (those the killed worker held);
- **drain**: the survivor holds --drain-calls calls that hang up after
  --drain-hold s; ``POST /api/drain`` is sent once they are all up. Reported:
  the time from the drain to the worker's exit, and how much of it the callers
  still talked (the last BYE) and the worker took after that.

    .venv/bin/python bench/cluster_capacity.py                              # 200..1000, 40 s windows (~30 min)
    .venv/bin/python bench/cluster_capacity.py --calls 200 --window 20      # a sanity run (~5 min)
    .venv/bin/python bench/cluster_capacity.py --configs one --calls 400 500 --no-failover --no-drain

Ports: the one process takes RTP from --one-rtp, the cluster's workers split
--cluster-rtp between them, SIPp's media ports come from --sipp-media and the
cluster's SIP/HTTP/Redis ports from --control-ports: all below Linux's
ephemeral range (32768+), where nothing else is handed out.

Needs root (dumpcap on lo, pidfd_getfd, sysctl), sipp, dumpcap, kamailio, kamcmd and redis-server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

try:
    import callbridge  # noqa: F401
except ImportError:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from harness import start_server, stop_process
from rtp_echo import (SIPP_BUFFER, SNAPLEN, Sampler, _dumpcap_stats, _sipp_stats, _wait_for_text, analyse,
                      enlarge_socket_buffers, ensure_socket_buffers, read_capture, read_snmp_udp,
                      reference_loop_ms, restore_socket_buffers, verdict)
from table import print_grid, print_table

from callbridge.app.cluster.launcher import Cluster, running_cluster
from callbridge.app.cluster.procs import StartError
from callbridge.app.config import load_config

BENCH_DIR = Path(__file__).resolve().parent
SCENARIO = BENCH_DIR / "scenarios" / "ivr_menu_uac.xml"
KEYS_MARK = "  <!-- KEYS -->\n"
SERVICE = "ivr"
MENU_KEY = "9"  # the demo's main menu: "To hear these options again, press 9"
ONE, CLUSTER = "one", "cluster"
LABELS = {ONE: "one process", CLUSTER: "cluster"}
HOST = "127.0.0.1"
TOOLS = ("sipp", "dumpcap", "kamailio", "kamcmd", "redis-server")
DRAIN_DEADLINE_S = 60.0  # the workers' server.drain_deadline_s: a drain that waits on a stuck call ends
STATE_POLL_S = 0.1  # Kamailio's dispatcher state and a draining worker's exit have no event to wait on
EXIT_POLL_S = 0.02


def port_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW-HIGH, e.g. 20000-27999") from None
    if not 1024 <= lo < hi <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: ports from 1024 to 65535, low < high")
    return lo, hi


def _free(port: int, kinds: tuple[socket.SocketKind, ...]) -> bool:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                return False
    return True


def free_block(span: tuple[int, int], count: int, *, tcp: bool = False, even: bool = False) -> int:
    """The first port p in ``span`` with p .. p+count-1 free (UDP, and TCP too with ``tcp``)."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
    for port in range(span[0] + (span[0] % 2 if even else 0), span[1] - count + 2, 2 if even else 1):
        if all(_free(port + i, kinds) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} free consecutive ports in {span[0]}-{span[1]}")


# --------------------------------------------------------------------------- scenarios and SIPp


def write_scenario(path: Path, hold_s: float, press_every_s: float | None) -> Path:
    """The caller of ivr_menu_uac.xml, on the line for ``hold_s``, pressing 9 every ``press_every_s``."""
    steps, left = [], int(hold_s * 1000)
    every = int(press_every_s * 1000) if press_every_s else 0
    while every and left > every:
        steps.append(f'  <pause milliseconds="{every}"/>\n'
                     f'  <nop><action><exec play_dtmf="{MENU_KEY}"/></action></nop>\n')
        left -= every
    steps.append(f'  <pause milliseconds="{max(left, 0)}"/>\n')
    text = SCENARIO.read_text()
    if KEYS_MARK not in text:
        raise RuntimeError(f"{SCENARIO} has no {KEYS_MARK.strip()} line to fill")
    path.write_text(text.replace(KEYS_MARK, "".join(steps)))
    return path


def sipp_command(target: tuple[str, int], scenario: Path, media_port: int, workdir: Path, *, calls: int,
                 rate: float, timeout_s: float, trace_messages: bool = False) -> list[str]:
    command = ["sipp", f"{target[0]}:{target[1]}", "-sf", str(scenario), "-s", SERVICE, "-i", HOST,
               "-p", str(free_block((33000, 60000), 1)), "-mi", HOST, "-mp", str(media_port), "-rtp_echo",
               "-rtp_buffsize", str(SIPP_BUFFER), "-r", f"{rate:g}", "-l", str(calls), "-m", str(calls),
               "-nostdin", "-trace_stat", "-stf", str(workdir / "sipp_stat.csv"), "-fd", "1",
               "-trace_err", "-error_file", str(workdir / "sipp_errors.log"),
               "-timeout", f"{int(timeout_s)}s", "-timeout_error"]
    if trace_messages:
        command += ["-trace_msg", "-message_file", str(workdir / "sipp_messages.log")]
    return command


@dataclass
class SipCall:
    invite_at: float | None = None
    answered_at: float | None = None
    final_code: int | None = None
    answered_by: int | None = None  # the SIP port in the 200's Contact: which worker took the call
    bye_at: float | None = None


_BLOCK = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(.*?)(?=^-{20,} |\Z)", re.M | re.S)


def sipp_calls(path: Path) -> dict[str, SipCall]:
    """Per Call-ID, from SIPp's -trace_msg log (local timestamps, as time.time() counts them)."""
    calls: dict[str, SipCall] = {}
    text = path.read_text(errors="replace") if path.exists() else ""
    for match in _BLOCK.finditer(text):
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        lines = match.group(2).split("\n")
        direction, first = lines[0], lines[2] if len(lines) > 2 else ""
        headers = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
                   for line in lines[3:] if ":" in line and not line.startswith(" ")}
        call = calls.setdefault(headers.get("call-id", ""), SipCall())
        cseq = headers.get("cseq", "")
        if "sent" in direction and first.startswith("INVITE ") and call.invite_at is None:
            call.invite_at = at
        elif "sent" in direction and first.startswith("BYE "):
            call.bye_at = call.bye_at or at
        elif "received" in direction and first.startswith("SIP/2.0 ") and cseq.endswith("INVITE"):
            code = int(first.split()[1])
            if code >= 200 and call.final_code is None:
                call.final_code, call.answered_at = code, at
                port = re.search(r"<?sip:[^>;]*:(\d+)", headers.get("contact", ""))
                call.answered_by = int(port.group(1)) if port else None
    calls.pop("", None)
    return calls


# --------------------------------------------------------------------------- measuring one step


def _stat(pid: str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


class ProcessSampler(Sampler):
    """rtp_echo's sampler, plus families: a process and its children (Kamailio's forked workers)."""

    def __init__(self) -> None:
        super().__init__()
        self.families: dict[str, int] = {}  # name -> the parent's pid
        self._members: dict[int, list[str]] = {}  # parent -> itself and its children, found once (Kamailio
        # forks them all at start-up)

    def members(self, parent: int) -> list[str]:
        if parent not in self._members:
            self._members[parent] = [str(parent)] + [
                pid for pid in os.listdir("/proc")
                if pid.isdigit() and (fields := _stat(pid)) is not None and int(fields[1]) == parent]
        return self._members[parent]

    def sample(self) -> None:
        super().sample()
        cpu = self.samples[-1][1]
        for name, parent in self.families.items():
            stats = [fields for pid in self.members(parent) if (fields := _stat(pid)) is not None]
            cpu[name] = sum(int(f[11]) + int(f[12]) for f in stats) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """Where one configuration answers, and the processes that do the work."""

    kind: str
    sip: tuple[str, int]
    rtp: tuple[int, int]
    pids: dict[str, int]
    families: dict[str, int] = field(default_factory=dict)  # name -> a parent whose children count with it
    sip_ports: tuple[int, ...] = ()


@dataclass
class Row:
    kind: str
    calls: int
    result: dict = field(default_factory=dict)
    verdict: str = ""


def run_step(target: Target, calls: int, args: argparse.Namespace, workdir: Path) -> Row:
    """N callers in the menu together for the window; everything measured from outside."""
    workdir.mkdir(parents=True, exist_ok=True)
    row = Row(target.kind, calls)
    r = row.result
    ramp = calls / args.rate
    hold = ramp + args.window + 2 * args.trim + args.margin
    sipp_timeout = hold + ramp + 60
    r.update(hold_s=hold, reference_ms=reference_loop_ms())
    sipp = dumpcap = None
    sampler = ProcessSampler()
    sampler.pids.update(target.pids)
    sampler.families.update(target.families)
    try:
        media_port = free_block(args.sipp_media, 4, even=True)  # SIPp's RTP, RTCP and the echo's +2/+3
        capture, dumpcap_log = workdir / "rtp.pcap", workdir / "dumpcap.log"
        with dumpcap_log.open("w") as log:
            dumpcap = subprocess.Popen(
                ["dumpcap", "-i", "lo", "-f", f"udp port {media_port}", "-s", str(SNAPLEN), "-P",
                 "-B", str(args.capture_buffer), "-q", "-w", str(capture)],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        _wait_for_text(dumpcap_log, "Capturing on", 15, dumpcap)
        snmp_before = read_snmp_udp()
        sampler.start()
        scenario = write_scenario(workdir / SCENARIO.name, hold, args.press_every)
        command = sipp_command(target.sip, scenario, media_port, workdir, calls=calls, rate=args.rate,
                               timeout_s=sipp_timeout)
        with (workdir / "sipp.out").open("w") as out:
            sipp = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        sampler.pids["sipp"] = sipp.pid
        try:
            enlarge_socket_buffers(sipp.pid, media_port, SIPP_BUFFER)
        except (OSError, RuntimeError) as exc:
            print(f"  warning: could not enlarge SIPp's echo socket buffer ({exc})", file=sys.stderr, flush=True)
        try:
            r["sipp_status"] = sipp.wait(sipp_timeout + 15)
        except subprocess.TimeoutExpired:
            r["sipp_status"] = "timeout"
        time.sleep(0.5)  # the last echoes
        sampler.stop()
        stop_process(dumpcap, sig=signal.SIGINT)
        r["capture_received"], r["capture_dropped"] = _dumpcap_stats(dumpcap_log.read_text(errors="replace"))
        r["sipp_ok"], r["sipp_failed"] = _sipp_stats(workdir / "sipp_stat.csv")
        snmp_after = read_snmp_udp()
        r["snmp_rcvbuf_errors"] = snmp_after.get("RcvbufErrors", 0) - snmp_before.get("RcvbufErrors", 0)
        lo, hi = target.rtp
        r["server_rx_drops"], _ = sampler.drops(lambda p: lo <= p <= hi or p in target.sip_ports)
        r["sipp_rx_drops"], _ = sampler.drops(lambda p: media_port <= p <= media_port + 3)
        r.update(analyse(read_capture(capture), media_port, lo, hi, calls, args.trim))
        ws, we = r["window_start"], r["window_end"]
        parts = {name: sampler.cpu_percent(name, ws, we) for name in (*target.pids, *target.families)}
        r["cpu_parts"] = {name: round(value, 1) for name, value in parts.items()}
        r["family_processes"] = {name: len(sampler.members(parent)) for name, parent in target.families.items()}
        r["cpu"] = sum(parts.values())
        r["sipp_cpu"] = sampler.cpu_percent("sipp", ws, we)
        r["host_cpu"] = sampler.host_percent(ws, we)
    finally:
        for cleanup in (lambda: stop_process(sipp, sig=signal.SIGINT),
                        lambda: sampler.stop() if sampler.is_alive() else None,
                        lambda: stop_process(dumpcap, sig=signal.SIGINT)):
            try:
                cleanup()
            except Exception as exc:  # noqa: BLE001 - report and go on cleaning up
                print(f"warning: cleanup failed: {exc!r}", file=sys.stderr)
    row.verdict = verdict(row, args)
    return row


# --------------------------------------------------------------------------- failover and drain


async def failover(cluster: Cluster, args: argparse.Namespace, workdir: Path) -> dict:
    """SIGKILL one worker under a stream of short calls; what the callers saw."""
    workdir.mkdir(parents=True, exist_ok=True)
    victim, survivor = cluster.workers[-1], cluster.workers[0]
    calls = int(args.probe_rate * (args.probe_lead + args.probe_after))
    scenario = write_scenario(workdir / "probe.xml", args.probe_hold, None)
    media_port = free_block(args.sipp_media, 4, even=True)
    timeout_s = args.probe_lead + args.probe_after + 60
    command = sipp_command((cluster.host, cluster.sip_port), scenario, media_port, workdir, calls=calls,
                           rate=args.probe_rate, timeout_s=timeout_s, trace_messages=True)
    result: dict = {"victim": victim.worker_id, "survivor": survivor.worker_id, "calls": calls}
    with (workdir / "sipp.out").open("w") as out:
        sipp = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await asyncio.sleep(args.probe_lead)
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + args.probe_after + 10
        while time.monotonic() < deadline:
            states = await cluster.dispatcher_states()
            if states.get(victim.sip_uri, "").startswith(("I", "D")):
                result["marked_down_s"] = time.time() - killed_at
                break
            await asyncio.sleep(STATE_POLL_S)
        result["sipp_status"] = await asyncio.to_thread(sipp.wait, timeout_s + 15)
    finally:
        stop_process(sipp, sig=signal.SIGINT)
    result["sipp_ok"], result["sipp_failed"] = _sipp_stats(workdir / "sipp_stat.csv")
    placed = sipp_calls(workdir / "sipp_messages.log")
    after = [c for c in placed.values() if c.invite_at is not None and c.invite_at >= killed_at]
    answered = sorted((c for c in after if c.final_code == 200 and c.answered_at is not None),
                      key=lambda c: c.answered_at or 0.0)
    window = [c for c in answered if (c.invite_at or 0.0) < killed_at + args.probe_after]
    result.update(
        placed_after=len(after), answered_after=len(answered),
        first_answer_s=(answered[0].answered_at or 0.0) - killed_at if answered else None,
        worst_setup_s=max((c.answered_at or 0.0) - (c.invite_at or 0.0) for c in window) if window else None,
        answered_by_victim=sum(c.answered_by == victim.sip_port for c in answered))
    return result


def exited(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


async def drain(cluster: Cluster, args: argparse.Namespace, workdir: Path) -> dict:
    """The survivor holds calls; POST /api/drain; how long until it exits, and why."""
    workdir.mkdir(parents=True, exist_ok=True)
    worker = next(w for w in cluster.workers if not exited(w.pid))
    scenario = write_scenario(workdir / "drain.xml", args.drain_hold, None)
    media_port = free_block(args.sipp_media, 4, even=True)
    timeout_s = args.drain_hold + 60
    command = sipp_command((cluster.host, cluster.sip_port), scenario, media_port, workdir,
                           calls=args.drain_calls, rate=args.probe_rate, timeout_s=timeout_s, trace_messages=True)
    result: dict = {"worker": worker.worker_id, "calls": args.drain_calls}
    with (workdir / "sipp.out").open("w") as out:
        sipp = subprocess.Popen(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        await asyncio.sleep(args.drain_calls / args.probe_rate + 1.0)  # every call up
        async with httpx.AsyncClient() as client:
            drained_at = time.time()
            reply = await client.post(f"{worker.api_url}/api/drain", headers=cluster.auth, timeout=10)
        result["drain_reply"] = reply.status_code
        result["active_at_drain"] = reply.json().get("active_calls") if reply.status_code == 202 else None
        deadline = time.monotonic() + DRAIN_DEADLINE_S + 30
        while not exited(worker.pid) and time.monotonic() < deadline:
            await asyncio.sleep(EXIT_POLL_S)
        exited_at = time.time()
        result["exited"] = exited(worker.pid)
        result["drain_s"] = exited_at - drained_at
        result["sipp_status"] = await asyncio.to_thread(sipp.wait, timeout_s + 15)
    finally:
        stop_process(sipp, sig=signal.SIGINT)
    result["sipp_ok"], result["sipp_failed"] = _sipp_stats(workdir / "sipp_stat.csv")
    byes = [c.bye_at for c in sipp_calls(workdir / "sipp_messages.log").values() if c.bye_at is not None]
    if byes:
        result["last_bye_s"] = max(byes) - drained_at
        result["after_last_bye_s"] = exited_at - max(byes)
    return result


# --------------------------------------------------------------------------- the run


def write_configs(base: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    record = "true" if args.record else "false"
    common = ["server:", "  new_requests_per_source: 0",  # SIPp brings every call from one address
              "  max_calls: 5000", f"  drain_deadline_s: {DRAIN_DEADLINE_S:g}"]
    one = base / "one.yaml"
    one.write_text("\n".join([*common, "media:", f"  rtp_port_min: {args.one_rtp[0]}",
                              f"  rtp_port_max: {args.one_rtp[1]}", f"  record: {record}"]) + "\n")
    lo, hi = args.cluster_rtp
    cluster = base / "cluster.yaml"
    cluster.write_text("\n".join([*common, "media:", f"  rtp_port_min: {lo}", f"  rtp_port_max: {hi}",
                                  f"  record: {record}", "cluster:", f"  workers: {args.workers}",
                                  f"  rtp_ports_per_worker: {(hi - lo + 1) // args.workers // 2 * 2}",
                                  "  flood_requests: 1000000"]) + "\n")  # the proxy's pike limit
    return one, cluster


def cluster_target(cluster: Cluster, rtp: tuple[int, int]) -> Target:
    pids = {f"worker {w.worker_id}": w.pid for w in cluster.workers}
    pids["redis"] = cluster.redis_pid
    return Target(CLUSTER, (cluster.host, cluster.sip_port), rtp, pids, {"kamailio": cluster.kamailio_pid},
                  (cluster.sip_port, *(w.sip_port for w in cluster.workers)))


async def run(args: argparse.Namespace, base: Path) -> tuple[list[Row], dict, dict]:
    one_config, cluster_config = write_configs(base, args)
    rows: list[Row] = []
    failover_result: dict = {}
    drain_result: dict = {}
    server = None
    targets: dict[str, Target] = {}
    try:
        if ONE in args.configs:
            (base / "one").mkdir(exist_ok=True)
            sip_port = free_block(args.control_ports, 1, tcp=True)
            http_port = free_block((sip_port + 1, args.control_ports[1]), 1, tcp=True)
            server, sip_port, _ = await asyncio.to_thread(start_server, base / "one", config=one_config, host=HOST,
                                                          timeout=120, ports=(sip_port, http_port))
            targets[ONE] = Target(ONE, (HOST, sip_port), args.one_rtp, {"server": server.pid}, {}, (sip_port,))
        async with cluster_context(args, cluster_config, base) as cluster:
            if cluster is not None:
                targets[CLUSTER] = cluster_target(cluster, args.cluster_rtp)
            print(f"{len(args.calls)} step(s) of {', '.join(LABELS[k] for k in targets)}; ramp {args.rate:g} calls/s; "
                  f"window {args.window:g} s; recording {'on' if args.record else 'off'}; CPU 100% = one core "
                  f"of {os.cpu_count()}", flush=True)
            for calls in args.calls:
                for kind, target in targets.items():
                    try:
                        row = await asyncio.to_thread(run_step, target, calls, args, base / f"{kind}{calls}")
                    except (RuntimeError, OSError, ValueError) as exc:
                        row = Row(kind, calls, verdict=f"ERROR: {str(exc)[:200]}")
                    rows.append(row)
                    print(step_line(row), flush=True)
            if cluster is not None and args.failover:
                failover_result = await failover(cluster, args, base / "failover")
            if cluster is not None and args.drain:
                drain_result = await drain(cluster, args, base / "drain")
    finally:
        stop_process(server)
    return rows, failover_result, drain_result


def cluster_context(args: argparse.Namespace, config_path: Path,
                    base: Path) -> AbstractAsyncContextManager[Cluster | None]:
    """``running_cluster`` on free ports when the run includes the cluster, else None."""
    if CLUSTER not in args.configs:
        return nullcontext(None)
    sip = free_block(args.control_ports, args.workers + 1, tcp=True)  # Kamailio, then each worker
    http = free_block((sip + args.workers + 1, args.control_ports[1]), args.workers + 1, tcp=True)  # + Redis
    return running_cluster(load_config(config_path), workers=args.workers, host=HOST, sip_port=sip,
                           http_port=http, data_dir=base / "cluster", log_level="warning")


# --------------------------------------------------------------------------- output


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


def step_line(row: Row) -> str:
    r = row.result
    return (f"  {row.calls:>5} {LABELS[row.kind]:<11}  p99 {_ms(r.get('p99_ms'))} ms  max {_ms(r.get('max_ms'))} ms"
            f"  loss {r.get('loss', '-')}  rx drops {r.get('server_rx_drops', '-')}  CPU {_ms(r.get('cpu'))}%"
            f" {r.get('cpu_parts', '')}  {row.verdict}")


def grid_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for row in rows:
        r = row.result
        failed = f" ({r['sipp_failed']} failed)" if r.get("sipp_failed") else ""
        calls = f"{r.get('sipp_ok', '-')}/{row.calls}{failed}"
        out.append([f"{row.calls}", LABELS[row.kind], calls, _ms(r.get("window_s")), _ms(r.get("p50_ms")),
                    _ms(r.get("p99_ms")), _ms(r.get("max_ms")), str(r.get("loss", "-")),
                    str(r.get("server_rx_drops", "-")), _ms(r.get("cpu")), _ms(r.get("reference_ms")), row.verdict])
    return out


def _seconds(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if unit == "ms" else f"{value:.2f} s"


def summary(rows: list[Row], kinds: list[str], failover_result: dict, drain_result: dict) -> list[tuple[str, str]]:
    lines = []
    for kind in kinds:
        passing = [row for row in rows if row.kind == kind and row.verdict == "PASS"]
        if passing:
            best = max(passing, key=lambda row: row.calls)
            lines.append((f"largest passing N, {LABELS[kind]}",
                          f"{best.calls} callers (p99 {best.result['p99_ms']:.1f} ms, CPU {best.result['cpu']:.0f}%)"))
        else:
            lines.append((f"largest passing N, {LABELS[kind]}", "none of the steps passed"))
    f = failover_result
    if f:
        lines += [
            ("failover: kill -9 to first answered call", _seconds(f.get("first_answer_s"), "ms")
             + f" (by {f.get('survivor')}; {f.get('answered_after')}/{f.get('placed_after')} calls placed after "
               f"the kill answered, {f.get('answered_by_victim')} by the killed worker)"),
            ("failover: slowest INVITE->200 after the kill", _seconds(f.get("worst_setup_s"), "ms")),
            ("failover: proxy marked the worker down", _seconds(f.get("marked_down_s"))),
            ("failover: failed calls (SIPp)",
             f"{f.get('sipp_failed')} of {f.get('calls')} (those the killed worker held)"),
        ]
    d = drain_result
    if d:
        lines += [
            ("drain: POST /api/drain to exit", _seconds(d.get("drain_s"))
             + f" ({d.get('worker')} holding {d.get('active_at_drain')} calls)" + ("" if d.get("exited") else
                                                                                     " - DID NOT EXIT")),
            ("drain: callers still talking (last BYE)", _seconds(d.get("last_bye_s"))),
            ("drain: exit after the last call ended", _seconds(d.get("after_last_bye_s"), "ms")),
            ("drain: failed calls (SIPp)", f"{d.get('sipp_failed')} of {d.get('calls')}"),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, nargs="+", default=[200, 400, 600, 800, 1000],
                        help="concurrent IVR callers per step")
    parser.add_argument("--configs", nargs="+", choices=[ONE, CLUSTER], default=[ONE, CLUSTER])
    parser.add_argument("--workers", type=int, default=2, help="cluster workers (2 on a 2-core machine)")
    parser.add_argument("--window", type=float, default=40.0, help="seconds every call is up together")
    parser.add_argument("--rate", type=float, default=50.0, help="call setup rate while ramping up (calls/s)")
    parser.add_argument("--trim", type=float, default=2.0, help="seconds cut from each end of the window")
    parser.add_argument("--margin", type=float, default=3.0, help="extra hold beyond ramp + window + 2*trim")
    parser.add_argument("--press-every", type=float, default=20.0,
                        help="seconds between the callers' presses of 9 (repeat the menu)")
    parser.add_argument("--max-p99", type=float, default=25.0, help="p99 send spacing limit for PASS (ms)")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--failover", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--drain", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--probe-rate", type=float, default=20.0, help="failover/drain calls per second")
    parser.add_argument("--probe-hold", type=float, default=1.0, help="failover calls' length (s)")
    parser.add_argument("--probe-lead", type=float, default=2.0, help="failover calls before the kill (s)")
    parser.add_argument("--probe-after", type=float, default=6.0, help="failover calls after the kill (s)")
    parser.add_argument("--drain-calls", type=int, default=20)
    parser.add_argument("--drain-hold", type=float, default=8.0, help="drained calls' length (s)")
    parser.add_argument("--one-rtp", type=port_range, default=(10000, 17999))
    parser.add_argument("--cluster-rtp", type=port_range, default=(20000, 27999))
    parser.add_argument("--sipp-media", type=port_range, default=(28000, 28999))
    parser.add_argument("--control-ports", type=port_range, default=(29000, 32000),
                        help="Kamailio's and the workers' SIP ports, the workers' HTTP ports and Redis")
    parser.add_argument("--capture-buffer", type=int, default=64, help="dumpcap kernel buffer, MiB")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 callers, 10 s window")
    parser.add_argument("--keep", type=Path, help="keep captures, configs and logs under this directory")
    parser.add_argument("--json", type=Path, help="also write every result as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.window = [20], 10.0
    if not 1 <= args.workers <= 8:
        parser.error("--workers: 1 to 8")
    for name, (lo, hi) in (("--one-rtp", args.one_rtp), ("--cluster-rtp", args.cluster_rtp)):
        if any(lo <= p <= hi for p in (*args.sipp_media, *args.control_ports)):
            parser.error(f"{name} overlaps --sipp-media or --control-ports")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        sys.exit(f"not installed: {', '.join(missing)} (apt-get install sip-tester tshark kamailio redis-server)")
    if os.geteuid() != 0:
        sys.exit("run as root: dumpcap captures on lo and the socket buffer sysctls may need raising")
    changed = ensure_socket_buffers()
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="cluster_capacity_")
    base = args.keep if args.keep else Path(tmp.name)  # type: ignore[union-attr]
    base.mkdir(parents=True, exist_ok=True)
    try:
        try:
            rows, failover_result, drain_result = asyncio.run(run(args, base))
        except StartError as exc:
            sys.exit(f"the cluster did not start: {exc}")
        print()
        print_grid(["N", "configuration", "calls ok", "window s", "p50 ms", "p99 ms", "max ms", "loss", "rx drops",
                    "CPU %", "host ms", "verdict"], grid_rows(rows))
        print()
        print_table(summary(rows, args.configs, failover_result, drain_result))
        if args.json:
            args.json.write_text(json.dumps({"steps": [asdict(row) for row in rows], "failover": failover_result,
                                             "drain": drain_result}, indent=2, default=str))
        if args.keep:
            print(f"captures and logs kept in {args.keep}")
    finally:
        if tmp is not None:
            tmp.cleanup()
        restore_socket_buffers(changed)


if __name__ == "__main__":
    main()

