#!/usr/bin/env python3
"""HTTPS load harness (run it through `scripts/bench-load --tls`).

The same origin as `load.py` (nginx, one worker, a 2 KiB object, keep-alive) on
loopback, fronted over HTTPS by

    edge-tls    `stile edge` validating a query token (100 k revoked ids), TLS on rustls
    nginx-tls   nginx with `secure_link` proxying to the same origin, TLS on OpenSSL

with the same certificate (ECDSA P-256, made here with `openssl req`) and the same
cipher (TLS 1.3, TLS_AES_128_GCM_SHA256, X25519), session resumption off on both so
every new connection is a full handshake. Scenarios, each run for every variant in
interleaved rounds:

    handshake   wrk over HTTP/1.1 with `Connection: close`: a new connection (a full
                handshake) per request
    h1          wrk over HTTP/1.1, keep-alive
    h2          h2load over HTTP/2: 32 connections x 10 concurrent streams
    h2-mix      the same over the viewer mix of mix.py without its preflights (h2load
                sends GETs only): every 20th request a denial, the rest live playlists
                (the edge rewrites them) and 1 MiB segments at 1 : 3, from a URI list
    h1-hit      `h1` against the caching peers, the object cached (filled first):
    h2-hit      `h2` likewise — a second edge with `[cache]` on and nginx with
                `proxy_cache` (`proxy_cache_lock`, `sendfile`), the same certificate and
                cipher, so the keep-alive rows are measured where a video edge's
                requests are answered, its cache, as well as through the proxy

h2load runs without its own warm-up phase (the warm-up runs above take its place), so the
proxy CPU measured and the requests counted cover the same seconds. Pinning as in
load.py: the proxy under test on `--proxy-cpu`, the load generator and
the origin on `--load-cpu`. The client's handshake work is as heavy as the server's,
so `handshake` req/s is bound by the load generator's core; the per-core figure to
compare is the proxy's CPU time per request (utime+stime from /proc), reported with
its inverse (requests per proxy-core-second). Standard library only.
"""

import pathlib
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import load  # noqa: E402  (the plain harness: processes, nginx configs, wrk parsing)
import load_mix  # noqa: E402  (tokens and the mix's requests per variant)
import mix  # noqa: E402  (the viewer mix)

SCENARIOS = ["handshake", "h1", "h2", "h2-mix", "h1-hit", "h2-hit"]
VARIANTS = ["edge-tls", "nginx-tls"]
HOST = "bench.test"
CIPHER = "TLS_AES_128_GCM_SHA256"


def parse_h2load(out: str) -> dict:
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    lat = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    traffic = re.search(r"traffic: \S+ \((\d+)\) total", out)
    if not (m and done and status):
        raise SystemExit(f"bench-load: cannot parse h2load output:\n{out}")
    unit = {"us": 1, "ms": 1e3, "s": 1e6}
    return {
        "requests": int(done.group(4)),
        "rps": float(m.group(1)),
        "p50_us": float(lat.group(5)) * unit[lat.group(6)] if lat else 0.0,  # h2load gives mean, not p50
        "p99_us": float(lat.group(3)) * unit[lat.group(4)] if lat else 0.0,  # and max, not p99
        "non2xx": int(status.group(2)) + int(status.group(3)) + int(status.group(4)),
        "socket_errors": int(done.group(5)) + int(done.group(6)),
        "done": int(done.group(3)),
        "bytes": float(traffic.group(1)) if traffic else 0.0,
    }


def main() -> int:
    ap = load.driver_args(__doc__, 10)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = ap.parse_args()
    scenarios = load.chosen(args.scenarios, SCENARIOS, "scenario")
    return load.in_work_dir("tls", lambda work: run(args, scenarios, work))


