#!/usr/bin/env python3
"""The soak run behind `scripts/soak` (see that script and docs/reliability.md).

Starts an nginx origin, `stile control` (embedded store) and one `stile edge` in
sync mode, all on loopback, then for MINUTES:

- drives continuous load with wrk (one thread, 16 connections) in 20 s rounds,
  each round over the links minted since the previous one (path form to
  segments, query form to manifests so playlists are rewritten, a share of
  revoked, expired and tampered links);
- keeps a trickle of changes going through the CLI: one token revocation a
  second, a batch of 20 links every 5 s, a subject and a prefix revocation (with
  purge) every 30 s, a key rotation every 2 min retiring the key before last;
  links live 60 s and revocations expire 65 s after issue, so the
  revocation set churns and both sides prune all the time;
- samples the RSS (VmRSS) of the edge and the control plane every 10 s into
  a CSV, with the edge's revocation entries and state version.

Rule (documented in docs/reliability.md): for each process, the median RSS of
the last quarter of the samples may exceed the median of the first quarter by
at most max(16 MiB, 20 %). Also fails if a process died, if the edge's
revocation set did not churn (no pruning), or if wrk saw socket errors beyond
a few timeouts.
"""

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[1]
KEYS = {
    "admin": "stk_soak-admin-" + os.urandom(8).hex(),
    "operator": "stk_soak-operator-" + os.urandom(8).hex(),
    "minter": "stk_soak-minter-" + os.urandom(8).hex(),
    "edge": "stk_soak-edge-" + os.urandom(8).hex(),
}
ASSETS = [f"a{i}" for i in range(8)]
ROUND_SECS = 20
SAMPLE_SECS = 10
LIMIT_ABS_MB = 16.0
LIMIT_REL = 0.20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, name: str, limit: float = 30.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: {name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"soak: {name} did not listen on {port} within {limit} s")


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


