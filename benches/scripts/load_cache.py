#!/usr/bin/env python3
"""Cache load harness (run it through `scripts/bench-load --cache`).

One origin (nginx, one worker, keep-alive, its access log on) on loopback, fronted by
two caching video edges:

    edge-cache   `stile edge` validating a query token (100 k revoked ids), `[cache]`
                 on (memory tier), CORS for the player's page
    nginx-cache  nginx with `secure_link` and `proxy_cache` (`proxy_cache_lock on`, `sendfile on`,
                 keys_zone in memory, files under the work dir with `max_size` enforced
                 by its cache manager, so a master process runs; its CPU is counted with
                 the worker's), a keep-alive upstream pool, the cache key without the
                 token; for `/live/` the usual video-edge settings: playlists valid 1 s
                 (the edge's live-playlist default for a 2 s target duration), segments
                 1 day, `proxy_cache_use_stale updating` + `proxy_cache_background_update`,
                 `proxy_cache_revalidate`

Both validate every request before the lookup. Scenarios (`--scenarios`), each run for
both variants in interleaved rounds:

    hit-2k, hit-1m  a 2 KiB object and a 1 MiB segment, filled first: every measured
                    request is a hit (checked: the origin's log does not grow)
    miss-1m         every request a distinct URL (`/miss/<round>-<n>.ts`, the origin
                    maps each to the 1 MiB file): every request a miss, filled and
                    stored (checked: one origin request per viewer request); nginx's
                    `secure_link` here covers the `/miss/` prefix (one MD5 for every
                    URL, as the edge's token covers its scope)
    mix             the viewer mix of mix.py (playlists, 1 MiB segments, denials,
                    preflights) from a cold cache (a fresh path prefix per run): origin
                    requests per 1,000 viewer requests, split playlists / segments

Per run: req/s, MB/s, proxy CPU time per request (utime+stime from /proc, the
process and its children), requests and MB per proxy-core-second. Pinning as in
load.py. Standard library only.
"""

import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load  # noqa: E402  (the plain harness: processes, nginx configs, wrk parsing)
import load_mix  # noqa: E402  (tokens, edge config, the mix's requests per variant)
import mix  # noqa: E402  (the viewer mix)

VARIANTS = ["edge-cache", "nginx-cache"]
OBJECTS = {"2k": ("/bench/small.ts", 2048), "1m": ("/bench/seg.m4s", 1 << 20)}
SCENARIOS = ["hit-2k", "hit-1m", "miss-1m", "mix"]
TEXT = {"hit-2k": "hit, 2 KiB object", "hit-1m": "hit, 1 MiB segment", "miss-1m": "miss, 1 MiB segment (distinct URLs)",
        "mix": "realistic mix, cold cache"}


def main() -> int:
    ap = load.driver_args(__doc__, 6)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"known: {', '.join(SCENARIOS)}")
    args = ap.parse_args()
    scenarios = load.chosen(args.scenarios, SCENARIOS, "scenario")
    return load.in_work_dir("cache", lambda work: run(args, scenarios, work))


