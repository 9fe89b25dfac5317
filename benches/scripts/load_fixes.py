#!/usr/bin/env python3
"""Per-request cost harness (run it through `scripts/bench-load --fixes`).

What each of the edge's per-request fixes buys, measured on one binary in one run: the
edge is started once per configuration, each fix switched back off by its own setting,
against nginx `secure_link` as the peer, on a 2 KiB object (where requests, not bytes,
cost) and on a rewritten HLS media playlist.

    before         write_buffer_bytes = 1460 (Pingora's default), work_stealing = true,
                   RUST_LOG with a `trace` directive (every Pingora `debug!`/`trace!` is
                   built and dispatched to the tracing bridge, then dropped: the edge's
                   behaviour before the log-level fix, whatever the directive names)
    +buffer        write_buffer_bytes = 16384
    +log level     RUST_LOG=info
    +no stealing   work_stealing = false
    +fast path     origin.fast_path = true (the rows above: false): plain GETs go to the
                   origin in one sequential exchange, not Pingora's proxy loop; the
                   edge's defaults
    nginx-sl       nginx `secure_link` proxying to the same origin

Per variant: req/s, proxy CPU per request (utime + stime from /proc), and syscalls per
request (`strace -c -f` attached for one short run, not during the measured runs).
The request and upstream counters' cached handles are in every variant (not switchable).

Pinning, rounds and ratios as in load.py (interleaved rounds, median of per-round ratios).
Writes a markdown table to FILE (`--out`) and a JSON of every run beside it.
Standard library only.
"""

import argparse
import pathlib
import signal
import statistics
import subprocess
import sys
import time

import load as L

OBJECT = "/bench/seg.ts"
PLAYLIST = "/bench/media.m3u8"
NOISY_LOG = "info,stile_bench_unused_target=trace"
VARIANTS = {
    "before": (1460, True, NOISY_LOG, False),
    "+buffer": (16384, True, NOISY_LOG, False),
    "+log level": (16384, True, "info", False),
    "+no stealing": (16384, False, "info", False),
    "+fast path": (16384, False, "info", True),
}

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--connections", type=int, default=32, help="wrk connections (-c)")
ap.add_argument("--duration", type=int, default=5, help="seconds per run (-d)")
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--proxy-cpu", type=int, default=1)
ap.add_argument("--load-cpu", type=int, default=0)
ap.add_argument("--no-strace", action="store_true", help="skip the syscall counts")
ap.add_argument("--stile", default=str(L.ROOT / "target/release/stile"))
ap.add_argument("--mint", default=str(L.ROOT / "target/release/stile-bench-mint"))
ap.add_argument("--out", required=True)


def media_playlist(segments: int = 40) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:6", "#EXT-X-MEDIA-SEQUENCE:100"]
    for i in range(segments):
        lines += ["#EXTINF:6.000,", f"seg{100 + i}.ts"]
    return ("\n".join(lines) + "\n").encode()


def syscalls(pid: int, cmd: list[str], work: pathlib.Path, name: str) -> dict[str, float]:
    """Syscalls per request of `pid` while `cmd` (wrk, 2 s) runs against it."""
    out = work / f"strace-{name.replace(' ', '_').replace('+', '')}.txt"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-q", "-p", str(pid), "-o", str(out)])
    time.sleep(0.5)
    r, _ = L.measure(cmd, pid, 2)
    time.sleep(0.3)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(10)
    per: dict[str, float] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[3].isdigit() and f[-1] != "total":
            per[f[-1]] = int(f[3]) / max(r["requests"], 1)
    return per


def main() -> int:
    args = ap.parse_args()
    return L.in_work_dir("fixes", lambda work: run(args, work))


