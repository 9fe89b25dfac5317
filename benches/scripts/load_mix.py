#!/usr/bin/env python3
"""Realistic-mix load harness (run it through `scripts/bench-load --mix`).

The mix of `mix.py` (per 100 requests: 5 denials, 2 CORS preflights, 93 admitted GETs
at one live media playlist per 3 1 MiB segments, every request with `Origin`) driven
by one wrk lua script against

    edge       `stile edge` validating a query token (100 k revoked ids in its state),
               CORS for the player's page, rewriting each playlist it serves so the
               token rides into the segment URIs
    nginx-sl   nginx with `secure_link` (expiry + MD5 over expiry, URI and secret) and
               the usual `add_header`/`if` CORS block, proxying over a keep-alive pool

both in front of the same origin (nginx, one worker). Not the same work: nginx cannot
rewrite playlists, so the edge does strictly more per playlist (buffer, rewrite, a
larger chunked answer). No cache on either (`scripts/bench-load --cache` has the
cached mix). Rounds interleaved, pinning as in load.py. Per run: req/s, MB/s (bytes
wrk read, headers included), proxy CPU per request and MB/s per core (bytes per
request ÷ CPU per request). Standard library only.
"""

import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load  # noqa: E402  (the plain harness: processes, nginx configs, wrk parsing)
import mix  # noqa: E402  (the viewer mix)

VARIANTS = ["edge", "nginx-sl"]


def main() -> int:
    ap = load.driver_args(__doc__, 8)
    args = ap.parse_args()
    return load.in_work_dir("mix", lambda work: run(args, work))


def tokens(args, work: pathlib.Path, scope: str, path: str, now: int) -> tuple[str, str]:
    """A valid token (writing the edge's state) and an expired one for `scope`."""
    def mint(state: pathlib.Path, at: int, revoked: int) -> str:
        return subprocess.run([args.mint, str(state), scope, path, str(at), str(revoked)],
                              check=True, capture_output=True, text=True).stdout.strip()
    return mint(work / "state.json", now, args.revoked), mint(work / "scratch-state.json", now - 7200, 0)


def edge_config(args, work: pathlib.Path, name: str, port: int, origin: int, extra: str = "") -> pathlib.Path:
    conf = work / f"{name}.toml"
    conf.write_text(f"""listen = ["127.0.0.1:{port}"]
admin_listen = ""
threads = {args.edge_threads}
pid_file = "{work}/{name}.pid"
upgrade_sock = "{work}/{name}.sock"
[origin]
address = "127.0.0.1:{origin}"
[state]
file = "{work}/state.json"
[access_log]
enabled = false
[cors]
allowed_origins = ["{mix.PAGE_ORIGIN}"]
{extra}""")
    return conf


def requests_for(v: str, tag: str, token: str, expired: str, expires: int) -> tuple[list[str], list[str], list[str], str]:
    """The mix's playlists, segments, denials and preflight path for variant kind `v`
    (`edge…` carries the Stile token, `nginx…` a `secure_link` query per URI)."""
    playlists, segments = mix.paths(tag)
    if v.startswith("edge"):
        def q(p: str) -> str:
            return f"{p}?st={token}"
        denials = [f"{segments[0]}?st={token[:-2]}AA", f"{segments[1]}?st={expired}"]
    else:
        def q(p: str) -> str:
            return f"{p}?{load.secure_link_query(p, expires)}"
        denials = [q(segments[0]).replace("md5=", "md5=AA", 1), f"{segments[1]}?{load.secure_link_query(segments[1], expires - 7200 * 2)}"]
    return [q(p) for p in playlists], [q(p) for p in segments], denials, segments[2]