def origin_log(log: pathlib.Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def nginx_location(match: str, valid: str, ports: dict, secure_link: str = load.SECURE_LINK, cors: bool = False) -> str:
    video = """
            proxy_cache_use_stale updating error timeout;
            proxy_cache_background_update on;
            proxy_cache_revalidate on;""" if cors else ""
    return f"""        location {match} {{
{mix.nginx_cors() if cors else ''}
{secure_link}
            proxy_cache video;
            proxy_cache_key $host$uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 {valid};{video}
{load.PROXY_PASS}
        }}"""


def run(args, scenarios: list[str], work: pathlib.Path) -> int:
    ports = {v: load.free_port() for v in ["origin", *VARIANTS]}
    now = int(time.time())
    expires = now + 3600
    docroot = work / "www"
    load.write_objects(docroot, OBJECTS.values())
    mix.write_media(docroot)
    access = work / "origin-access.log"
    extra = f"        access_log {access};\n        location /miss/ {{ try_files {OBJECTS['1m'][0]} =404; }}"
    origin = load.start_nginx(work, "origin", mix.origin_server(ports["origin"], docroot, extra), args.load_cpu, ports["origin"])

    # One token scoped to "/" covers the hit objects, the miss URLs and the mix.
    token, expired = load_mix.tokens(args, work, "/", OBJECTS["2k"][0], now)
    econf = load_mix.edge_config(args, work, "edge-cache", ports["edge-cache"], ports["origin"],
                                 "[cache]\nenabled = true\nmemory_bytes = 1073741824\n")
    edge = load.start([args.stile, "edge", "--config", str(econf)], args.proxy_cpu, work / "edge-cache.log")
    load.wait_port(ports["edge-cache"], edge, "edge-cache")

    miss_link = load.SECURE_LINK.replace("$uri", "/miss/")
    # sendfile: hits leave nginx's cache files without a copy through user space, as any
    # nginx video edge is configured (the default is off).
    body = f"""    sendfile on;
    tcp_nopush on;
    proxy_cache_path {work}/nginx-cache/store levels=1:2 keys_zone=video:64m max_size=1g inactive=1h use_temp_path=off manager_files=1000;
    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-cache']} backlog=4096;
{nginx_location("~ ^/live/.*[.]m3u8$", "1s", ports, cors=True)}
{nginx_location("/live/", "1d", ports, cors=True)}
{nginx_location("/miss/", "1h", ports, secure_link=miss_link)}
{nginx_location("/", "1h", ports)}
    }}"""
    nginx = load.start_nginx(work, "nginx-cache", body, args.proxy_cpu, ports["nginx-cache"], master=True)
    pids = {"edge-cache": edge.pid, "nginx-cache": nginx.pid}
    base = {v: f"http://127.0.0.1:{ports[v]}" for v in VARIANTS}

    def query(v: str, path: str) -> str:
        if v == "edge-cache":
            return f"st={token}"
        return load.secure_link_query("/miss/" if path.startswith("/miss/") else path, expires)

    def url(v: str, path: str) -> str:
        return f"{base[v]}{path}?{query(v, path)}"

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
        status, got = load.fetch(url(v, "/miss/check.ts"))
        if status != 200 or len(got) != OBJECTS["1m"][1]:
            raise SystemExit(f"bench-load: {v} /miss/: GET gave {status} with {len(got)} bytes")
        if load.fetch(url(v, "/miss/check2.ts").replace("md5=", "md5=AA", 1).replace(f"st={token}", f"st={token[:-2]}AA"))[0] != 403:
            raise SystemExit(f"bench-load: {v} admits a forged /miss/ link")
        pl, seg, den, pre = load_mix.requests_for("edge" if v == "edge-cache" else "nginx", "check", token, expired, expires)
        mix.check_variant(base[v], pl, seg, den, pre, rewrites=v == "edge-cache", what=v)

    def script(v: str, scenario: str, tag: str) -> pathlib.Path:
        f = work / f"{v}-{scenario}-{tag}.lua"
        if scenario == "mix":
            pl, seg, den, pre = load_mix.requests_for("edge" if v == "edge-cache" else "nginx", tag, token, expired, expires)
            f.write_text(mix.lua(pl, seg, den, pre))
        else:  # miss: a counter makes every URL distinct
            f.write_text(f"""-- generated by benches/scripts/load_cache.py: every request a distinct URL
local n = 0
function request()
  n = n + 1
  return wrk.format("GET", "/miss/{tag}-" .. n .. ".ts?{query(v, '/miss/')}")
end
""")
        return f

    def one(v: str, scenario: str, seconds: int, tag: str) -> dict:
        cmd = ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--latency",
               "--timeout", "5s"]
        if scenario.startswith("hit-"):
            cmd.append(url(v, OBJECTS[scenario[4:]][0]))
            for _ in range(2):  # refill, in case the miss and mix runs evicted it
                load.fetch(cmd[-1])
        else:
            cmd += ["-s", str(script(v, scenario, tag)), base[v]]
        before = len(origin_log(access))
        r, _ = load.measure(cmd, pids[v], seconds)
        time.sleep(0.2)  # let the origin finish logging the last in-flight fetches
        lines = origin_log(access)[before:]
        r["origin_requests"] = len(lines)
        r["origin_playlists"] = sum(".m3u8" in x for x in lines)
        if scenario == "mix":
            mix.check_denials(r, f"{v} {scenario}")
        elif r["non2xx"] or r["socket_errors"]:
            raise SystemExit(f"bench-load: {v} {scenario}: {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
        if scenario.startswith("hit-") and lines:
            raise SystemExit(f"bench-load: {v} {scenario}: {len(lines)} measured requests reached the origin: not hits")
        if scenario == "miss-1m" and not r["requests"] <= len(lines) <= r["requests"] + args.connections:
            raise SystemExit(f"bench-load: {v} miss: {len(lines)} origin requests for {r['requests']} viewer requests")
        r["mb_s"] = r["bytes"] / seconds / 1e6
        r["mb_s_core"] = r["bytes"] / max(r["requests"], 1) / r["cpu_us_per_req"]
        r["origin_per_1000"] = len(lines) / max(r["requests"], 1) * 1000
        return r

    print(f"bench-load --cache: {', '.join(scenarios)} x {', '.join(VARIANTS)}, {args.rounds} rounds of {args.duration} s",
          file=sys.stderr)
    for x in scenarios:
        for v in VARIANTS:
            one(v, x, args.warmup, "warm")
    runs: dict[str, list[dict]] = {f"{v}/{x}": [] for x in scenarios for v in VARIANTS}
    for rnd in range(args.rounds):
        for x in scenarios:
            for v in VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]:
                r = one(v, x, args.duration, f"r{rnd}")
                runs[f"{v}/{x}"].append(r)
                print(f"  round {rnd + 1} {v:11} {x:7} {r['rps']:9.0f} req/s {r['mb_s']:8.0f} MB/s  "
                      f"{r['cpu_us_per_req']:7.1f} µs CPU/req  {r['mb_s_core']:6.0f} MB/s/core  {r['cpu_util'] * 100:3.0f}% CPU  "
                      f"origin {r['origin_requests']} ({r['origin_per_1000']:.1f}/1000)", file=sys.stderr)

    load.write_results(args.out, table(args, scenarios, runs), args=vars(args), runs=runs)
    return 0


