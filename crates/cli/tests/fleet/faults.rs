//! Faults under load, real processes: while load runs at every edge (one
//! thread per edge requesting a set of minted links without pause) and
//! revocations are made with `wait`, the test kills and restarts an edge, the
//! control plane (redb) and redis-server (AOF, fsync always) with SIGKILL, cuts
//! the sync connection of an edge, jumps an edge's clock forward and back, and
//! fills the embedded store's disk.
//!
//! One [`Checker`] records every acknowledged revocation (the Revoke with
//! `wait` returned: which edges had ACKed it), every request (edge, token,
//! when sent, status, reason) and every edge's applied version over time, and
//! asserts, after the fault:
//! - (a) no acknowledged revocation is lost: each is in the control plane's
//!   list and denied `revoked` at every edge;
//! - (b) no edge's applied version ever goes down, across restarts included;
//! - (c) no request sent to an edge after that edge enforced a revocation (its
//!   ACK, as reported by Revoke, or its applied version seen at or past the
//!   revocation's) is admitted.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stile_edge::clock::{Clock, SharedClock, SystemClock};
use stile_proto::v1 as pb;
use stile_tests::edge::Origin;
use stile_tests::fleet::*;
use stile_tests::net::get;
use stile_tests::net::*;
use stile_tests::process::signal;
use stile_tests::process::*;
use stile_tests::redis::{Persistence, RedisServer};

/// Links minted per scenario; the first ones get revoked under load.
const LINKS: usize = 14;
/// Links revoked by [`under_load`], one every [`REVOKE_EVERY`], while the faults happen.
const REVOKED: usize = 10;
const REVOKE_EVERY: Duration = Duration::from_millis(150);

// ---------------------------------------------------------------- the checker

/// Where the checker reaches one edge (the ports survive its restarts).
#[derive(Clone, Debug)]
struct Target {
    id: String,
    port: u16,
    admin: u16,
}

impl Target {
    fn of(e: &SyncEdge) -> Target {
        Target { id: e.id.clone(), port: e.port, admin: e.admin }
    }
}

/// One request of the load. `status` 0: no answer (the edge was down).
#[derive(Debug)]
struct Sent {
    edge: usize,
    link: usize,
    at: Instant,
    status: u16,
    reason: Option<String>,
}

/// A revocation whose Revoke (with `wait`) returned OK.
#[derive(Debug)]
struct Acked {
    token_id: String,
    /// The minted link it revokes, if it is one of the load's.
    link: Option<usize>,
    version: u64,
    returned: Instant,
    /// Edges that had applied it when Revoke returned.
    applied: Vec<String>,
}

/// One reading of an edge's `stile_edge_state_version`, taken when the answer arrived.
#[derive(Debug)]
struct Sample {
    edge: usize,
    at: Instant,
    version: u64,
}

#[derive(Debug, Default)]
struct Record {
    sent: Vec<Sent>,
    acked: Vec<Acked>,
    samples: Vec<Sample>,
    /// Revoke calls that failed: (token id, status).
    failed: Vec<(String, tonic::Status)>,
}

