//! The control plane's side of the sync stream: what a session offered and
//! what the edge's ACKs, NACKs, statuses and hellos may be believed to say,
//! judged by `stile_control::acks::AckBook` (the code `sync.rs` runs).
//!
//! Input: 2 bytes pick the hello's version and the log head (near each other,
//! so edges behind, level and ahead of the log are all reached); then a
//! sequence of 2-byte operations. The first byte of each picks what happens:
//! a delta or a snapshot offered (with or without `reset`), or an `Ack`,
//! `Nack`, `EdgeStatus`, second `EdgeHello` or kind-less message received;
//! the second picks the version relative to the book (the recorded version,
//! the current `sent`, the highest ever offered, one above it, far above it,
//! below the recorded one, zero, `u64::MAX`), so out-of-order, duplicate,
//! regressing, stale (pre-reset) and future ACKs and NACKs are all reached.
//! Received messages go through protobuf encoding and decoding first, as on
//! the wire.
//!
//! Invariants: nothing panics; the recorded version never exceeds the current
//! `sent` nor anything offered; it goes down only through a `reset` snapshot;
//! every verdict is the one the table in `acks.rs` gives (checked against an
//! independent model of it): an ACK, status or NACK above everything offered
//! and a second hello are refused, nothing else is; a believed ACK moves the
//! record exactly to its version; a refused or tolerated message moves nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use stile_control::acks::{AckBook, AckVerdict, Received, Violation};
use stile_proto::v1 as pb;
use stile_proto::v1::edge_message::Kind;

/// The model of the verdict table, independent of `AckBook::judge`.
fn expected(book: &AckBook, v: u64) -> Result<AckVerdict, u64> {
    if v > book.high() {
        Err(book.high())
    } else if v > book.sent() {
        Ok(AckVerdict::Stale { version: v, sent: book.sent() })
    } else if v < book.acked() {
        Ok(AckVerdict::Regressing { version: v, acked: book.acked() })
    } else if v == book.acked() {
        Ok(AckVerdict::Duplicate)
    } else {
        Ok(AckVerdict::Advanced { from: book.acked(), to: v })
    }
}

fn version(book: &AckBook, pick: u8) -> u64 {
    let small = u64::from(pick >> 3);
    match pick & 7 {
        0 => book.acked(),
        1 => book.sent(),
        2 => book.high(),
        3 => book.high().saturating_add(1 + small),
        4 => book.high().saturating_add(1000),
        5 => book.acked().saturating_sub(1 + small),
        6 => small,
        _ => u64::MAX,
    }
}

/// Encodes and decodes a message, as the wire does.
fn wire(kind: Option<Kind>) -> pb::EdgeMessage {
    let bytes = pb::EdgeMessage { kind }.encode_to_vec();
    pb::EdgeMessage::decode(bytes.as_slice()).expect("a message we encoded decodes")
}

fn check(book: &AckBook) {
    assert!(book.acked() <= book.sent(), "recorded {} above sent {}", book.acked(), book.sent());
    assert!(book.sent() <= book.high(), "sent {} above everything offered {}", book.sent(), book.high());
}

fuzz_target!(|data: &[u8]| {
    let Some((&[hello, head], ops)) = data.split_first_chunk::<2>() else { return };
    let (hello, head) = (u64::from(hello), u64::from(head));
    let mut book = AckBook::start(hello, head);
    assert_eq!(book.acked(), if hello <= head { hello } else { 0 });
    check(&book);
    for op in ops.chunks_exact(2) {
        let before = book.clone();
        let v = version(&book, op[1]);
        match op[0] % 8 {
            0 => book.offer_delta(book.sent().saturating_add(1 + u64::from(op[1] & 3))),
            1 => book.offer_snapshot(v, false),
            2 => {
                book.offer_snapshot(v, true);
                assert_eq!((book.acked(), book.sent()), (0, v), "a reset starts a new history at its version");
            }
            3 => {
                let got = book.receive(&wire(Some(Kind::Ack(pb::Ack { version: v }))));
                let want = expected(&before, v)
                    .map(Received::Ack)
                    .map_err(|sent| Violation::AckBeyondSent { version: v, sent });
                assert_eq!(got, want, "ACK {v} on {before:?}");
            }
            4 => {
                let nack = pb::Nack { version: v, error: "e".into() };
                let got = book.receive(&wire(Some(Kind::Nack(nack))));
                if v > before.high() {
                    assert_eq!(got, Err(Violation::NackBeyondSent { version: v, sent: before.high() }));
                } else {
                    assert_eq!(got, Ok(Received::Nack { version: v, error: "e".into() }));
                }
                assert_eq!(book, before, "a NACK never moves the book");
            }
            5 => {
                let status = pb::EdgeStatus { heartbeat_seq: 7, clock_skew_ms: -3, applied_version: v };
                let got = book.receive(&wire(Some(Kind::Status(status))));
                let want = expected(&before, v)
                    .map(|applied| Received::Status { heartbeat_seq: 7, clock_skew_ms: -3, applied })
                    .map_err(|sent| Violation::StatusBeyondSent { version: v, sent });
                assert_eq!(got, want, "status {v} on {before:?}");
            }
            6 => {
                let hello = pb::EdgeHello {
                    edge_id: "e".into(),
                    last_applied_version: v,
                    agent: String::new(),
                    chunked_snapshots: false,
                };
                assert_eq!(book.receive(&wire(Some(Kind::Hello(hello)))), Err(Violation::SecondHello));
                assert_eq!(book, before);
            }
            _ => {
                assert_eq!(book.receive(&wire(None)), Ok(Received::Empty));
                assert_eq!(book, before);
            }
        }
        check(&book);
        assert!(book.high() >= before.high(), "what was offered is never forgotten");
        let reset = op[0] % 8 == 2;
        if !reset {
            assert!(book.acked() >= before.acked(), "the record went back: {before:?} -> {book:?}");
            assert!(book.sent() >= before.sent(), "sent went back without a reset");
        }
        if book.acked() != before.acked() && !reset {
            // Only a believed ACK or status moves the record, and only to a version offered.
            assert!(matches!(op[0] % 8, 3 | 5), "{before:?} -> {book:?} by op {}", op[0] % 8);
            assert!(book.acked() <= before.sent());
        }
    }
    // Whatever the history, an ACK above everything offered is refused and changes nothing.
    let beyond = book.high().saturating_add(1);
    if beyond > book.high() {
        let before = book.clone();
        assert!(matches!(book.ack(beyond), Err(Violation::AckBeyondSent { .. })));
        assert_eq!(book, before);
    }
    for kind in Violation::KINDS {
        assert!(!kind.is_empty());
    }
});
