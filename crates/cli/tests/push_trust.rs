//! Push-path trust (issue 23), real processes: a `stile control` and sync
//! clients written against the generated stubs (`stile_proto`), not the edge's
//! own code, that behave as someone holding an edge key might.
//!
//! - ACKs: one above what the control plane sent on the stream (or a NACK or
//!   status above it, or a second hello) ends the stream with
//!   `INVALID_ARGUMENT`, is counted, logged and audited with the edge's
//!   identity; duplicate, out-of-order and regressing ACKs are tolerated and
//!   never move the recorded version back.

mod support;
mod sync_support;

use std::time::Duration;

use stile_proto::v1 as pb;
use stile_proto::v1::control_message::Kind as Cm;
use stile_proto::v1::edge_message::Kind as Em;
use sync_support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// How long a scripted client waits for one message.
const WAIT: Duration = Duration::from_secs(10);

/// A sync client scripted message by message, on its own runtime (its
/// connection keeps running between calls).
struct Rogue {
    rt: tokio::runtime::Runtime,
    out: mpsc::Sender<pb::EdgeMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
}

impl Rogue {
    /// Opens `EdgeService.Sync` with `key` and says hello as `edge_id` at `last_applied`.
    fn connect(url: &str, key: &str, edge_id: &str, last_applied: u64) -> Rogue {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (out, rx) = mpsc::channel(64);
        let hello = pb::EdgeHello { edge_id: edge_id.into(), last_applied_version: last_applied, agent: "rogue".into() };
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

    fn send(&self, kind: Em) {
        self.out.try_send(pb::EdgeMessage { kind: Some(kind) }).expect("the outbound queue takes it");
    }

    fn ack(&self, version: u64) {
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
    fn next(&mut self) -> Cm {
        loop {
            match self.message() {
                Ok(Some(Cm::Heartbeat(_))) => {}
                Ok(Some(other)) => return other,
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    fn snapshot(&mut self) -> pb::Snapshot {
        match self.next() {
            Cm::Snapshot(s) => s,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// Reads until a heartbeat: the stream is still open after what was sent before.
    fn heartbeat(&mut self) -> pb::Heartbeat {
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
        ("nack_beyond_sent", |r, v| r.send(Em::Nack(pb::Nack { version: v + 1, error: "x".into() })), "NACK of version"),
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
