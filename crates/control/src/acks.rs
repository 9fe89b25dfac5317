//! The control plane's bookkeeping of one sync stream: what it offered the
//! edge and what the edge's ACKs, NACKs and statuses may be believed to say.
//! Pure — no I/O, clock, tasks or locks — so the session (`sync.rs`) and the
//! fuzz target (`fuzz/fuzz_targets/sync_acks.rs`) run the same code.
//!
//! **An ACK is believed only up to what was sent on that stream.** The book
//! starts at the version the edge resumes from (its hello's
//! `last_applied_version`, believed only when it is not above the log head:
//! an edge ahead of the log holds another history and starts at 0), and moves
//! its `sent` mark *before* each delta or snapshot is handed to the stream, so
//! an ACK can never overtake the bookkeeping of what it answers. Then, for a
//! version `v` in an ACK (or an `EdgeStatus.applied_version`):
//!
//! | `v` | verdict | effect |
//! |---|---|---|
//! | above every version ever offered on the stream | [`Violation`] | the stream is ended (`INVALID_ARGUMENT`), logged, counted, audited |
//! | above the current history's `sent`, within what was offered before a reset | [`AckVerdict::Stale`] | ignored |
//! | below the version already recorded (out of order, regressing) | [`AckVerdict::Regressing`] | ignored: the record never moves back |
//! | equal to it | [`AckVerdict::Duplicate`] | nothing (statuses repeat it every heartbeat) |
//! | above it, up to `sent` | [`AckVerdict::Advanced`] | recorded: every version up to `v` is enforced |
//!
//! A NACK of a version above everything offered is a [`Violation`] too; any
//! other NACK — duplicate, old, for a version already ACKed — is tolerated and
//! answered with a snapshot (rate-limited by the session), and never changes
//! the recorded version. A second `EdgeHello` is a [`Violation`].
//!
//! A `reset` snapshot (the log is behind the edge: a store restored from an
//! older backup) starts a new history: `sent` becomes its version and the
//! recorded version 0 until the edge ACKs it. Versions the stream offered
//! before the reset are then [`AckVerdict::Stale`], not violations, so an
//! answer already on its way when the reset went out does not end the stream.
//!
//! Invariants (checked by the fuzz target): the recorded version never
//! exceeds the current `sent`, nor anything ever offered; it only decreases
//! through a reset; a verdict of `Advanced { to }` is exactly a move of the
//! recorded version to `to`; every ACK, status or NACK above everything
//! offered is refused, and nothing else is.

use stile_proto::v1 as pb;
use stile_proto::v1::edge_message::Kind;

/// The bookkeeping of one stream. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckBook {
    /// Newest version offered in the current history (since the last reset).
    sent: u64,
    /// Newest version ever offered on the stream, the hello's baseline included.
    high: u64,
    /// Newest version believed applied in the current history.
    acked: u64,
}

/// What one message from the edge means, once judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// An `Ack`.
    Ack(AckVerdict),
    /// A `Nack` of a version the stream offered: answer with a snapshot.
    Nack {
        /// The version the edge could not apply.
        version: u64,
        /// Its error, for operators.
        error: String,
    },
    /// An `EdgeStatus` (heartbeat answer); its applied version judged as an ACK.
    Status {
        /// The heartbeat it answers.
        heartbeat_seq: u64,
        /// The edge's clock minus ours, milliseconds.
        clock_skew_ms: i64,
        /// Its `applied_version`, judged.
        applied: AckVerdict,
    },
    /// A message without a kind (a newer edge's message this build does not know).
    Empty,
}

/// The judgement of an acknowledged version that is not a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckVerdict {
    /// Believed: every version up to `to` is enforced; the record moved from `from`.
    Advanced {
        /// The version recorded before.
        from: u64,
        /// The version recorded now.
        to: u64,
    },
    /// The version already recorded.
    Duplicate,
    /// Below the recorded version (out of order or regressing): ignored.
    Regressing {
        /// The version acknowledged.
        version: u64,
        /// The version recorded, which stays.
        acked: u64,
    },
    /// Above the current history's `sent`, offered before a reset: ignored.
    Stale {
        /// The version acknowledged.
        version: u64,
        /// The current history's newest version sent.
        sent: u64,
    },
}

