//! Push-path trust (issue 23), real processes: a `stile control` and sync
//! clients written against the generated stubs (`stile_proto`), not the edge's
//! own code, that behave as someone holding an edge key might.
//!
//! - ACKs: one above what the control plane sent on the stream (or a NACK or
//!   status above it, or a second hello) ends the stream with
//!   `INVALID_ARGUMENT`, is counted, logged and audited with the edge's
//!   identity; duplicate, out-of-order and regressing ACKs are tolerated and
//!   never move the recorded version back.
//! - Identity: an edge key may only announce the edge ids it names; a
//!   mismatching hello is refused (`PERMISSION_DENIED`) and audited; the
//!   newest authenticated stream of an id wins, audited `SYNC_REPLACED`.
//! - `stile revoke --wait` with nobody listening exits 5 ("confirmed by 0
//!   edges"); an edge that left within the window is named "not confirmed";
//!   `--expect-edge` / `--min-edges` state the expectation (exit 4 when unmet).
//! - Denied calls: logged with address, method and key fingerprint (never the
//!   key), audited for writes, and a source backed off after repeated failures.

use std::process::{Command, Output};
use std::time::Duration;

use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_proto::v1::edge_message::Kind as Em;
use stile_tests::fleet::*;
use stile_tests::net::free_port;
use stile_tests::process::*;
use stile_tests::token::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// How long a scripted client waits for one message.
const WAIT: Duration = Duration::from_secs(10);

/// A sync client scripted message by message, on its own runtime (its
/// connection keeps running between calls). `edges_ls` scripts edges with it too.
pub(crate) struct Rogue {
    rt: tokio::runtime::Runtime,
    out: mpsc::Sender<pb::EdgeMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
}

impl Rogue {
    /// Opens `EdgeService.Sync` with `key` and says hello as `edge_id` at `last_applied`.
    pub(crate) fn connect(url: &str, key: &str, edge_id: &str, last_applied: u64) -> Rogue {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (out, rx) = mpsc::channel(64);
        let hello = pb::EdgeHello {
            edge_id: edge_id.into(),
            last_applied_version: last_applied,
            agent: "rogue".into(),
            chunked_snapshots: false,
        };
        out.try_send(pb::EdgeMessage { kind: Some(Em::Hello(hello)) }).unwrap();
        let inbound = rt.block_on(async {
            let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
            let mut client = pb::edge_service_client::EdgeServiceClient::new(channel);
            client.sync(request).await.expect("the stream opens").into_inner()
        });
        Rogue { rt, out, inbound }
    }

    pub(crate) fn send(&self, kind: Em) {
        self.out.try_send(pb::EdgeMessage { kind: Some(kind) }).expect("the outbound queue takes it");
    }

    pub(crate) fn ack(&self, version: u64) {
        self.send(Em::Ack(pb::Ack { version }));
    }