/// Load, version sampling and the record, shared by every scenario.
struct Checker {
    edges: Vec<Target>,
    links: Vec<pb::Link>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Checker {
    /// Starts one load thread per edge and the version sampler.
    fn start(edges: Vec<Target>, links: Vec<pb::Link>) -> Checker {
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let targets: Arc<Vec<String>> = Arc::new(links.iter().map(target).collect());
        for (i, e) in edges.iter().enumerate() {
            let (port, record, stop, targets) = (e.port, record.clone(), stop.clone(), targets.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let link = n % targets.len();
                    n += 1;
                    let at = Instant::now();
                    let r = get(port, &targets[link], &[]);
                    let (status, reason) =
                        r.as_ref().map_or((0, None), |r| (r.status, r.header("x-stile-reason").map(str::to_owned)));
                    record.lock().unwrap().sent.push(Sent { edge: i, link, at, status, reason });
                    if status == 0 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }));
        }
        let (admins, record2, stop2) =
            (edges.iter().map(|e| e.admin).collect::<Vec<_>>(), record.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                for (edge, admin) in admins.iter().enumerate() {
                    if let Some(v) = metric(*admin, "stile_edge_state_version") {
                        let s = Sample { edge, at: Instant::now(), version: v as u64 };
                        record2.lock().unwrap().samples.push(s);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        Checker { edges, links, record, stop, threads, started: Instant::now() }
    }

    /// Revokes link `i` with `wait` and records the outcome.
    fn revoke(&self, ops: &Ops, i: usize) -> Result<pb::RevokeResponse, tonic::Status> {
        revoke_and_record(ops, &self.record, &self.links[i].token_id, Some(i))
    }

    /// Revokes any token id (not one of the load's links) with `wait`, and records the outcome.
    fn revoke_id(&self, ops: &Ops, token_id: &str) -> Result<pb::RevokeResponse, tonic::Status> {
        revoke_and_record(ops, &self.record, token_id, None)
    }

    /// A thread revoking `links` one after another (`pause` between them)
    /// through the control plane at `url`, retrying each until it is
    /// acknowledged, until done or the checker stops.
    fn revoker(&self, url: String, links: Vec<usize>, pause: Duration) -> JoinHandle<()> {
        let (record, stop) = (self.record.clone(), self.stop.clone());
        let ids: Vec<String> = links.iter().map(|&i| self.links[i].token_id.clone()).collect();
        std::thread::spawn(move || {
            let ops = Ops::new(&url);
            for (i, id) in links.into_iter().zip(ids) {
                while revoke_and_record(&ops, &record, &id, Some(i)).is_err() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(pause);
            }
        })
    }

    fn acked(&self) -> usize {
        self.record.lock().unwrap().acked.len()
    }

    /// Stops the load, waits until every edge has converged on the control
    /// plane's version, and asserts (a), (b) and (c). Returns the record.
    fn finish(mut self, ops: &Ops) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().expect("load thread");
        }
        let n = self.edges.len();
        let list = until(Duration::from_secs(20), "every edge connected at the current version", || {
            let l = ops.try_list().ok()?;
            (l.edges.len() == n && l.edges.iter().all(|e| e.applied_version == l.current_version)).then_some(l)
        });
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        let elapsed = self.started.elapsed();

        // Enough happened for the checks to mean something.
        assert!(!record.acked.is_empty(), "no revocation was acknowledged");
        for (i, e) in self.edges.iter().enumerate() {
            let answered = record.sent.iter().filter(|s| s.edge == i && s.status != 0).count();
            assert!(answered >= 20, "{}: only {answered} requests answered in {elapsed:?}", e.id);
        }

        // (a) Every acknowledged revocation is still known and enforced everywhere.
        let known: Vec<String> = ops
            .revocations()
            .into_iter()
            .filter_map(|r| match r.target?.target? {
                pb::revocation_target::Target::TokenId(id) => Some(id.to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        for a in &record.acked {
            assert!(list.current_version >= a.version, "version {} acknowledged, log at {list:?}", a.version);
            assert!(known.contains(&a.token_id.to_ascii_lowercase()), "acknowledged revocation lost: {a:?}");
            let Some(link) = a.link else { continue };
            for e in &self.edges {
                let r = get(e.port, &target(&self.links[link]), &[]).expect("edge answers");
                assert_eq!(
                    (r.status, r.header("x-stile-reason")),
                    (403, Some("revoked")),
                    "{}: acknowledged revocation of link {link} not enforced at the end",
                    e.id
                );
            }
        }

        // (b) No edge ever went back in version.
        for (i, e) in self.edges.iter().enumerate() {
            let mut last = 0;
            for s in record.samples.iter().filter(|s| s.edge == i) {
                assert!(s.version >= last, "{} went back from version {last} to {}", e.id, s.version);
                last = s.version;
            }
            assert!(last > 0, "{}: no version sampled", e.id);
        }

        // (c) Nothing admitted after the edge enforced the revocation covering it.
        for a in &record.acked {
            let Some(link) = a.link else { continue };
            for (i, e) in self.edges.iter().enumerate() {
                let by_ack = a.applied.contains(&e.id).then_some(a.returned);
                let by_version = record.samples.iter().find(|s| s.edge == i && s.version >= a.version).map(|s| s.at);
                let Some(enforced) = [by_ack, by_version].into_iter().flatten().min() else { continue };
                if let Some(s) =
                    record.sent.iter().find(|s| s.edge == i && s.link == link && s.at > enforced && s.status == 200)
                {
                    panic!(
                        "{}: link {link} admitted {:?} after the edge enforced its revocation (version {}): {s:?}",
                        e.id,
                        s.at - enforced,
                        a.version
                    );
                }
            }
        }
        let denied = record.sent.iter().filter(|s| s.reason.as_deref() == Some("revoked")).count();
        assert!(denied > 0, "the load never met a revoked link");
        eprintln!(
            "checker: {} requests ({denied} denied revoked), {} revocations acknowledged, {} Revoke calls failed, \
             {} version samples, {elapsed:?}",
            record.sent.len(),
            record.acked.len(),
            record.failed.len(),
            record.samples.len()
        );
        record
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn revoke_and_record(
    ops: &Ops,
    record: &Mutex<Record>,
    token_id: &str,
    link: Option<usize>,
) -> Result<pb::RevokeResponse, tonic::Status> {
    match ops.try_revoke(token_id, true, 3_000) {
        Ok(r) => {
            let applied = r.edges.iter().filter(|e| e.applied).map(|e| e.edge_id.clone()).collect();
            record.lock().unwrap().acked.push(Acked {
                token_id: token_id.to_owned(),
                link,
                version: r.version,
                returned: Instant::now(),
                applied,
            });
            Ok(r)
        }
        Err(status) => {
            record.lock().unwrap().failed.push((token_id.to_owned(), status.clone()));
            Err(status)
        }
    }
}

// ---------------------------------------------------------------- setup

/// Publishes the asset and mints the load's links.
fn links(ops: &Ops) -> Vec<pb::Link> {
    ops.publish();
    (0..LINKS).map(|_| ops.mint()).collect()
}

fn edges(origin: &Origin, n: usize, endpoints: &[String]) -> Vec<SyncEdge> {
    (1..=n).map(|i| SyncEdge::start(&format!("edge-{i}"), origin, endpoints, "")).collect()
}

fn targets(edges: &[SyncEdge]) -> Vec<Target> {
    edges.iter().map(Target::of).collect()
}

fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

// ---------------------------------------------------------------- scenarios

/// Two edges following the control plane at `url`, the checker's load, and
/// revocations of links 0..[`REVOKED`] (one every [`REVOKE_EVERY`], each
/// retried until acknowledged) while `fault` runs `rounds` times, 500 ms
/// apart; then the checker's assertions.
fn under_load(url: &str, origin: &Origin, rounds: usize, mut fault: impl FnMut(usize, &mut [SyncEdge])) -> Record {
    let ops = Ops::new(url);
    let links = links(&ops);
    let mut edges = edges(origin, 2, &[url.to_owned()]);
    ops.wait_converged(2);
    let checker = Checker::start(targets(&edges), links);
    let revoker = checker.revoker(url.to_owned(), (0..REVOKED).collect(), REVOKE_EVERY);
    for round in 0..rounds {
        pause(500);
        fault(round, &mut edges);
    }
    revoker.join().unwrap();
    pause(300);
    let record = checker.finish(&ops);
    assert_eq!(record.acked.len(), REVOKED, "{:?}", record.acked);
    record
}

#[test]
fn edge_sigkill_and_restart_under_load() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let control = Control::start(cp_dir.path());
    under_load(&control.url(), &origin, 3, |round, edges| {
        let e = &mut edges[round % 2];
        signal(e.child.id(), "KILL");
        let _ = e.child.wait();
        pause(100);
        e.restart();
        e.wait_ready();
    });
}

#[test]
fn control_plane_sigkill_and_restart_under_load() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let mut control = Control::start(cp_dir.path());
    under_load(&control.url(), &origin, 2, |_, _| {
        control.kill();
        pause(300);
        control.restart();
    });
}

#[test]
fn redis_sigkill_and_restart_under_a_redis_backed_control_plane() {
    let mut redis = RedisServer::start_with(Persistence::AofAlways);
    let (_content, origin) = content();
    let control = Control::start_redis(&redis.url());
    let record = under_load(&control.url(), &origin, 2, |_, _| {
        redis.kill();
        pause(400);
        redis.restart();
    });
    // While Redis was down Revoke failed (not acknowledged) rather than hanging or lying.
    for (_, status) in &record.failed {
        assert!(
            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Internal),
            "a failed Revoke says why: {status:?}"
        );
    }
    drop(control);
}

/// A TCP relay the test can cut: established connections are reset and new
/// ones closed at once while it is cut. Stops on drop.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, stop, conns) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::default());
        let (cut2, stop2, conns2): (_, _, Arc<Mutex<Vec<TcpStream>>>) = (cut.clone(), stop.clone(), Arc::clone(&conns));
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((down, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if cut2.load(Ordering::Relaxed) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                down.set_nonblocking(false).unwrap();
                let mut all = conns2.lock().unwrap();
                all.push(down.try_clone().unwrap());
                all.push(up.try_clone().unwrap());
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, stop, conns, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resets every relayed connection and refuses new ones until [`Relay::restore`].
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn sync_connection_cut_under_load() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let control = Control::start(cp_dir.path());
    let ops = control.ops();
    let links = links(&ops);
    let relay = Relay::start(control.port);
    // edge-1 reaches the control plane through the relay only; edge-2 directly.
    let cut = SyncEdge::start("edge-1", &origin, &[relay.url()], "");
    let direct = SyncEdge::start("edge-2", &origin, &[control.url()], "");
    ops.wait_converged(2);
    let checker = Checker::start(vec![Target::of(&cut), Target::of(&direct)], links.clone());
    checker.revoke(&ops, 0).expect("revoke before the cut");
    pause(200);

    relay.cut();
    until(Duration::from_secs(10), "edge-1 to lose its stream", || {
        (cut.metric("stile_edge_sync_connected") == Some(0.0)).then_some(())
    });
    // Cut off, it keeps serving with its last state; the other edge enforces new revocations.
    let during = checker.revoke(&ops, 1).expect("revoke while edge-1 is cut off");
    assert!(!during.edges.iter().any(|e| e.edge_id == "edge-1" && e.applied), "{during:?}");
    pause(500);
    let (last, revoked) = (cut.get(&target(&links[LINKS - 1])), cut.get(&target(&links[0])));
    assert_eq!(last.status, 200, "edge-1 keeps serving while cut off");
    assert_eq!((revoked.status, revoked.header("x-stile-reason")), (403, Some("revoked")), "with its last state");
    assert!(checker.acked() >= 2);

    relay.restore();
    // It converges: the revocation made during the cut reaches it.
    until(Duration::from_secs(10), "edge-1 to catch up", || {
        (cut.metric("stile_edge_state_version")? as u64 >= during.version).then_some(())
    });
    checker.revoke(&ops, 2).expect("revoke after the cut");
    pause(300);
    checker.finish(&ops);
}

/// The system clock moved by a settable offset (seconds).
#[derive(Debug, Default)]
struct JumpingClock(AtomicI64);

impl JumpingClock {
    fn jump_to(&self, offset_secs: i64) {
        self.0.store(offset_secs, Ordering::Relaxed);
    }
}

impl Clock for JumpingClock {
    fn now(&self) -> u64 {
        SystemClock.now().saturating_add_signed(self.0.load(Ordering::Relaxed))
    }

    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.0.load(Ordering::Relaxed).saturating_mul(1000))
    }
}

/// The edge library run in this process with an injected clock (the `stile
/// edge` binary always reads the system clock); stopped on drop.
struct InProcessEdge {
    target: Target,
    _files: EdgeFiles,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessEdge {
    fn start(id: &str, origin: &Origin, endpoints: &[String], clock: SharedClock) -> InProcessEdge {
        let files = EdgeFiles::write(id, origin, endpoints, "");
        let config = stile_edge::EdgeConfig::load(&files.config).expect("edge config");
        let edge = stile_edge::Edge::build(&config, stile_edge::StartOptions::default(), clock).expect("edge builds");
        let (stop, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || edge.run_until(rx));
        let target = Target { id: id.into(), port: files.port, admin: files.admin };
        until(Duration::from_secs(20), "the in-process edge ready", || {
            let ready = get(target.admin, "/readyz", &[]).is_some_and(|r| r.status == 200);
            (ready && TcpStream::connect(("127.0.0.1", target.port)).is_ok()).then_some(())
        });
        InProcessEdge { target, _files: files, stop: Some(stop), thread: Some(thread) }
    }

    fn get(&self, link: &pb::Link) -> (u16, Option<String>) {
        let r = get(self.target.port, &target(link), &[]).expect("edge answers");
        (r.status, r.header("x-stile-reason").map(str::to_owned))
    }
}

impl Drop for InProcessEdge {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

#[test]
fn edge_clock_jumps_forward_and_back_under_load() {
    const DAY: i64 = 86_400;
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let control = Control::start(cp_dir.path());
    let ops = control.ops();
    let links = links(&ops);
    let clock = Arc::new(JumpingClock::default());
    let edge = InProcessEdge::start("edge-clock", &origin, &[control.url()], clock.clone());
    ops.wait_converged(1);
    let checker = Checker::start(vec![edge.target.clone()], links.clone());
    let (early, during, back, valid) = (0, 1, 2, LINKS - 1);
    checker.revoke(&ops, early).expect("revoke");
    pause(200);

    // Forward to just inside a link's expiry plus the leeway (5 s): still valid;
    // just past it, and far past it: expired.
    let to = |at: u64| i64::try_from(at).unwrap() - i64::try_from(SystemClock.now()).unwrap();
    let exp = links[valid].expires_at;
    clock.jump_to(to(exp + 5 - 2));
    assert_eq!(edge.get(&links[valid]), (200, None), "valid within the leeway");
    clock.jump_to(to(exp + 5 + 2));
    assert_eq!(edge.get(&links[valid]), (403, Some("expired".into())), "expired past the leeway");
    clock.jump_to(3_600 + 60);
    assert_eq!(edge.get(&links[valid]), (403, Some("expired".into())), "expired after a forward jump");
    // Forward past the revocations' own expiry (issued + max TTL 24 h + margin),
    // and apply a change there: the edge may prune what its clock says is over.
    clock.jump_to(2 * DAY);
    checker.revoke(&ops, during).expect("revoke while the edge's clock is ahead");
    pause(300);

    // Back to the real time: the links are valid by their own expiry again,
    // so the revocations must still be there.
    clock.jump_to(0);
    pause(200);
    assert_eq!(edge.get(&links[valid]), (200, None), "a valid link passes again");
    for i in [early, during] {
        assert_eq!(edge.get(&links[i]), (403, Some("revoked".into())), "link {i}: revoked after the jump back");
    }

    // Backward, before the links were issued: nothing revoked passes, and a new revocation applies.
    clock.jump_to(-600);
    checker.revoke(&ops, back).expect("revoke while the edge's clock is behind");
    pause(300);
    for i in [early, during, back] {
        assert_eq!(edge.get(&links[i]).0, 403, "link {i} while the clock is behind");
    }
    clock.jump_to(0);
    pause(200);
    checker.finish(&ops);
}

#[test]
fn full_disk_under_the_embedded_store() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let mut control = Control::start(cp_dir.path());
    let ops = control.ops();
    let links = links(&ops);
    let edges = edges(&origin, 1, &[control.url()]);
    ops.wait_converged(1);
    let checker = Checker::start(targets(&edges), links);
    for i in 0..3 {
        checker.revoke(&ops, i).expect("revoke with space");
    }