impl AckVerdict {
    /// The metric label of a version that was ignored; `None` when believed or a duplicate.
    pub fn ignored(self) -> Option<&'static str> {
        match self {
            AckVerdict::Advanced { .. } | AckVerdict::Duplicate => None,
            AckVerdict::Regressing { .. } => Some("regressing"),
            AckVerdict::Stale { .. } => Some("stale"),
        }
    }
}

/// A message the control plane refuses: the stream ends with `INVALID_ARGUMENT`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// An `Ack` above every version offered on the stream.
    #[error("ACK of version {version}, but the newest version sent on this stream is {sent}")]
    AckBeyondSent {
        /// The version acknowledged.
        version: u64,
        /// The newest version ever offered on the stream.
        sent: u64,
    },
    /// An `EdgeStatus.applied_version` above every version offered.
    #[error("EdgeStatus.applied_version {version}, but the newest version sent on this stream is {sent}")]
    StatusBeyondSent {
        /// The version claimed.
        version: u64,
        /// The newest version ever offered on the stream.
        sent: u64,
    },
    /// A `Nack` of a version never offered on the stream.
    #[error("NACK of version {version}, but the newest version sent on this stream is {sent}")]
    NackBeyondSent {
        /// The version refused.
        version: u64,
        /// The newest version ever offered on the stream.
        sent: u64,
    },
    /// An `EdgeHello` after the first message.
    #[error("a second EdgeHello on the stream")]
    SecondHello,
}

impl Violation {
    /// Stable name: the metric label and the audit detail's first word.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::AckBeyondSent { .. } => "ack_beyond_sent",
            Violation::StatusBeyondSent { .. } => "status_beyond_sent",
            Violation::NackBeyondSent { .. } => "nack_beyond_sent",
            Violation::SecondHello => "second_hello",
        }
    }

    /// Every kind, for pre-registered metric labels.
    pub const KINDS: [&'static str; 4] = ["ack_beyond_sent", "status_beyond_sent", "nack_beyond_sent", "second_hello"];
}

impl AckBook {
    /// The book of a stream whose edge said hello with `hello_version` while
    /// the log's head was `head`: the edge resumes from its version when the
    /// log has it, else (ahead of the log) from nothing.
    pub fn start(hello_version: u64, head: u64) -> AckBook {
        let base = if hello_version <= head { hello_version } else { 0 };
        AckBook { sent: base, high: base, acked: base }
    }

    /// The version believed applied: what the fleet registry shows.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The newest version offered in the current history.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The newest version ever offered on the stream.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// A delta of `version` is about to be handed to the stream.
    pub fn offer_delta(&mut self, version: u64) {
        self.sent = self.sent.max(version);
        self.high = self.high.max(version);
    }

    /// A snapshot of `version` is about to be handed to the stream; with
    /// `reset` it starts a new history (the recorded version drops to 0).
    pub fn offer_snapshot(&mut self, version: u64, reset: bool) {
        if reset {
            self.sent = version;
            self.acked = 0;
        } else {
            self.sent = self.sent.max(version);
        }
        self.high = self.high.max(version);
    }

    /// Judges one message from the edge (after its hello) and records what is believed.
    pub fn receive(&mut self, msg: &pb::EdgeMessage) -> Result<Received, Violation> {
        match &msg.kind {
            Some(Kind::Ack(a)) => self.ack(a.version).map(Received::Ack),
            Some(Kind::Nack(n)) => {
                self.nack(n.version)?;
                Ok(Received::Nack { version: n.version, error: n.error.clone() })
            }
            Some(Kind::Status(s)) => {
                let applied = self
                    .judge(s.applied_version)
                    .map_err(|sent| Violation::StatusBeyondSent { version: s.applied_version, sent })?;
                Ok(Received::Status { heartbeat_seq: s.heartbeat_seq, clock_skew_ms: s.clock_skew_ms, applied })
            }
            Some(Kind::Hello(_)) => Err(Violation::SecondHello),
            None => Ok(Received::Empty),
        }
    }

    /// Judges an ACK of `version`.
    pub fn ack(&mut self, version: u64) -> Result<AckVerdict, Violation> {
        self.judge(version).map_err(|sent| Violation::AckBeyondSent { version, sent })
    }

    /// Judges a NACK of `version`: tolerated unless never offered; never moves the record.
    pub fn nack(&self, version: u64) -> Result<(), Violation> {
        if version > self.high {
            return Err(Violation::NackBeyondSent { version, sent: self.high });
        }
        Ok(())
    }

