#!/usr/bin/env python3
"""Proxy load harness (run it through `scripts/bench-load`).

One origin (nginx, one worker, a 2 KiB file, keep-alive) on loopback, fronted by:

    edge       `stile edge` with validation (query token, 100 k revoked ids in its state)
    edge-off   the same binary and config with `validation.enabled = false`
    nginx-sl   nginx with `secure_link` (expiry + MD5 over expiry, URI and secret),
               proxying to the same origin over a keep-alive upstream pool
    direct     the origin itself (reference; see the pinning note)

wrk drives each with the same threads, connections and duration; the variants are
interleaved over several rounds (the order rotates each round) so slow machine
drift cancels out of the ratios. Pinning (taskset): the proxy under test on
`--proxy-cpu`, wrk and the origin on `--load-cpu`, so the load generator never
takes CPU from the proxy. Every process started here is killed on exit, also on
SIGINT/SIGTERM.

Per run: req/s, latency p50/p99 (wrk --latency), CPU time per request of the
proxy process (utime+stime from /proc/PID/stat, before/after, / requests) and its
CPU utilisation. Ratios are the median of the per-round ratios.

Writes a markdown table to FILE (`--out`) and a JSON of every run beside it.
Standard library only.
"""

import argparse
import base64
import hashlib
import json
import os
import pathlib
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
OBJECT = "/bench/seg.ts"
OBJECT_BYTES = 2048
NGINX_SECRET = "bench-secret"
VARIANTS = ["edge", "edge-off", "nginx-sl", "direct"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

procs: list[subprocess.Popen] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench-load: {what} exited with {proc.returncode} (logs in the work dir)")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench-load: {what} did not listen on {port} within {timeout:.0f} s")


def start(cmd: list[str], cpu: int, log: pathlib.Path) -> subprocess.Popen:
    out = open(log, "wb")
    p = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    procs.append(p)
    return p


def stop_all() -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def nginx_conf(work: pathlib.Path, name: str, body: str) -> pathlib.Path:
    d = work / name
    d.mkdir()
    conf = d / "nginx.conf"
    temps = "\n".join(
        f"    {t}_temp_path {d}/{t};" for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    )
    conf.write_text(
        f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
{temps}
    keepalive_requests 1000000;
    keepalive_timeout 120s;
{body}
}}
"""
    )
    return conf


def cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


# nginx `secure_link` as every nginx peer here is configured, like the edge: expiry plus
# a MAC over the expiry, the URI and the secret (inside a `location`).
SECURE_LINK = f"""            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri {NGINX_SECRET}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 410; }}"""


def secure_link_query(path: str, expires: int) -> str:
    """The `md5=…&expires=…` query nginx's SECURE_LINK admits for `path`."""
    digest = hashlib.md5(f"{expires}{path} {NGINX_SECRET}".encode()).digest()
    return f"md5={base64.urlsafe_b64encode(digest).decode().rstrip('=')}&expires={expires}"


def measure(cmd: list[str], pid: int, seconds: int, parse=None) -> tuple[dict, str]:
    """Runs a load generator (`cmd`) against the proxy `pid`: its parsed figures (wrk's
    unless `parse` is given) plus the proxy's CPU time per request and CPU use, and the
    generator's output. The caller judges errors."""
    before, t0 = cpu_ticks(pid), time.monotonic()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu, wall = (cpu_ticks(pid) - before) / CLK_TCK, time.monotonic() - t0
    r = (parse or parse_wrk)(out)
    r["cpu_us_per_req"] = cpu / max(r["requests"], 1) * 1e6
    r["cpu_util"] = cpu / wall
    return r, out


def per_round_ratios(a: list[dict], b: list[dict]) -> tuple[float, float]:
    """Medians of the per-round ratios of variant a to variant b: req/s, and requests per
    proxy-core-second (the inverse of CPU per request)."""
    rps = statistics.median(x["rps"] / y["rps"] for x, y in zip(a, b))
    core = statistics.median(y["cpu_us_per_req"] / x["cpu_us_per_req"] for x, y in zip(a, b))
    return rps, core