def run(args, work: pathlib.Path) -> int:
    ports = {v: load.free_port() for v in ["origin", *VARIANTS]}
    now = int(time.time())
    expires = now + 3600
    docroot = work / "www"
    mix.write_media(docroot)
    origin = load.start_nginx(work, "origin", mix.origin_server(ports["origin"], docroot), args.load_cpu, ports["origin"])

    token, expired = tokens(args, work, "/live/", mix.paths("m")[0][0], now)
    edge = load.start([args.stile, "edge", "--config", str(edge_config(args, work, "edge", ports["edge"], ports["origin"]))],
                      args.proxy_cpu, work / "edge.log")
    load.wait_port(ports["edge"], edge, "edge")
    body = f"""    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-sl']} backlog=4096;
        location / {{
{mix.nginx_cors()}
{load.SECURE_LINK}
{load.PROXY_PASS}
        }}
    }}"""
    nginx = load.start_nginx(work, "nginx-sl", body, args.proxy_cpu, ports["nginx-sl"])
    pids = {"edge": edge.pid, "nginx-sl": nginx.pid}

    scripts = {}
    for v in VARIANTS:
        pl, seg, den, pre = requests_for(v, "m", token, expired, expires)
        mix.check_variant(f"http://127.0.0.1:{ports[v]}", pl, seg, den, pre, rewrites=v == "edge", what=v)
        scripts[v] = work / f"{v}.lua"
        scripts[v].write_text(mix.lua(pl, seg, den, pre))

    def one(v: str, seconds: int) -> dict:
        cmd = ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency",
               "--timeout", "5s", "-s", str(scripts[v]), f"http://127.0.0.1:{ports[v]}"]
        r, _ = load.measure(cmd, pids[v], seconds)
        mix.check_denials(r, v)
        r["mb_s"] = r["bytes"] / seconds / 1e6
        r["mb_s_core"] = r["bytes"] / max(r["requests"], 1) / r["cpu_us_per_req"]
        return r

    print(f"bench-load --mix: {', '.join(VARIANTS)}, {args.rounds} rounds of {args.duration} s", file=sys.stderr)
    for v in VARIANTS:
        one(v, args.warmup)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for rnd in range(args.rounds):
        for v in VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]:
            r = one(v, args.duration)
            runs[v].append(r)
            print(f"  round {rnd + 1} {v:9} {r['rps']:9.0f} req/s {r['mb_s']:7.0f} MB/s  {r['cpu_us_per_req']:6.1f} µs CPU/req  "
                  f"{r['mb_s_core']:6.0f} MB/s/core  {r['cpu_util'] * 100:3.0f}% CPU", file=sys.stderr)

    load.write_results(args.out, table(args, runs), args=vars(args), runs=runs)
    return 0


def table(args, runs: dict[str, list[dict]]) -> str:
    med = lambda k, f: statistics.median(r[f] for r in runs[k])  # noqa: E731
    label = {"edge": "edge (validating, rewriting playlists)", "nginx-sl": "nginx `secure_link` (playlists passed through)"}
    lines = [
        f"{args.rounds} interleaved rounds of {args.duration} s, wrk -t1 -c{args.connections} with the mix script: per 100 "
        f"requests 5 denials (forged, expired), 2 CORS preflights, 93 GETs at 1 live media playlist (≈ 2 KiB) : 3 "
        f"segments (1 MiB), {mix.RENDITIONS} renditions × {mix.SEGMENTS_PER_RENDITION} segments; no cache; proxy pinned "
        f"to CPU {args.proxy_cpu} (edge threads = {args.edge_threads}, nginx one worker), wrk and origin on CPU "
        f"{args.load_cpu}; access logs off. MB/s counts what wrk read (headers and bodies); MB/s per core = bytes per "
        "request ÷ proxy CPU per request.",
        "",
        "| variant | req/s (median) | req/s (min – max) | MB/s | p50 | p99 | proxy CPU / req | MB/s per core | proxy CPU use |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        rps = [r["rps"] for r in runs[v]]
        lines.append(f"| {label[v]} | {med(v, 'rps'):,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | {med(v, 'mb_s'):,.0f} | "
                     f"{med(v, 'p50_us'):.0f} µs | {med(v, 'p99_us'):.0f} µs | {med(v, 'cpu_us_per_req'):.1f} µs | "
                     f"{med(v, 'mb_s_core'):,.0f} | {med(v, 'cpu_util') * 100:.0f} % |")
    rps, core = load.per_round_ratios(runs["edge"], runs["nginx-sl"])
    lines += ["", "| ratio edge / nginx-sl (median of per-round ratios) | req/s | per proxy core (CPU/req inverse) | goal (per core) | |",
              "|---|---|---|---|---|",
              f"| realistic mix | {rps:.3f} | {core:.3f} | ≥ 0.9× (issue 21) | {'met' if core >= 0.9 else '**missed**'} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