def table(args, scenarios: list[str], runs: dict[str, list[dict]]) -> str:
    med = lambda k, f: statistics.median(r[f] for r in runs[k])  # noqa: E731
    lines = [
        f"{args.rounds} interleaved rounds of {args.duration} s, wrk -t1 -c{args.connections}; both validate every request "
        f"before the lookup; proxy pinned to CPU {args.proxy_cpu} (edge threads = {args.edge_threads}, memory tier "
        f"1 GiB; nginx one worker plus its master and cache manager, cache files under the work dir, `sendfile on`), wrk "
        "and origin "
        f"on CPU {args.load_cpu}; access logs off on both proxies. Hits: the origin's log did not grow during the measured "
        "runs. Miss: every viewer request was one origin request (checked on the origin's log). Mix: per 100 requests 5 "
        "denials, 2 CORS preflights, 93 GETs at 1 live playlist : 3 segments (1 MiB) over "
        f"{mix.RENDITIONS * mix.SEGMENTS_PER_RENDITION} distinct segments and {mix.RENDITIONS} playlists, each run from a "
        "cold cache; the edge rewrites every playlist it serves, nginx passes them through. The mix's origin requests: "
        f"{mix.RENDITIONS * mix.SEGMENTS_PER_RENDITION} segment fetches per run is every distinct segment fetched once "
        "(full collapsing); playlists are refetched as their 1 s lifetime runs out. Runs have equal durations, so the "
        "proxy serving more viewer requests spreads the same cold fetches thinner: compare the per-run counts for the "
        "caches' behaviour, the per-1,000 figure for the offload at that throughput. MB/s counts what wrk read "
        "(headers and bodies); MB/s per core = bytes per request ÷ proxy CPU per request.",
        "",
        "| scenario | variant | req/s (median) | req/s (min – max) | MB/s | proxy CPU / req | req per proxy-core-second "
        "| MB/s per core | proxy CPU use | origin requests per 1,000 viewer requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in scenarios:
        for v in VARIANTS:
            k = f"{v}/{x}"
            rps = [r["rps"] for r in runs[k]]
            cpu = med(k, "cpu_us_per_req")
            o = med(k, "origin_per_1000")
            if x == "mix":
                total, pl = med(k, "origin_requests"), med(k, "origin_playlists")
                origin = f"{o:.1f} ({total:.0f} per run: {pl:.0f} playlists + {total - pl:.0f} segments)"
            else:
                origin = f"{o:.1f}"
            lines.append(f"| {TEXT[x]} | {v} | {med(k, 'rps'):,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | "
                         f"{med(k, 'mb_s'):,.0f} | {cpu:.1f} µs | {1e6 / cpu:,.0f} | {med(k, 'mb_s_core'):,.0f} | "
                         f"{med(k, 'cpu_util') * 100:.0f} % | {origin} |")
    lines += ["", "| ratio edge-cache / nginx-cache (median of per-round ratios) | req/s | per proxy core (CPU/req inverse) | goal (per core) | |",
              "|---|---|---|---|---|"]
    goal = {"hit-2k": (1.0, "≥ 1.0× (issues 18, 21)"), "hit-1m": (1.0, "≥ 1.0× (issues 18, 21)"),
            "miss-1m": (None, "—"), "mix": (0.9, "≥ 0.9× (issue 21's realistic-mix goal)")}
    for x in scenarios:
        rps, core = load.per_round_ratios(runs[f"edge-cache/{x}"], runs[f"nginx-cache/{x}"])
        g, text = goal[x]
        lines.append(f"| {TEXT[x]} | {rps:.3f} | {core:.3f} | {text} | {load.verdict(core, g) if g else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