def run(args, scenarios: list[str], work: pathlib.Path) -> int:
    ports = {v: load.free_port() for v in ["origin", *VARIANTS, *[f"{v}-cache" for v in VARIANTS]]}
    now = int(time.time())
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )

    docroot = work / "www"
    (docroot / "bench").mkdir(parents=True)
    (docroot / load.OBJECT.lstrip("/")).write_bytes(bytes(i % 251 for i in range(load.OBJECT_BYTES)))
    mix.write_media(docroot)
    origin = load.start_nginx(work, "origin", mix.origin_server(ports["origin"], docroot), args.load_cpu, ports["origin"])

    # The mix's token (scope /live/) and an expired one; the state it writes is the one below.
    live_token, expired = load_mix.tokens(args, work, "/live/", mix.paths("m")[0][0], now)
    state = work / "state.json"
    token = subprocess.run([args.mint, str(state), "/bench/", load.OBJECT, str(now), str(args.revoked)],
                           check=True, capture_output=True, text=True).stdout.strip()
    def edge_config(name: str, cache: str) -> pathlib.Path:
        conf = work / f"{name}.toml"
        conf.write_text(f"""listen = []
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
[diagnostics]
reason_header = true
{cache}
[tls]
listen = ["127.0.0.1:{ports[name]}"]
min_version = "1.3"
cipher_suites = ["{CIPHER}"]
session_tickets = false
session_cache_size = 0
[[tls.certificates]]
cert = "{cert}"
key = "{key}"
""")
        return conf

    hits = [s for s in scenarios if s.endswith("-hit")]
    pids = {}
    for name, cache in [("edge-tls", ""), *([("edge-tls-cache", "[cache]\nenabled = true\n")] if hits else [])]:
        edge = load.start([args.stile, "edge", "--config", str(edge_config(name, cache))], args.proxy_cpu,
                          work / f"{name}.log")
        load.wait_port(ports[name], edge, name)
        pids[name] = edge.pid

    expires = now + 3600
    tls = f"""        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites {CIPHER};
        ssl_ecdh_curve X25519;
        ssl_session_cache off;
        ssl_session_tickets off;"""
    body = f"""    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-tls']} ssl http2 backlog=4096;
{tls}
        location / {{
{load.SECURE_LINK}
{load.PROXY_PASS}
        }}
    }}"""
    nginx = load.start_nginx(work, "nginx-tls", body, args.proxy_cpu, ports["nginx-tls"])
    pids["nginx-tls"] = nginx.pid
    if hits:
        # As load_cache.py's nginx-cache: sendfile on (moot under TLS without kTLS), a cache lock.
        (work / "nginx-cache").mkdir()
        body = f"""    sendfile on;
    tcp_nopush on;
    proxy_cache_path {work}/nginx-cache/store levels=1:2 keys_zone=video:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{ports['origin']}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{ports['nginx-tls-cache']} ssl http2 backlog=4096;
{tls}
        location / {{
{load.SECURE_LINK}
            proxy_cache video;
            proxy_cache_key $host$uri;
            proxy_cache_lock on;
            proxy_cache_valid 200 1h;
            add_header x-cache-status $upstream_cache_status;
{load.PROXY_PASS}
        }}
    }}"""
        nginx = load.start_nginx(work, "nginx-tls-cache", body, args.proxy_cpu, ports["nginx-tls-cache"], master=True)
        pids["nginx-tls-cache"] = nginx.pid
    urls = {
        "edge-tls": f"https://{HOST}:{ports['edge-tls']}{load.OBJECT}?st={token}",
        "nginx-tls": f"https://{HOST}:{ports['nginx-tls']}{load.OBJECT}?{load.secure_link_query(load.OBJECT, expires)}",
    }
    for v in VARIANTS:
        urls[f"{v}-cache"] = urls[v].replace(f":{ports[v]}/", f":{ports[v + '-cache']}/")

    # The caching peers answer the object from their cache (the first request fills it).
    for v in [f"{v}-cache" for v in VARIANTS] if hits else []:
        for attempt in range(2):
            out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cert), "--resolve",
                                  f"{HOST}:{ports[v]}:127.0.0.1", "-o", "/dev/null", "-D", "-", urls[v]],
                                 capture_output=True, text=True, timeout=10)
        cached = re.search(r"^(x-stile-cache|x-cache-status): *(\S+)", out.stdout, re.M | re.I)
        if not cached or cached.group(2).lower() != "hit":
            raise SystemExit(f"bench-load: {v} does not answer from its cache:\n{out.stdout}{out.stderr}")

    # Both answer over HTTP/2 with the object, with the same protocol and cipher.
    for v in VARIANTS:
        out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cert), "--resolve", f"{HOST}:{ports[v]}:127.0.0.1",
                              "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{size_download}", "-v", urls[v]],
                             capture_output=True, text=True, timeout=10)
        if out.stdout.strip() != f"200 2 {load.OBJECT_BYTES}" or CIPHER not in out.stderr or "TLSv1.3" not in out.stderr:
            raise SystemExit(f"bench-load: {v}: {out.stdout!r}\n{out.stderr}")

    # The mix as h2load URI lists, after checking each variant answers its kinds of request.
    uri_files = {}
    for v in VARIANTS:
        pl, seg, den, pre = load_mix.requests_for("edge" if v == "edge-tls" else "nginx", "m", live_token, expired, expires)
        base = f"https://{HOST}:{ports[v]}"
        for path, want in [(pl[0], 200), (seg[0], 200), *[(d, (403, 410)) for d in den]]:
            got = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(cert), "--resolve", f"{HOST}:{ports[v]}:127.0.0.1",
                                  "-o", "/dev/null", "-w", "%{http_code}", base + path], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            if not got.isdigit() or int(got) not in (want if isinstance(want, tuple) else (want,)):
                raise SystemExit(f"bench-load: {v}: {path[:40]}… gave {got}")
        uri_files[v] = work / f"{v}-mix.uris"
        uri_files[v].write_text("".join(f"https://127.0.0.1:{ports[v]}{u}\n" for u in mix.uri_list(pl, seg, den)))

    def one(v: str, scenario: str, seconds: int) -> dict:
        if scenario.endswith("-hit"):
            v, scenario = f"{v}-cache", scenario.removesuffix("-hit")
        url = urls[v].replace(HOST, "127.0.0.1")
        if scenario == "h2-mix":
            cmd = ["taskset", "-c", str(args.load_cpu), "h2load", "-c", str(args.connections), "-m", "10",
                   "-D", str(seconds), "-t", "1", "-H", f":authority: {HOST}",
                   "-i", str(uri_files[v])]
            r, out = load.measure(cmd, pids[v], seconds, parse_h2load)
            # CPU per request over every request done, denials (4xx) included.
            r["cpu_us_per_req"] *= max(r["requests"], 1) / max(r["done"], 1)
            r["requests"] = r["done"]
            share = r["non2xx"] / max(r["done"], 1)
            # Every connection walks the list from its start, so a short run sees a prefix of
            # it: looser than the lua mix's ± 1 point.
            if abs(share - mix.DENIAL_FRACTION) > 0.025 or r["socket_errors"] > r["non2xx"]:
                raise SystemExit(f"bench-load: {v}/h2-mix: {share * 100:.1f} % non-2xx (5 % expected), "
                                 f"{r['socket_errors']} failed or errored\n{out}")
            r["mb_s_core"] = r["bytes"] / max(r["done"], 1) / r["cpu_us_per_req"]
            return r
        if scenario == "h2":
            cmd = ["taskset", "-c", str(args.load_cpu), "h2load", "-c", str(args.connections), "-m", "10",
                   "-D", str(seconds), "-t", "1", "-H", f":authority: {HOST}", url]
        else:
            cmd = ["taskset", "-c", str(args.load_cpu), "wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s",
                   "--latency", "--timeout", "5s", "-H", f"Host: {HOST}"]
            if scenario == "handshake":
                cmd += ["-H", "Connection: close"]
            cmd.append(url)
        r, out = load.measure(cmd, pids[v], seconds, parse_h2load if scenario == "h2" else None)
        if r["non2xx"] or (r["socket_errors"] and scenario != "handshake"):
            raise SystemExit(f"bench-load: {v}/{scenario}: {r['non2xx']} non-2xx, {r['socket_errors']} errors\n{out}")
        r["mb_s_core"] = r["bytes"] / max(r["requests"], 1) / r["cpu_us_per_req"]
        return r

    print(f"bench-load --tls: {', '.join(scenarios)} x {', '.join(VARIANTS)}, {args.rounds} rounds of {args.duration} s",
          file=sys.stderr)
    for s in scenarios:
        for v in VARIANTS:
            one(v, s, args.warmup)
    runs: dict[str, list[dict]] = {f"{v}/{s}": [] for s in scenarios for v in VARIANTS}
    for rnd in range(args.rounds):
        for s in scenarios:
            order = VARIANTS if rnd % 2 == 0 else VARIANTS[::-1]
            for v in order:
                r = one(v, s, args.duration)
                runs[f"{v}/{s}"].append(r)
                print(f"  round {rnd + 1} {v:9} {s:9} {r['rps']:9.0f} req/s  {r['cpu_us_per_req']:6.1f} µs CPU/req  "
                      f"{r['cpu_util'] * 100:3.0f}% CPU", file=sys.stderr)

    load.write_results(args.out, table(args, scenarios, runs), args=vars(args), runs=runs)
    return 0