class Soak:
    def __init__(self, args):
        self.args = args
        self.stile = os.environ.get("STILE_SOAK_BIN", str(REPO / "target" / "release" / "stile"))
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="stile-soak-"))
        self.procs: list[subprocess.Popen] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.links: list[dict] = []  # minted since the last round
        self.live: list[dict] = []  # candidates for revocation
        self.revoked: list[str] = []  # targets of revoked links
        self.counts = {"mint": 0, "revoke": 0, "rotate": 0, "cli_errors": 0}
        self.cli_errors: list[str] = []
        self.wrk = {"requests": 0, "errors": 0, "non2xx": 0, "rounds": 0}
        self.max_revocations = 0.0
        self.min_revocations_after_peak = float("inf")
        self.samples: list[tuple] = []

    # ------------------------------------------------------------ processes

    def start(self, cmd, name, **kw) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        deadline = time.time() + 10
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cli(self, *args, key="operator", check=True) -> str:
        cmd = [self.stile, *args, "--server", self.control_url, "--api-key", KEYS[key]]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STILE_")}
        env["HOME"] = str(self.work)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        if r.returncode != 0:
            self.counts["cli_errors"] += 1
            msg = f"stile {' '.join(args[:3])}: exit {r.returncode}: {r.stderr.strip()[:300]}"
            self.cli_errors.append(msg)
            if check:
                raise RuntimeError(msg)
        return r.stdout

    def setup(self) -> None:
        w = self.work
        # A private copy: a rebuild of target/release during the run changes nothing here.
        shutil.copy2(self.stile, w / "stile")
        self.stile = str(w / "stile")
        ports = {n: free_port() for n in ["origin", "control", "control_admin", "edge", "edge_admin"]}
        self.ports = ports
        self.control_url = f"http://127.0.0.1:{ports['control']}"
        # Origin: nginx serving small manifests and 2 KiB segments.
        root = w / "www"
        for a in ASSETS:
            d = root / "vod" / a
            d.mkdir(parents=True)
            segs = [f"seg{i}.ts" for i in range(4)]
            (d / "master.m3u8").write_text(
                "#EXTM3U\n#EXT-X-TARGETDURATION:4\n" + "".join(f"#EXTINF:4,\n{s}\n" for s in segs) + "#EXT-X-ENDLIST\n"
            )
            for s in segs:
                (d / s).write_bytes(os.urandom(2048))
        (w / "nginx").mkdir()
        temps = "\n".join(f"    {t}_temp_path {w}/nginx/{t};" for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
        (w / "nginx" / "nginx.conf").write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {w}/nginx/nginx.pid;
error_log {w}/nginx/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temps}
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{ports['origin']};
        root {root};
    }}
}}
"""
        )
        nginx = self.start(["nginx", "-p", str(w / "nginx"), "-c", str(w / "nginx" / "nginx.conf"),
                            "-e", str(w / "nginx" / "error.log")], "origin")
        wait_port(ports["origin"], nginx, "origin")

        def key_entry(name, role):
            digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
            return f'[[auth.keys]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest}"\n'

        (w / "control.toml").write_text(
            f'listen = "127.0.0.1:{ports["control"]}"\nadmin_listen = "127.0.0.1:{ports["control_admin"]}"\n'
            f'default_policy = "soak"\n'
            f'[store]\npath = "{w}/control.redb"\n'
            f'[links]\ndefault_base_url = "http://edge.soak"\n'
            f"[policies.soak]\nttl_min_secs = 30\nttl_max_secs = 60\ndefault_ttl_secs = 60\n"
            f"[revocations]\nlog_retention = 2000\nprune_interval_secs = 10\nexpiry_margin_secs = 5\n"
            f"[sync]\nkey_activation_timeout_secs = 10\n"
            + "".join(key_entry(n, n) for n in KEYS)
        )
        control = self.start([self.stile, "control", "--config", str(w / "control.toml")], "control",
                             env={**os.environ, "RUST_LOG": "warn"})
        wait_port(ports["control"], control, "control plane")
        self.control = control
        (w / "edge.toml").write_text(
            f'listen = ["127.0.0.1:{ports["edge"]}"]\nadmin_listen = "127.0.0.1:{ports["edge_admin"]}"\n'
            f"threads = 1\ngrace_period_secs = 1\ngraceful_shutdown_timeout_secs = 1\n"
            f'pid_file = "{w}/edge.pid"\nupgrade_sock = "{w}/upgrade.sock"\n'
            f'[origin]\naddress = "127.0.0.1:{ports["origin"]}"\n'
            f'[state]\nfile = "{w}/edge-cache.json"\n'
            f'[sync]\nendpoints = ["{self.control_url}"]\napi_key = "{KEYS["edge"]}"\nedge_id = "soak-edge"\n'
        )
        edge = self.start([self.stile, "edge", "--config", str(w / "edge.toml")], "edge",
                          env={**os.environ, "RUST_LOG": "warn"})
        self.edge = edge
        for a in ASSETS:
            self.cli("assets", "put", a, "--path", f"/vod/{a}/", "--entry", "master.m3u8")
            self.cli("assets", "state", a, "ready")
            self.cli("assets", "state", a, "published")
        wait_port(ports["edge"], edge, "edge")
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{ports['edge_admin']}/readyz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("soak: the edge never became ready")
        self.mint_batch(40)

    # ------------------------------------------------------------ changes

    def mint_batch(self, n: int) -> None:
        asset = random.choice(ASSETS)
        out = self.cli("mint", asset, "--count", str(n), "--subject", "v-{n}", "--json", key="minter")
        links = [json.loads(line) for line in out.splitlines() if line.strip()]
        with self.lock:
            self.links.extend(links)
            self.live.extend(links)
            self.live = self.live[-400:]
        self.counts["mint"] += len(links)

    def trickle(self) -> None:
        start = time.time()
        tick = 0
        while not self.stop.wait(1.0):
            tick += 1
            try:
                with self.lock:
                    victim = self.live.pop(random.randrange(len(self.live))) if self.live else None
                if victim:
                    self.cli("revoke", "--token-id", victim["token_id"], "--reason", "soak")
                    with self.lock:
                        self.revoked.append(target(victim["path_url"]))
                        self.revoked = self.revoked[-200:]
                    self.counts["revoke"] += 1
                if tick % 5 == 0:
                    self.mint_batch(20)
                if tick % 30 == 0:
                    self.cli("revoke", "--subject", f"v-{random.randint(1, 20)}", "--reason", "soak")
                    self.cli("revoke", "--prefix", f"/vod/{random.choice(ASSETS)}/", "--purge", "--reason", "soak")
                    self.counts["revoke"] += 2
                if tick % 120 == 0:
                    self.cli("keys", "rotate", "--reason", "soak")
                    self.counts["rotate"] += 1
                    ls = json.loads(self.cli("keys", "ls", "--json"))
                    verify_only = sorted(
                        int(k["key_id"]) for k in ls.get("keys", []) if k.get("state") == "VERIFY_ONLY"
                    )
                    # Retire all but the newest verify-only key: the set of keys stays small.
                    for kid in verify_only[:-1]:
                        self.cli("revoke", "--key-id", str(kid), "--reason", "soak retire")
                        self.counts["revoke"] += 1
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                self.cli_errors.append(f"{time.time() - start:.0f}s: {e}")

    # ------------------------------------------------------------ load

    def load(self, deadline: float) -> None:
        lua = self.work / "soak.lua"
        lua.write_text(
            """