def run(args, work: pathlib.Path) -> int:
    now = int(time.time())
    docroot = work / "www"
    (docroot / "bench").mkdir(parents=True)
    (docroot / OBJECT.lstrip("/")).write_bytes(bytes(i % 251 for i in range(L.OBJECT_BYTES)))
    (docroot / PLAYLIST.lstrip("/")).write_bytes(media_playlist())
    origin_port = L.free_port()
    origin_conf = L.nginx_conf(
        work,
        "origin",
        f"    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n"
        f"    server {{ listen 127.0.0.1:{origin_port} backlog=4096; root {docroot}; }}",
    )
    origin = L.start(["nginx", "-p", str(work / "origin"), "-c", str(origin_conf), "-e", str(work / "origin/error.log")],
                     args.load_cpu, work / "origin.log")
    L.wait_port(origin_port, origin, "origin")

    state = work / "state.json"
    token = subprocess.run([args.mint, str(state), "/bench/", OBJECT, str(now), "100000"],
                           check=True, capture_output=True, text=True).stdout.strip()
    pids: dict[str, int] = {}
    base: dict[str, str] = {}
    for i, (name, (buffer, stealing, rust_log, fast)) in enumerate(VARIANTS.items()):
        port = L.free_port()
        conf = work / f"edge{i}.toml"
        conf.write_text(
            f"""listen = ["127.0.0.1:{port}"]
admin_listen = ""
threads = 1
work_stealing = {str(stealing).lower()}
write_buffer_bytes = {buffer}
pid_file = "{work}/edge{i}.pid"
upgrade_sock = "{work}/edge{i}.sock"
[origin]
address = "127.0.0.1:{origin_port}"
fast_path = {str(fast).lower()}
[state]
file = "{state}"
[access_log]
enabled = false
"""
        )
        out = open(work / f"edge{i}.log", "wb")
        p = subprocess.Popen(["taskset", "-c", str(args.proxy_cpu), args.stile, "edge", "--config", str(conf)],
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={"PATH": "/usr/bin:/bin", "RUST_LOG": rust_log})
        L.procs.append(p)
        L.wait_port(port, p, name)
        pids[name] = p.pid
        base[name] = f"http://127.0.0.1:{port}"
    port = L.free_port()
    body = f"""    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
{L.SECURE_LINK}
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    conf = L.nginx_conf(work, "nginx-sl", body)
    p = L.start(["nginx", "-p", str(work / "nginx-sl"), "-c", str(conf), "-e", str(work / "nginx-sl/error.log")],
                args.proxy_cpu, work / "nginx-sl.log")
    L.wait_port(port, p, "nginx-sl")
    pids["nginx-sl"] = p.pid
    names = [*VARIANTS, "nginx-sl"]

    def url(name: str, path: str) -> str:
        if name == "nginx-sl":
            return f"http://127.0.0.1:{port}{path}?{L.secure_link_query(path, now + 3600)}"
        return f"{base[name]}{path}?st={token}"

    for n in names:
        status, got = L.fetch(url(n, OBJECT))
        if status != 200 or len(got) != L.OBJECT_BYTES:
            raise SystemExit(f"bench-load: {n}: GET gave {status} with {len(got)} bytes")
        status, got = L.fetch(url(n, PLAYLIST))
        if status != 200 or (n != "nginx-sl" and token.encode() not in got):
            raise SystemExit(f"bench-load: {n}: the playlist came back {status}, not rewritten")

    def wrk_cmd(n: str, path: str, seconds: int) -> list[str]:
        return ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s",
                "--latency", "--timeout", "5s", url(n, path)]

    def wrk(n: str, seconds: int) -> dict:
        r, _ = L.measure(wrk_cmd(n, OBJECT, seconds), pids[n], seconds)
        if r["non2xx"] or r["socket_errors"]:
            raise SystemExit(f"bench-load: {n}: {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
        return r

    calls: dict[str, dict[str, dict[str, float]]] = {}
    if not args.no_strace:
        for n in ["before", "+no stealing", "+fast path"]:
            calls[n] = {"2 KiB object": syscalls(pids[n], wrk_cmd(n, OBJECT, 2), work, n),
                        "rewritten playlist": syscalls(pids[n], wrk_cmd(n, PLAYLIST, 2), work, n + "-pl")}

    for n in names:
        wrk(n, args.warmup)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        for n in order:
            r = wrk(n, args.duration)
            runs[n].append(r)
            print(f"  round {rnd + 1} {n:13} {r['rps']:9.0f} req/s  {r['cpu_us_per_req']:5.1f} µs CPU/req  "
                  f"{r['cpu_util'] * 100:3.0f}% CPU", file=sys.stderr)

    L.write_results(args.out, table(args, names, runs, calls), args=vars(args), runs=runs, syscalls=calls)
    return 0


def table(args, names: list[str], runs: dict[str, list[dict]], calls) -> str:
    med = lambda n, k: statistics.median(r[k] for r in runs[n])  # noqa: E731
    lines = [
        f"wrk `-t1 -c{args.connections} -d{args.duration}s`, {args.rounds} interleaved rounds; 2 KiB object, query "
        f"token, 100,000 revoked ids; every proxy pinned to CPU {args.proxy_cpu} (edge threads = 1, nginx one "
        f"worker), wrk and the origin on CPU {args.load_cpu}; access logs off. Each edge row adds one fix to the "
        "row above; the last edge row is the edge's defaults.",
        "",
        "| variant | req/s (median) | proxy CPU / req | per core vs before | per core vs nginx `secure_link` |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        _, core_before = L.per_round_ratios(runs[n], runs["before"])
        _, core_nginx = L.per_round_ratios(runs[n], runs["nginx-sl"])
        label = "nginx `secure_link`" if n == "nginx-sl" else f"edge {n}"
        lines.append(f"| {label} | {med(n, 'rps'):,.0f} | {med(n, 'cpu_us_per_req'):.1f} µs | "
                     f"{core_before:.3f}× | {core_nginx:.3f}× |")
    if calls:
        lines += ["", "Syscalls per request (`strace -c -f`, one 2-second run each, outside the measured runs):", "",
                  "| edge | object | sendto | recvfrom | writev | getpeername | all |", "|---|---|---|---|---|---|---|"]
        for n, by_object in calls.items():
            for obj, per in by_object.items():
                lines.append(f"| {n} | {obj} | {per.get('sendto', 0):.2f} | {per.get('recvfrom', 0):.2f} | "
                             f"{per.get('writev', 0):.2f} | {per.get('getpeername', 0):.2f} | {sum(per.values()):.2f} |")
    _, core = L.per_round_ratios(runs["+fast path"], runs["nginx-sl"])
    lines += ["", "| goal (issue 21) | measured | |", "|---|---|---|",
              f"| small proxied objects ≥ 0.6× nginx `secure_link` per core | {core:.3f}× | "
              f"{'met' if core >= 0.6 else '**missed**'} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