def table(args, scenarios: list[str], runs: dict[str, list[dict]]) -> str:
    med = lambda k, f: statistics.median(r[f] for r in runs[k])  # noqa: E731
    what = {"handshake": "new connection per request (full TLS 1.3 handshake), HTTP/1.1",
            "h1": "HTTPS keep-alive, HTTP/1.1", "h2": "HTTPS, HTTP/2, 10 streams per connection",
            "h2-mix": "viewer mix (5 % denials, playlists : 1 MiB segments 1 : 3), HTTPS, HTTP/2",
            "h1-hit": "cache hit, HTTPS keep-alive, HTTP/1.1", "h2-hit": "cache hit, HTTPS, HTTP/2, 10 streams per connection"}
    tool = {"handshake": f"wrk -t1 -c{args.connections}, `Connection: close`", "h1": f"wrk -t1 -c{args.connections}",
            "h2": f"h2load -t1 -c{args.connections} -m10", "h2-mix": f"h2load -t1 -c{args.connections} -m10 -i"}
    tool["h1-hit"], tool["h2-hit"] = tool["h1"], tool["h2"]
    label = lambda v, s: f"{v} + cache" if s.endswith("-hit") else v  # noqa: E731
    lines = [
        f"{args.rounds} interleaved rounds of {args.duration} s; 2 KiB object (h2-mix: the viewer mix, the edge rewriting "
        "playlists, nginx passing them through); same ECDSA P-256 certificate, TLS 1.3 "
        f"`{CIPHER}` with X25519, resumption off on both; proxy pinned to CPU {args.proxy_cpu} (edge threads = "
        f"{args.edge_threads}, nginx one worker), load generator and origin on CPU {args.load_cpu}; access logs off. "
        "`+ cache` rows: a second edge with `[cache]` on and nginx with `proxy_cache`, the object cached.",
        "",
        "| scenario | variant | req/s (median) | req/s (min – max) | proxy CPU / req | req per proxy-core-second "
        "| MB/s per core (bytes received) | proxy CPU use |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in scenarios:
        for v in VARIANTS:
            k = f"{v}/{s}"
            rps = [r["rps"] for r in runs[k]]
            cpu = med(k, "cpu_us_per_req")
            lines.append(f"| {what[s]} ({tool[s]}) | {label(v, s)} | {med(k, 'rps'):,.0f} | {min(rps):,.0f} – {max(rps):,.0f} | "
                         f"{cpu:.1f} µs | {1e6 / cpu:,.0f} | {med(k, 'mb_s_core'):,.0f} | {med(k, 'cpu_util') * 100:.0f} % |")
    lines += ["", "| ratio edge-tls / nginx-tls (median of per-round ratios) | req/s | per proxy core (CPU/req inverse) | goal |",
              "|---|---|---|---|"]
    for s in scenarios:
        rps, core = load.per_round_ratios(runs[f"edge-tls/{s}"], runs[f"nginx-tls/{s}"])
        goal = 0.9 if s == "h2-mix" else 1.0
        lines.append(f"| {s} | {rps:.3f} | {core:.3f} | ≥ {goal} {'met' if core >= goal else '**missed**'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