local targets = {}
init = function(args)
  for line in io.lines(args[1]) do targets[#targets + 1] = line end
end
request = function()
  return wrk.format("GET", targets[math.random(#targets)])
end
"""
        )
        while time.time() < deadline - 2 and not self.stop.is_set():
            with self.lock:
                fresh, self.links = self.links, []
                revoked = list(self.revoked[-20:])
            if not fresh:
                time.sleep(1)
                continue
            lines = []
            for link in fresh:
                path = target(link["path_url"])
                # Segments through the path form; manifests through the query form (rewritten).
                for i in range(4):
                    lines.append(path.replace("master.m3u8", f"seg{i}.ts"))
                lines.append(target(link["query_url"]))
                token = path.split("/")[2]  # /_st/TOKEN/vod/...
                bad = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
                lines.append(path.replace(token, bad))  # tampered signature
            lines.extend(revoked)
            random.shuffle(lines)
            tfile = self.work / "targets.txt"
            tfile.write_text("\n".join(lines) + "\n")
            secs = max(1, min(ROUND_SECS, int(deadline - time.time())))
            r = subprocess.run(
                ["wrk", "-t1", "-c16", f"-d{secs}s", "--timeout", "5s", "-s", str(lua),
                 f"http://127.0.0.1:{self.ports['edge']}", "--", str(tfile)],
                capture_output=True, text=True,
            )
            self.wrk["rounds"] += 1
            m = re.search(r"(\d+) requests in", r.stdout)
            self.wrk["requests"] += int(m.group(1)) if m else 0
            m = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
            self.wrk["non2xx"] += int(m.group(1)) if m else 0
            m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", r.stdout)
            if m:
                self.wrk["errors"] += sum(int(x) for x in m.groups())

    def sampler(self, csv_path: pathlib.Path, start: float) -> None:
        with open(csv_path, "w") as f:
            f.write("t_s,edge_rss_kb,control_rss_kb,edge_revocations,edge_state_version\n")
            while True:
                t = time.time() - start
                revs = metric(self.ports["edge_admin"], "stile_edge_revocation_entries")
                version = metric(self.ports["edge_admin"], "stile_edge_state_version")
                try:
                    row = (round(t), rss_kb(self.edge.pid), rss_kb(self.control.pid), revs, version)
                except OSError:
                    break
                self.samples.append(row)
                if revs == revs:  # not NaN
                    if revs > self.max_revocations:
                        self.max_revocations = revs
                        self.min_revocations_after_peak = revs
                    self.min_revocations_after_peak = min(self.min_revocations_after_peak, revs)
                f.write(",".join(str(int(x)) if x == x else "" for x in row) + "\n")
                f.flush()
                if self.stop.wait(SAMPLE_SECS):
                    break

    # ------------------------------------------------------------ run

    def run(self) -> int:
        minutes = self.args.minutes
        out_dir = REPO / "target" / "soak"
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        csv_path = out_dir / f"soak-{stamp}.csv"
        self.setup()
        start = time.time()
        deadline = start + minutes * 60
        sampler = threading.Thread(target=self.sampler, args=(csv_path, start), daemon=True)
        trickle = threading.Thread(target=self.trickle, daemon=True)
        sampler.start()
        trickle.start()
        print(f"soak: {minutes} min; work dir {self.work}; samples in {csv_path}", file=sys.stderr)
        try:
            self.load(deadline)
            while time.time() < deadline:
                time.sleep(1)
        finally:
            self.stop.set()
            trickle.join(timeout=30)
            sampler.join(timeout=15)
        alive = {"edge": self.edge.poll() is None, "control": self.control.poll() is None}
        summary, ok = self.verdict(minutes, alive, csv_path)
        (out_dir / f"soak-{stamp}.md").write_text(summary)
        print(summary)
        if self.args.write_doc:
            write_doc(summary)
        return 0 if ok else 1

    def verdict(self, minutes, alive, csv_path):
        rows = self.samples
        q = max(1, len(rows) // 4)
        lines = []
        ok = True
        figures = {}
        for name, col in [("edge", 1), ("control", 2)]:
            first = statistics.median(r[col] for r in rows[:q]) / 1024
            last = statistics.median(r[col] for r in rows[-q:]) / 1024
            peak = max(r[col] for r in rows) / 1024
            bound = first + max(LIMIT_ABS_MB, LIMIT_REL * first)
            good = last <= bound
            ok &= good
            figures[name] = (first, last, peak, bound, good)
        revs_ok = self.max_revocations > 0 and self.min_revocations_after_peak < self.max_revocations
        ok &= revs_ok and all(alive.values())
        wrk_ok = self.wrk["errors"] <= max(20, self.wrk["requests"] // 10000)
        ok &= wrk_ok
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"Soak: `scripts/soak {minutes:g}` on {date}, {os.cpu_count()} CPUs, release build, "
                     f"{len(rows)} samples every {SAMPLE_SECS} s (`{csv_path.relative_to(REPO)}`).")
        lines.append("")
        lines.append("| process | RSS first-quarter median | last-quarter median | peak | bound | held |")
        lines.append("|---|---|---|---|---|---|")
        for name, (first, last, peak, bound, good) in figures.items():
            lines.append(f"| {name} | {first:.1f} MiB | {last:.1f} MiB | {peak:.1f} MiB | ≤ {bound:.1f} MiB | "
                         f"{'yes' if good else '**no**'} |")
        lines.append("")
        rps = self.wrk["requests"] / (minutes * 60)
        lines.append(f"Load: {self.wrk['requests']} requests through the edge ({rps:.0f}/s, wrk -t1 -c16, "
                     f"{self.wrk['rounds']} rounds), {self.wrk['non2xx']} of them denied (revoked, expired, "
                     f"tampered links), {self.wrk['errors']} socket errors.")
        lines.append(f"Changes: {self.counts['mint']} links minted, {self.counts['revoke']} revocations, "
                     f"{self.counts['rotate']} key rotations; edge revocation entries peaked at "
                     f"{self.max_revocations:.0f} and fell to {self.min_revocations_after_peak:.0f} after the peak "
                     f"(pruning {'seen' if revs_ok else '**not seen**'}); final state version "
                     f"{rows[-1][4] if rows else 0:.0f}.")
        if not all(alive.values()):
            lines.append(f"**A process died**: {alive}.")
        if self.cli_errors:
            lines.append(f"CLI errors ({len(self.cli_errors)}): {self.cli_errors[:3]}")
        lines.append(f"Verdict: {'PASS' if ok else 'FAIL'}.")
        return "\n".join(lines) + "\n", ok


def target(url: str) -> str:
    rest = url.split("://", 1)[1]
    return rest[rest.index("/"):]


def write_doc(summary: str) -> None:
    doc = REPO / "docs" / "reliability.md"
    text = doc.read_text()
    begin, end = "<!-- BEGIN soak -->", "<!-- END soak -->"
    block = f"{begin}\n{summary}{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.write_text(text)
    print(f"soak: wrote the figures into {doc.relative_to(REPO)}", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minutes", nargs="?", type=float, default=10.0)
    ap.add_argument("--write-doc", action="store_true", help="replace the soak section of docs/reliability.md")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    for tool in ["wrk", "nginx"]:
        if not shutil.which(tool):
            raise SystemExit(f"soak: {tool} not found (scripts/install-deps)")
    soak = Soak(args)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return soak.run()
    finally:
        soak.stop.set()
        soak.kill_all()
        if not args.keep:
            shutil.rmtree(soak.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