def parse_wrk(out: str) -> dict:
    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        if not m:
            raise SystemExit(f"bench-load: cannot parse wrk output:\n{out}")
        return float(m.group(1))

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise SystemExit(f"bench-load: no {pct}% latency in wrk output:\n{out}")
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(num(r"(\d+) requests in")),
        "rps": num(r"Requests/sec:\s+([\d.]+)"),
        "p50_us": latency("50"),
        "p99_us": latency("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
    }


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (-d)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load per variant first")
    ap.add_argument("--edge-threads", type=int, default=1, help="worker threads of the edge")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--revoked", type=int, default=100_000, help="revoked token ids in the edge's state")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--stile", default=str(ROOT / "target/release/stile"))
    ap.add_argument("--mint", default=str(ROOT / "target/release/stile-bench-mint"))
    ap.add_argument("--out", required=True, help="markdown table written here")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"bench-load: unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = pathlib.Path(tempfile.mkdtemp(prefix="stile-bench-load-"))
    try:
        return run(args, variants, work)
    finally:
        stop_all()
        print(f"bench-load: logs and configs in {work}", file=sys.stderr)


def run(args, variants: list[str], work: pathlib.Path) -> int:
    ports = {v: free_port() for v in ["origin", "edge", "edge-off", "nginx-sl"]}
    ports["direct"] = ports["origin"]
    now = int(time.time())

    # Origin: nginx, one worker, a 2 KiB object.
    docroot = work / "www"
    (docroot / "bench").mkdir(parents=True)
    (docroot / OBJECT.lstrip("/")).write_bytes(bytes(i % 251 for i in range(OBJECT_BYTES)))
    origin_conf = nginx_conf(
        work,
        "origin",
        f"    server {{ listen 127.0.0.1:{ports['origin']} backlog=4096; root {docroot}; }}",
    )
    origin = start(["nginx", "-p", str(work / "origin"), "-c", str(origin_conf), "-e", str(work / "origin/error.log")],
                   args.load_cpu, work / "origin.log")
    wait_port(ports["origin"], origin, "origin")

    # Edge, validating and not.
    state = work / "state.json"
    token = subprocess.run(
        [args.mint, str(state), "/bench/", OBJECT, str(now), str(args.revoked)], check=True, capture_output=True, text=True
    ).stdout.strip()
    pids = {"direct": origin.pid}
    for name, validation in [("edge", ""), ("edge-off", "[validation]\nenabled = false\nunsafe_acknowledge_open_proxy = true\n")]:
        if name not in variants:
            continue
        conf = work / f"{name}.toml"
        conf.write_text(
            f"""listen = ["127.0.0.1:{ports[name]}"]
admin_listen = ""
threads = {args.edge_threads}
pid_file = "{work}/{name}.pid"
upgrade_sock = "{work}/{name}.sock"
[origin]
address = "127.0.0.1:{ports['origin']}"
[state]
file = "{state}"
[access_log]
enabled = false
{validation}"""
        )
        p = start([args.stile, "edge", "--config", str(conf)], args.proxy_cpu, work / f"{name}.log")
        wait_port(ports[name], p, name)
        pids[name] = p.pid

    # nginx secure_link, configured like the edge: expiry plus a MAC over the path.
    if "nginx-sl" in variants:
        body = f"""    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-sl']} backlog=4096;
        location / {{
{SECURE_LINK}
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
        conf = nginx_conf(work, "nginx-sl", body)
        p = start(["nginx", "-p", str(work / "nginx-sl"), "-c", str(conf), "-e", str(work / "nginx-sl/error.log")],
                  args.proxy_cpu, work / "nginx-sl.log")
        wait_port(ports["nginx-sl"], p, "nginx-sl")
        pids["nginx-sl"] = p.pid

    expires = now + 3600
    nginx_query = secure_link_query(OBJECT, expires)
    urls = {
        "edge": f"http://127.0.0.1:{ports['edge']}{OBJECT}?st={token}",
        "edge-off": f"http://127.0.0.1:{ports['edge-off']}{OBJECT}?st={token}",
        "nginx-sl": f"http://127.0.0.1:{ports['nginx-sl']}{OBJECT}?{nginx_query}",
        "direct": f"http://127.0.0.1:{ports['origin']}{OBJECT}",
    }
    # The comparison is only honest if the validating proxies really validate.
    bad = {
        "edge": f"http://127.0.0.1:{ports['edge']}{OBJECT}?st={token[:-2]}AA",
        "nginx-sl": f"http://127.0.0.1:{ports['nginx-sl']}{OBJECT}?{nginx_query.replace('md5=', 'md5=AA', 1)}",
    }
    for v in variants:
        status, body = fetch(urls[v])
        if status != 200 or len(body) != OBJECT_BYTES:
            raise SystemExit(f"bench-load: {v}: GET gave {status} with {len(body)} bytes")
        if v in bad and fetch(bad[v])[0] != 403:
            raise SystemExit(f"bench-load: {v} admits a forged link")

    def wrk(v: str, seconds: int) -> dict:
        cmd = ["taskset", "-c", str(args.load_cpu), "wrk", f"-t{args.threads}", f"-c{args.connections}",
               f"-d{seconds}s", "--latency", "--timeout", "5s", urls[v]]
        r, _ = measure(cmd, pids[v], seconds)
        if r["non2xx"] or r["socket_errors"]:
            raise SystemExit(f"bench-load: {v}: {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
        return r

    print(f"bench-load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
          f"variants {', '.join(variants)}", file=sys.stderr)
    for v in variants:
        wrk(v, args.warmup)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants):] + variants[: rnd % len(variants)]
        for v in order:
            r = wrk(v, args.duration)
            runs[v].append(r)
            print(f"  round {rnd + 1} {v:9} {r['rps']:9.0f} req/s  p50 {r['p50_us']:7.0f} µs  p99 {r['p99_us']:7.0f} µs  "
                  f"{r['cpu_us_per_req']:5.1f} µs CPU/req  {r['cpu_util'] * 100:3.0f}% CPU", file=sys.stderr)

    out = pathlib.Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    out.write_text(table(args, variants, runs))
    print(out.read_text())
    return 0


def table(args, variants: list[str], runs: dict[str, list[dict]]) -> str:
    med = lambda v, k: statistics.median(r[k] for r in runs[v])  # noqa: E731
    lines = [
        f"wrk `-t{args.threads} -c{args.connections} -d{args.duration}s --latency`, {args.rounds} interleaved rounds; "
        f"2 KiB object; proxy pinned to CPU {args.proxy_cpu}, wrk and origin to CPU {args.load_cpu}; "
        f"edge threads = {args.edge_threads}, {args.revoked:,} revoked ids in its state; access logs off everywhere.",
        "",
        "| variant | req/s (median) | req/s (min – max) | p50 | p99 | proxy CPU / req | proxy CPU use |",
        "|---|---|---|---|---|---|---|",
    ]
    label = {"edge": "edge (validating)", "edge-off": "edge, validation off", "nginx-sl": "nginx `secure_link`",
             "direct": "origin direct (wrk on the same CPU)"}
    for v in variants:
        rps = [r["rps"] for r in runs[v]]
        lines.append(
            f"| {label[v]} | {med(v, 'rps'):,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | {med(v, 'p50_us'):.0f} µs | "
            f"{med(v, 'p99_us'):.0f} µs | {med(v, 'cpu_us_per_req'):.1f} µs | {med(v, 'cpu_util') * 100:.0f} % |"
        )
    lines.append("")

    def ratio(a: str, b: str) -> float | None:
        if a not in runs or b not in runs:
            return None
        return statistics.median(x["rps"] / y["rps"] for x, y in zip(runs[a], runs[b]))

    goals = [("edge", "edge-off", 0.95, "edge ≥ 95 % of validation off"), ("edge", "nginx-sl", 1.0, "edge ≥ 1.0× nginx secure_link")]
    lines += ["| ratio (median of per-round ratios) | measured | goal | |", "|---|---|---|---|"]
    for a, b, goal, text in goals:
        r = ratio(a, b)
        if r is not None:
            lines.append(f"| {a} / {b} req/s | {r:.3f} | {text} | {'met' if r >= goal else '**missed**'} |")
    r = ratio("edge-off", "nginx-sl")
    if r is not None:
        lines.append(f"| edge-off / nginx-sl req/s | {r:.3f} | (proxy core vs nginx) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