    /// The table of the module documentation; `Err(high)` for a violation.
    fn judge(&mut self, version: u64) -> Result<AckVerdict, u64> {
        if version > self.high {
            return Err(self.high);
        }
        if version > self.sent {
            return Ok(AckVerdict::Stale { version, sent: self.sent });
        }
        if version < self.acked {
            return Ok(AckVerdict::Regressing { version, acked: self.acked });
        }
        if version == self.acked {
            return Ok(AckVerdict::Duplicate);
        }
        let from = self.acked;
        self.acked = version;
        Ok(AckVerdict::Advanced { from, to: version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(v: u64) -> pb::EdgeMessage {
        pb::EdgeMessage { kind: Some(Kind::Ack(pb::Ack { version: v })) }
    }

    #[test]
    fn an_ack_is_believed_only_up_to_what_was_sent() {
        // The probe of issue 23: snapshot at 2, ACK of 1002.
        let mut b = AckBook::start(0, 2);
        b.offer_snapshot(2, false);
        assert_eq!(b.receive(&ack(1002)), Err(Violation::AckBeyondSent { version: 1002, sent: 2 }));
        assert_eq!(b.acked(), 0, "a refused ACK records nothing");
        assert_eq!(b.ack(2), Ok(AckVerdict::Advanced { from: 0, to: 2 }));
        assert_eq!(b.ack(2), Ok(AckVerdict::Duplicate));
        b.offer_delta(3);
        b.offer_delta(4);
        assert_eq!(b.ack(4), Ok(AckVerdict::Advanced { from: 2, to: 4 }), "an ACK covers every version up to it");
        assert_eq!(b.ack(3), Ok(AckVerdict::Regressing { version: 3, acked: 4 }));
        assert_eq!(b.acked(), 4, "never backwards");
        assert_eq!(b.ack(5), Err(Violation::AckBeyondSent { version: 5, sent: 4 }));
    }

    #[test]
    fn the_hello_is_believed_up_to_the_log_head() {
        let b = AckBook::start(7, 10);
        assert_eq!((b.acked(), b.sent(), b.high()), (7, 7, 7));
        let mut ahead = AckBook::start(1002, 2);
        assert_eq!(ahead.acked(), 0, "an edge ahead of the log confirms nothing");
        assert_eq!(ahead.ack(1002), Err(Violation::AckBeyondSent { version: 1002, sent: 0 }));
        ahead.offer_snapshot(2, true);
        assert_eq!(ahead.ack(2), Ok(AckVerdict::Advanced { from: 0, to: 2 }));
    }

    #[test]
    fn a_reset_starts_a_new_history_and_older_answers_are_stale() {
        let mut b = AckBook::start(0, 9);
        b.offer_snapshot(9, false);
        assert!(b.ack(9).is_ok());
        b.offer_snapshot(4, true);
        assert_eq!(b.acked(), 0);
        let status = pb::EdgeMessage {
            kind: Some(Kind::Status(pb::EdgeStatus { heartbeat_seq: 3, clock_skew_ms: -5, applied_version: 9 })),
        };
        assert_eq!(
            b.receive(&status),
            Ok(Received::Status {
                heartbeat_seq: 3,
                clock_skew_ms: -5,
                applied: AckVerdict::Stale { version: 9, sent: 4 }
            })
        );
        assert_eq!(b.ack(4), Ok(AckVerdict::Advanced { from: 0, to: 4 }));
        assert_eq!(b.ack(10), Err(Violation::AckBeyondSent { version: 10, sent: 9 }));
    }

    #[test]
    fn nacks_are_tolerated_within_what_was_offered() {
        let mut b = AckBook::start(3, 3);
        let nack = |v| pb::EdgeMessage { kind: Some(Kind::Nack(pb::Nack { version: v, error: "gap".into() })) };
        assert_eq!(b.receive(&nack(1)), Ok(Received::Nack { version: 1, error: "gap".into() }));
        assert_eq!(b.receive(&nack(4)), Err(Violation::NackBeyondSent { version: 4, sent: 3 }));
        let hello = pb::EdgeMessage { kind: Some(Kind::Hello(pb::EdgeHello::default())) };
        assert_eq!(b.receive(&hello), Err(Violation::SecondHello));
        assert_eq!(b.receive(&pb::EdgeMessage { kind: None }), Ok(Received::Empty));
        assert_eq!(b.acked(), 3);
    }
}
