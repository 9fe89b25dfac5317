#!/usr/bin/env python3
"""Cache-hit load harness (run it through `scripts/bench-load --cache`).

The same origin as `load.py` (nginx, one worker, keep-alive) on loopback, serving a
2 KiB object and a 1 MiB segment, fronted by two caching video edges:

    edge-cache   `stile edge` validating a query token (100 k revoked ids), `[cache]`
                 on (memory tier), so every request after the first is a hit
    nginx-cache  nginx with `secure_link` and `proxy_cache` (`proxy_cache_lock on`,
                 `proxy_cache_valid 200 1h`, keys_zone in memory, files on the same
                 disk), a keep-alive upstream pool; the cache key without the token

Both validate every request before the lookup. Each object size is run for each
variant in interleaved rounds; per run: req/s, MB/s, proxy CPU time per request
(utime+stime from /proc) and its inverse, the requests one proxy core serves per
second. The origin's access log is counted before and after the measured runs: a
cache that sends any of them to the origin fails the run (the figures are hits).
Pinning as in load.py. Standard library only.
"""

import argparse
import json
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load  # noqa: E402  (the plain harness: processes, nginx configs, wrk parsing)

VARIANTS = ["edge-cache", "nginx-cache"]
OBJECTS = {"2k": ("/bench/small.ts", 2048), "1m": ("/bench/seg.m4s", 1 << 20)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--edge-threads", type=int, default=1)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--revoked", type=int, default=100_000)
    ap.add_argument("--stile", default=str(load.ROOT / "target/release/stile"))
    ap.add_argument("--mint", default=str(load.ROOT / "target/release/stile-bench-mint"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = pathlib.Path(tempfile.mkdtemp(prefix="stile-bench-cache-"))
    try:
        return run(args, work)
    finally:
        load.stop_all()
        print(f"bench-load: logs and configs in {work}", file=sys.stderr)


def origin_requests(log: pathlib.Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def run(args, work: pathlib.Path) -> int:
    ports = {v: load.free_port() for v in ["origin", *VARIANTS]}
    now = int(time.time())
    docroot = work / "www"
    (docroot / "bench").mkdir(parents=True)
    for path, size in OBJECTS.values():
        (docroot / path.lstrip("/")).write_bytes(bytes(i % 251 for i in range(size)))
    access = work / "origin-access.log"
    conf = load.nginx_conf(
        work, "origin",
        f"    server {{ listen 127.0.0.1:{ports['origin']} backlog=4096; root {docroot}; access_log {access}; }}")
    origin = load.start(["nginx", "-p", str(work / "origin"), "-c", str(conf), "-e", str(work / "origin/error.log")],
                        args.load_cpu, work / "origin.log")
    load.wait_port(ports["origin"], origin, "origin")

    state = work / "state.json"
    token = subprocess.run([args.mint, str(state), "/bench/", "/bench/small.ts", str(now), str(args.revoked)],
                           check=True, capture_output=True, text=True).stdout.strip()
    econf = work / "edge-cache.toml"
    econf.write_text(f"""listen = ["127.0.0.1:{ports['edge-cache']}"]
admin_listen = ""
threads = {args.edge_threads}
pid_file = "{work}/edge.pid"
upgrade_sock = "{work}/edge.sock"
[origin]
address = "127.0.0.1:{ports['origin']}"
[state]
file = "{state}"
[access_log]
enabled = false
[cache]
enabled = true
memory_bytes = 268435456
""")
    edge = load.start([args.stile, "edge", "--config", str(econf)], args.proxy_cpu, work / "edge-cache.log")
    load.wait_port(ports["edge-cache"], edge, "edge-cache")

    body = f"""    proxy_cache_path {work}/nginx-cache/store levels=1:2 keys_zone=video:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-cache']} backlog=4096;
        location / {{
{load.SECURE_LINK}
            proxy_cache video;
            proxy_cache_key $host$uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 1h;
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    nconf = load.nginx_conf(work, "nginx-cache", body)
    nginx = load.start(["nginx", "-p", str(work / "nginx-cache"), "-c", str(nconf), "-e", str(work / "nginx-cache/error.log")],
                       args.proxy_cpu, work / "nginx-cache.log")
    load.wait_port(ports["nginx-cache"], nginx, "nginx-cache")
    pids = {"edge-cache": edge.pid, "nginx-cache": nginx.pid}

    expires = now + 3600

    def url(v: str, path: str) -> str:
        if v == "edge-cache":
            return f"http://127.0.0.1:{ports[v]}{path}?st={token}"
        return f"http://127.0.0.1:{ports[v]}{path}?{load.secure_link_query(path, expires)}"

    # Fill each cache once; both must validate (a forged link is refused even for a cached object).
    for v in VARIANTS:
        for path, size in OBJECTS.values():
            for _ in range(2):
                status, got = load.fetch(url(v, path))
                if status != 200 or len(got) != size:
                    raise SystemExit(f"bench-load: {v} {path}: GET gave {status} with {len(got)} bytes")
            forged = url(v, path).replace("st=" + token, "st=" + token[:-2] + "AA") if v == "edge-cache" \
                else url(v, path).replace("md5=", "md5=AA", 1)
            if load.fetch(forged)[0] != 403:
                raise SystemExit(f"bench-load: {v} serves a forged link from its cache")

    def one(v: str, obj: str, seconds: int) -> dict:
        cmd = ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency",
               "--timeout", "5s", url(v, OBJECTS[obj][0])]
        r, _ = load.measure(cmd, pids[v], seconds)
        if r["non2xx"] or r["socket_errors"]:
            raise SystemExit(f"bench-load: {v} {obj}: {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
        r["mb_s"] = r["rps"] * OBJECTS[obj][1] / 1e6
        return r

    print(f"bench-load --cache: {', '.join(OBJECTS)} x {', '.join(VARIANTS)}, {args.rounds} rounds of {args.duration} s",
          file=sys.stderr)
    for obj in OBJECTS:
        for v in VARIANTS:
            one(v, obj, args.warmup)
    filled = origin_requests(access)
    runs: dict[str, list[dict]] = {f"{v}/{o}": [] for o in OBJECTS for v in VARIANTS}
    for rnd in range(args.rounds):
        for obj in OBJECTS:
            for v in VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]:
                r = one(v, obj, args.duration)
                runs[f"{v}/{obj}"].append(r)
                print(f"  round {rnd + 1} {v:11} {obj:3} {r['rps']:9.0f} req/s {r['mb_s']:8.0f} MB/s  "
                      f"{r['cpu_us_per_req']:7.1f} µs CPU/req  {r['cpu_util'] * 100:3.0f}% CPU", file=sys.stderr)
    misses = origin_requests(access) - filled
    if misses:
        raise SystemExit(f"bench-load: {misses} measured requests reached the origin: not a cache-hit benchmark")

    out = pathlib.Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    out.write_text(table(args, runs, filled))
    print(out.read_text())
    return 0


def table(args, runs: dict[str, list[dict]], filled: int) -> str:
    med = lambda k, f: statistics.median(r[f] for r in runs[k])  # noqa: E731
    size = {"2k": "2 KiB object", "1m": "1 MiB segment"}
    lines = [
        f"{args.rounds} interleaved rounds of {args.duration} s, wrk -t1 -c{args.connections}, every measured request a "
        f"cache hit (the origin saw {filled} requests, all before the measured runs, and none during them); both "
        f"validate every request first; proxy pinned to CPU {args.proxy_cpu} (edge threads = {args.edge_threads}, "
        f"nginx one worker), wrk and origin on CPU {args.load_cpu}; access logs off on both proxies.",
        "",
        "| object | variant | req/s (median) | req/s (min – max) | MB/s | proxy CPU / req | req per proxy-core-second | proxy CPU use |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for obj in OBJECTS:
        for v in VARIANTS:
            k = f"{v}/{obj}"
            rps = [r["rps"] for r in runs[k]]
            cpu = med(k, "cpu_us_per_req")
            lines.append(f"| {size[obj]} | {v} | {med(k, 'rps'):,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | "
                         f"{med(k, 'mb_s'):,.0f} | {cpu:.1f} µs | {1e6 / cpu:,.0f} | {med(k, 'cpu_util') * 100:.0f} % |")
    lines += ["", "| ratio edge-cache / nginx-cache (median of per-round ratios) | req/s | per proxy core (CPU/req inverse) | goal |",
              "|---|---|---|---|"]
    for obj in OBJECTS:
        rps, core = load.per_round_ratios(runs[f"edge-cache/{obj}"], runs[f"nginx-cache/{obj}"])
        lines.append(f"| {size[obj]} | {rps:.3f} | {core:.3f} | ≥ 1.0 {'met' if core >= 1.0 else '**missed**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