    /// The next message (heartbeats included), or how the stream ended.
    fn message(&mut self) -> Result<Option<Cm>, tonic::Status> {
        let inbound = &mut self.inbound;
        let msg = self.rt.block_on(async { tokio::time::timeout(WAIT, inbound.message()).await });
        match msg.expect("a message or the end of the stream in time") {
            Ok(Some(m)) => Ok(Some(m.kind.expect("a kind"))),
            Ok(None) => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// The next message that is not a heartbeat.
    pub(crate) fn next(&mut self) -> Cm {
        loop {
            match self.message() {
                Ok(Some(Cm::Heartbeat(_))) => {}
                Ok(Some(other)) => return other,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    pub(crate) fn snapshot(&mut self) -> pb::Snapshot {
        match self.next() {
            Cm::Snapshot(s) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Reads until a heartbeat: the stream is still open after what was sent before.
    pub(crate) fn heartbeat(&mut self) -> pb::Heartbeat {
        loop {
            match self.message() {
                Ok(Some(Cm::Heartbeat(h))) => return h,
                Ok(Some(_)) => {}
                other => panic!("expected the stream to stay open, got {other:?}"),
            }
        }
    }

    /// Reads until the control plane ends the stream; its status.
    fn ended(&mut self) -> tonic::Status {
        loop {
            match self.message() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    }
}

/// Asserts a status's code and that its message contains every needle.
#[track_caller]
fn assert_status(status: &tonic::Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for n in needles {
        assert!(status.message().contains(n), "{:?} should contain {n:?}", status.message());
    }
}

/// The connected edges' ids and applied versions, from `EdgeService.List`.
fn applied(ops: &Ops) -> Vec<(String, u64)> {
    ops.list().edges.into_iter().map(|e| (e.edge_id, e.applied_version)).collect()
}

#[test]
fn an_ack_above_what_was_sent_ends_the_stream_and_is_counted_logged_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path());
    let ops = control.ops();

    // The probe of issue 23: the snapshot is at v; the client ACKs v + 1000.
    let mut rogue = Rogue::connect(&control.url(), EDGE_KEY, "edge-1", 0);
    let v = rogue.snapshot().version;
    rogue.ack(v + 1000);
    let status = rogue.ended();
    assert_status(
        &status,
        Code::InvalidArgument,
        &[
            "sync protocol violation",
            &format!("ACK of version {}", v + 1000),
            &format!("newest version sent on this stream is {v}"),
        ],
    );
    until(WAIT, "the refused edge to leave the registry", || applied(&ops).is_empty().then_some(()));

    assert_eq!(control.metric(r#"stile_control_sync_refused_total{reason="ack_beyond_sent"}"#), Some(1.0));
    let log = control.log();
    let line = log.lines().find(|l| l.contains("sync.protocol_violation")).unwrap_or_else(|| panic!("{log}"));
    for field in ["edge-1", "edges", "ack_beyond_sent", "127.0.0.1"] {
        assert!(line.contains(field), "{field:?} missing in {line}");
    }
    let events = until(WAIT, "the SYNC_REFUSED audit event", || {
        Some(ops.audit(pb::AuditAction::SyncRefused)).filter(|e| !e.is_empty())
    });
    assert_eq!((events[0].actor.as_str(), events[0].target.as_str()), ("edges", "edge:edge-1"));
    assert!(events[0].detail.starts_with("ack_beyond_sent: ACK of version"), "{:?}", events[0]);
    assert!(events[0].detail.contains("from 127.0.0.1:"), "{:?}", events[0]);
}

#[test]
fn statuses_nacks_and_a_second_hello_beyond_the_protocol_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path());
    type Script = fn(&Rogue, u64);
    let cases: [(&str, Script, &str); 3] = [
        (
            "status_beyond_sent",
            |r, v| {
                let st = pb::EdgeStatus { heartbeat_seq: 1, clock_skew_ms: 0, applied_version: v + 1 };
                r.send(Em::Status(st));
            },
            "EdgeStatus.applied_version",
        ),
        (
            "nack_beyond_sent",
            |r, v| r.send(Em::Nack(pb::Nack { version: v + 1, error: "x".into() })),
            "NACK of version",
        ),
        (
            "second_hello",
            |r, _| r.send(Em::Hello(pb::EdgeHello { edge_id: "edge-1".into(), ..Default::default() })),
            "a second EdgeHello",
        ),
    ];
    for (kind, script, needle) in cases {
        let mut rogue = Rogue::connect(&control.url(), EDGE_KEY, "edge-1", 0);
        let v = rogue.snapshot().version;
        script(&rogue, v);
        assert_status(&rogue.ended(), Code::InvalidArgument, &["sync protocol violation", needle]);
        let metric = format!(r#"stile_control_sync_refused_total{{reason="{kind}"}}"#);
        assert_eq!(control.metric(&metric), Some(1.0), "{kind}");
    }
}

#[test]
fn duplicate_out_of_order_and_regressing_acks_are_tolerated_and_never_move_the_version_back() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path());
    let ops = control.ops();
    ops.publish();
    let mut rogue = Rogue::connect(&control.url(), EDGE_KEY, "edge-1", 0);
    let v = rogue.snapshot().version;
    rogue.ack(v);
    until(WAIT, "the ACK of the snapshot", || (applied(&ops) == [("edge-1".into(), v)]).then_some(()));

    // Two revocations: deltas v+1 and v+2. ACK v+2 first (it covers v+1), then v+1.
    let link = ops.mint();
    let w = ops.revoke(&link.token_id, false).version;
    let w2 = ops.revoke(&ops.mint().token_id, false).version;
    assert_eq!((w, w2), (v + 1, v + 2));
    for want in [w, w2] {
        match rogue.next() {
            Cm::Delta(d) => assert_eq!(d.change.unwrap().version, want),
            other => panic!("expected delta {want}, got {other:?}"),
        }
    }
    rogue.ack(w2);
    rogue.ack(w); // out of order
    rogue.ack(w2); // duplicate
    rogue.ack(v); // regressing
    rogue.ack(0);
    let st = pb::EdgeStatus { heartbeat_seq: 0, clock_skew_ms: 0, applied_version: v };
    rogue.send(Em::Status(st)); // a regressing status
    // Still open, and the record stays at w2.
    rogue.heartbeat();
    rogue.heartbeat();
    assert_eq!(applied(&ops), [("edge-1".into(), w2)]);
    assert_eq!(control.metric(r#"stile_control_sync_acks_ignored_total{kind="regressing"}"#), Some(4.0));
    assert_eq!(control.metric(r#"stile_control_sync_refused_total{reason="ack_beyond_sent"}"#), Some(0.0));

    // The ACK of one version past what was sent is still refused.
    rogue.ack(w2 + 1);
    assert_status(&rogue.ended(), Code::InvalidArgument, &[&format!("ACK of version {}", w2 + 1)]);
}

/// A key bound to `edge-eu-*`.
const EU_KEY: &str = "stk_push-trust-eu-edges";

fn eu_key_toml() -> String {
    format!(
        "[[auth.keys]]\nname = \"eu\"\nrole = \"edge\"\nsha256 = \"{}\"\nedge_ids = [\"edge-eu-*\"]\n",
        hex(&stile_control::auth::hash_api_key(EU_KEY))
    )
}

/// Reads until the stream ends, cleanly or with a status (heartbeats and the rest skipped).
fn drain(rogue: &mut Rogue) -> Result<(), tonic::Status> {
    loop {
        match rogue.message() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(()),
            Err(status) => return Err(status),
        }
    }
}

#[test]
fn an_edge_key_syncs_only_as_its_edge_ids_and_the_newest_stream_of_an_id_wins() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::launch_with(dir.path(), free_port(), &Store::Redb, &eu_key_toml());
    let ops = control.ops();

    // A key for the EU edges announcing a US edge's id.
    let mut rogue = Rogue::connect(&control.url(), EU_KEY, "edge-us-1", 0);
    let status = rogue.ended();
    assert_status(&status, Code::PermissionDenied, &["API key \"eu\" may not sync as edge \"edge-us-1\"", "edge-eu-*"]);
    assert_eq!(control.metric(r#"stile_control_sync_refused_total{reason="edge_id_not_allowed"}"#), Some(1.0));
    let events = until(WAIT, "the SYNC_REFUSED audit event", || {
        Some(ops.audit(pb::AuditAction::SyncRefused)).filter(|e| !e.is_empty())
    });
    assert_eq!((events[0].actor.as_str(), events[0].target.as_str()), ("eu", "edge:edge-us-1"));
    assert!(events[0].detail.starts_with("edge_id_not_allowed: key \"eu\" may use edge-eu-*"), "{:?}", events[0]);
    assert!(applied(&ops).is_empty(), "the refused stream never joined the fleet");

    // Its own id: accepted. A second stream of the same id replaces the first.
    let mut first = Rogue::connect(&control.url(), EU_KEY, "edge-eu-1", 0);
    let v = first.snapshot().version;
    first.ack(v);
    until(WAIT, "edge-eu-1 in the fleet", || (applied(&ops) == [("edge-eu-1".into(), v)]).then_some(()));
    let mut second = Rogue::connect(&control.url(), EU_KEY, "edge-eu-1", 0);
    assert_eq!(second.snapshot().version, v);
    assert_eq!(drain(&mut first).map_err(|s| s.code()), Ok(()), "the older stream is ended, cleanly");
    second.heartbeat();
    let events = until(WAIT, "the SYNC_REPLACED audit event", || {
        Some(ops.audit(pb::AuditAction::SyncReplaced)).filter(|e| !e.is_empty())
    });
    assert_eq!((events[0].actor.as_str(), events[0].target.as_str()), ("eu", "edge:edge-eu-1"));
    assert!(events[0].detail.contains("replaced the one from 127.0.0.1:"), "{:?}", events[0]);
    assert_eq!(ops.list().edges.len(), 1, "one entry for the id");
}

/// Runs the `stile` client against `control` with the admin key.
fn stile(control: &Control, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stile"))
        .args(args)
        .env("STILE_SERVER", control.url())
        .env("STILE_API_KEY", ADMIN)
        .env_remove("STILE_OUTPUT")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn revoke_wait_with_nobody_listening_or_an_edge_gone_is_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(dir.path());
    let ops = control.ops();
    ops.publish();

    // Nobody connected, nobody seen: its own exit status and wording.
    let link = ops.mint();
    let out =
        stile(&control, &["revoke", "--token-id", &link.token_id, "--reason", "t", "--wait", "--deadline", "300ms"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("confirmed by 0 edges: none connected or seen in the last 900 s"), "{}", text(&out));
    // Unless the operator says 0 will do.
    let link = ops.mint();
    let out = stile(&control, &["revoke", "--token-id", &link.token_id, "--reason", "t", "--wait", "--min-edges", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("confirmed by 0 edges, as --min-edges 0 allows"), "{}", text(&out));

    // edge-a applies the snapshot and leaves: it is still expected, and named.
    let mut gone = Rogue::connect(&control.url(), EDGE_KEY, "edge-a", 0);
    let v = gone.snapshot().version;
    gone.ack(v);
    until(WAIT, "edge-a's ACK", || (applied(&ops) == [("edge-a".into(), v)]).then_some(()));
    drop(gone);
    until(WAIT, "edge-a to disconnect", || applied(&ops).is_empty().then_some(()));
    let link = ops.mint();
    let r = ops.try_revoke(&link.token_id, true, 300).unwrap();
    let c = r.confirmation.clone().unwrap();
    assert_eq!(c.verdict(), pb::ConfirmationVerdict::None, "{c:?}");
    assert_eq!(r.lagging, ["edge-a"]);
    assert_eq!((c.edges[0].connected, c.edges[0].expected, c.edges[0].applied), (false, true, false));
    assert_eq!(c.summary, "confirmed by 0 of 1 expected edges; not confirmed: edge-a");

    // edge-b connected and ACKing: partial (exit 4) while edge-a is remembered.
    let mut live = Rogue::connect(&control.url(), EDGE_KEY, "edge-b", 0);
    let v = live.snapshot().version;
    live.ack(v);
    until(WAIT, "edge-b's ACK", || applied(&ops).iter().any(|(id, a)| id == "edge-b" && *a == v).then_some(()));
    let revoke_with = |extra: &[&str], live: &mut Rogue| {
        let token = ops.mint().token_id;
        let mut args = vec!["revoke", "--token-id", &token, "--reason", "t", "--wait", "--deadline", "2s"];
        args.extend_from_slice(extra);
        let child = Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(&args)
            .env("STILE_SERVER", control.url())
            .env("STILE_API_KEY", ADMIN)
            .env_remove("STILE_OUTPUT")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        match live.next() {
            Cm::Delta(d) => live.ack(d.change.unwrap().version),
            other => panic!("expected the revocation's delta, got {other:?}"),
        }
        child.wait_with_output().unwrap()
    };
    let out = revoke_with(&[], &mut live);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("confirmed by 1 of 2 expected edges; not confirmed: edge-a"), "{t}");
    assert!(t.contains("not confirmed: edge-a (disconnected, last seen"), "{t}");
    // The operator names the edge set: edge-b alone is expected, and confirms.
    let out = revoke_with(&["--expect-edge", "edge-b"], &mut live);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("confirmed by all 1 expected edges"), "{}", text(&out));
    // ... but at least two were required.
    let out = revoke_with(&["--expect-edge", "edge-b", "--min-edges", "2"], &mut live);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("confirmed by 1 of 1 expected edges; fewer than the 2 required"), "{}", text(&out));
}

#[test]
fn denied_calls_are_logged_audited_and_a_failing_source_is_backed_off() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[auth]\nmax_failures = 4\nfailure_window_secs = 60\nbackoff_secs = 60\n";
    let control = Control::launch_with(dir.path(), free_port(), &Store::Redb, extra);
    let ops = control.ops();
    let wrong = "stk_not-a-key-anyone-knows";
    let revoke = |key: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_stile"))
            .args(["revoke", "--token-id", "0123456789abcdef", "--reason", "t"])
            .env("STILE_SERVER", control.url())
            .env("STILE_API_KEY", key)
            .output()
            .unwrap();
        (out.status.code(), text(&out))
    };
    // Three denied writes with an unknown key: exit 3, each logged and audited.
    for _ in 0..3 {
        let (code, t) = revoke(wrong);
        assert_eq!(code, Some(3), "{t}");
        assert!(t.contains("unknown or deleted API key"), "{t}");
    }
    let fingerprint = stile_control::auth::fingerprint(&stile_control::auth::hash_api_key(wrong));
    let log = control.log();
    let denied: Vec<&str> = log.lines().filter(|l| l.contains("auth.denied")).collect();
    assert_eq!(denied.len(), 3, "{log}");
    for line in &denied {
        for field in ["127.0.0.1:", "RevocationService.Revoke", &format!("unknown:{fingerprint}"), "unknown"] {
            assert!(line.contains(field), "{field:?} missing in {line}");
        }
    }
    assert!(!log.contains(wrong), "the key itself is never logged");
    let events = until(WAIT, "three AUTH_DENIED events", || {
        Some(ops.audit(pb::AuditAction::AuthDenied)).filter(|e| e.len() == 3)
    });
    assert_eq!(events[0].actor, format!("unknown:{fingerprint}"));
    assert_eq!(events[0].target, "rpc:RevocationService.Revoke");
    assert!(events[0].detail.starts_with("RevocationService.Revoke: unknown key, from 127.0.0.1:"), "{:?}", events[0]);
    assert_eq!(control.metric(r#"stile_control_auth_denied_total{reason="unknown"}"#), Some(3.0));

    // The fourth failure backs the source off: even the right key is refused now.
    let (code, _) = revoke(wrong);
    assert_eq!(code, Some(3));
    let (code, t) = revoke(ADMIN);
    assert_eq!(code, Some(1), "{t}");
    assert!(t.contains("too many failed authentications from this address; retry in"), "{t}");
    assert_eq!(control.metric(r#"stile_control_auth_denied_total{reason="backoff"}"#), Some(1.0));
    assert!(control.log().contains("auth.backoff_started"));
}