    // Restart with the store file unable to grow: RLIMIT_FSIZE at its size, and
    // SIGXFSZ ignored (inherited through exec), so writes past it fail with EFBIG
    // like on a full disk. The client keeps its idle HTTP/2 connection open
    // (its runtime is not driven between calls): the graceful stop must not
    // wait for it forever.
    let stopping = Instant::now();
    control.stop();
    assert!(stopping.elapsed() < Duration::from_secs(9), "graceful stop took {:?}", stopping.elapsed());
    drop(ops);
    let redb = cp_dir.path().join("control.redb");
    let size = std::fs::metadata(&redb).unwrap().len();
    let limit = format!("--fsize={size}");
    control.restart_under(&["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh", "prlimit", &limit, "--"]);
    let ops = control.ops();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    let failure = loop {
        assert!(Instant::now() < deadline, "the store never filled up ({n} revocations, file {size} bytes)");
        n += 1;
        match checker.revoke_id(&ops, &format!("{:016x}", 0xf00d_0000_0000_0000 + n)) {
            Ok(_) => {}
            Err(status) => break status,
        }
    };
    eprintln!("full disk: {n} revocations until Revoke failed with {failure:?}");
    assert_eq!(failure.code(), tonic::Code::ResourceExhausted, "a clear failure, not a hang: {failure:?}");
    assert!(failure.message().contains("storage is full"), "{failure:?}");
    // The control plane's log names the cause.
    let log = control.log();
    let cause = log.lines().find(|l| l.contains("store.full")).unwrap_or_default().to_owned();
    eprintln!("full disk: the control plane logged {cause}");
    assert!(cause.contains("File too large"), "the log names the cause: {cause:?}");
    // Nothing is acknowledged while the disk is full.
    let again = checker.revoke(&ops, 3);
    assert!(again.is_err(), "acknowledged on a full disk: {again:?}");

    // With space again the store opens intact, with everything acknowledged.
    control.restart();
    checker.revoke(&ops, 4).expect("revoke once there is space");
    pause(300);
    let record = checker.finish(&ops);
    assert!(record.acked.len() as u64 >= 4, "{}", record.acked.len());
    drop(edges);
}
