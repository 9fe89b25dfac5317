//! The edge's Prometheus metrics, all named `stile_edge_<name>_<unit>[_total]`,
//! registered in the edge's own registry and served by the admin listener.
//!
//! Label values come from small fixed sets: reason codes, transports, object
//! kinds, status classes. The `channel` label carries a token's share channel only once its MAC
//! verified (forged tokens cannot mint label values), and at most
//! [`MAX_CHANNEL_LABELS`] distinct channels; the rest count as `other`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus::{
    Counter, CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use stile_token::Reason;

use crate::beacon::{self, Beacon, BeaconResult};
use crate::state::State;
use crate::transport::Transport;

/// Most distinct share channels used as label values.
pub(crate) const MAX_CHANNEL_LABELS: usize = 64;

/// Every metric of one edge.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    validation: Histogram,
    upstream_errors: IntCounterVec,
    revocations: IntGaugeVec,
    keys: IntGauge,
    state_version: IntGauge,
    state_age: IntGauge,
    state_reloads: IntCounterVec,
    playlists: IntCounterVec,
    sessions: IntCounterVec,
    /// `stile_edge_foreign_requests_total{format,result}` (other vendors' links).
    foreign: IntCounterVec,
    /// Per-channel playback outcomes ([`crate::playback`]).
    playback: PlaybackVecs,
    /// Per-channel player beacon series ([`crate::beacon`]).
    player: PlayerVecs,
    /// `stile_edge_player_beacons_total{result}`, in [`BeaconResult::ALL`] order.
    beacons: [IntCounter; BeaconResult::ALL.len()],
    /// `requests` series of requests without a channel, with a capped-out channel, and of
    /// each channel seen: handles resolved once, so counting a request hashes no label.
    no_channel: Channel,
    other_channel: Channel,
    channels: RwLock<HashMap<Box<str>, Channel>>,
    /// `upstream_responses` and `upstream_duration` by status class, in [`STATUS_CLASSES`] order.
    upstream_by_class: [(IntCounter, Histogram); STATUS_CLASSES.len()],
    /// `stile_edge_fast_path_requests_total{outcome}`: `served`, `handed_over`.
    fast_path: [IntCounter; 2],
}

/// Status classes of the `class` label.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// What happened to a session (`stile_edge_sessions_total{event}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A link admitted a manifest and the edge started a session.
    Started,
    /// A session credential admitted a request and the edge issued it again, renewed.
    Renewed,
}

impl SessionEvent {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionEvent::Started => "started",
            SessionEvent::Renewed => "renewed",
        }
    }
}

/// Why a playback session ended (`cause` label, `session.ended` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// No request carried it for its policy's `idle_secs` (found by the sweep).
    Idle,
    /// A request carried a credential past its lifetime (`session_expired`).
    Expired,
    /// A request carrying it was denied `revoked` (a revocation matching its link).
    Revoked,
    /// Its hard maximum passed (`session_max`, or found by the sweep).
    Max,
}

impl EndCause {
    /// Every cause, in label order.
    pub const ALL: [EndCause; 4] = [EndCause::Idle, EndCause::Expired, EndCause::Revoked, EndCause::Max];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndCause::Idle => "idle",
            EndCause::Expired => "expired",
            EndCause::Revoked => "revoked",
            EndCause::Max => "max",
        }
    }

    /// The cause a denial of a (MAC-verified) session credential ends it with.
    pub const fn of_denial(reason: Reason) -> Option<EndCause> {
        match reason {
            Reason::SessionExpired => Some(EndCause::Expired),
            Reason::Revoked => Some(EndCause::Revoked),
            Reason::SessionMax => Some(EndCause::Max),
            _ => None,
        }
    }
}

/// Decisions of `stile_edge_requests_total`: allowed, or denied for one of [`Reason::ALL`].
const OUTCOMES: usize = Reason::ALL.len() + 1;
const KINDS: [ObjectKind; 4] = [ObjectKind::Manifest, ObjectKind::Segment, ObjectKind::Other, ObjectKind::Beacon];
const SLOTS: usize = OUTCOMES * Transport::ALL.len() * KINDS.len();

/// One channel's label value and metric handles (shared by the request counters and
/// the playback tracker's entries).
pub(crate) type Channel = Arc<ChannelCounters>;

/// One channel's `stile_edge_requests_total` handles, by (outcome, transport, kind), each
/// created on its first request (so only series that happened are exported), and its
/// playback outcome handles, created on the channel's first playback.
#[derive(Debug)]
pub(crate) struct ChannelCounters {
    label: Box<str>,
    slots: [OnceLock<IntCounter>; SLOTS],
    playback: OnceLock<PlaybackCounters>,
    player: OnceLock<PlayerCounters>,
}

/// The playback series of one channel.
#[derive(Debug)]
pub(crate) struct PlaybackCounters {
    /// `stile_edge_playback_starts_total{channel}`.
    pub(crate) starts: IntCounter,
    /// `stile_edge_playback_renewals_total{channel}`.
    pub(crate) renewals: IntCounter,
    /// `stile_edge_playback_ended_total{channel,cause}`, in [`EndCause::ALL`] order.
    pub(crate) ended: [IntCounter; 4],
    /// `stile_edge_playback_completion_ratio{channel}`.
    pub(crate) completion: Histogram,
}

/// The player beacon series of one channel (the `error` series each made on first use).
#[derive(Debug)]
pub(crate) struct PlayerCounters {
    startup: Histogram,
    rebuffers: IntCounter,
    rebuffer_secs: Counter,
    errors: [OnceLock<IntCounter>; beacon::ERRORS.len()],
}

/// The player beacon metric families (`docs/edge.md`, "Metrics").
#[derive(Debug)]
struct PlayerVecs {
    startup: HistogramVec,
    rebuffers: IntCounterVec,
    rebuffer_secs: CounterVec,
    errors: IntCounterVec,
}

/// The playback metric families (`docs/edge.md`, "Metrics").
#[derive(Debug)]
struct PlaybackVecs {
    starts: IntCounterVec,
    renewals: IntCounterVec,
    ended: IntCounterVec,
    completion: HistogramVec,
    tracked: IntGauge,
    untracked: IntCounter,
}

impl ChannelCounters {
    fn new(label: &str) -> ChannelCounters {
        ChannelCounters {
            label: label.into(),
            slots: std::array::from_fn(|_| OnceLock::new()),
            playback: OnceLock::new(),
            player: OnceLock::new(),
        }
    }

    /// The label value (`none`, `other`, or the channel).
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// This channel's playback handles.
    pub(crate) fn playback(&self, m: &Metrics) -> &PlaybackCounters {
        self.playback.get_or_init(|| {
            let p = &m.playback;
            let l = &*self.label;
            PlaybackCounters {
                starts: p.starts.with_label_values(&[l]),
                renewals: p.renewals.with_label_values(&[l]),
                ended: EndCause::ALL.map(|c| p.ended.with_label_values(&[l, c.as_str()])),
                completion: p.completion.with_label_values(&[l]),
            }
        })
    }

    /// Counts one accepted beacon on this channel.
    fn player(&self, m: &Metrics, b: &Beacon) {
        let p = self.player.get_or_init(|| {
            let v = &m.player;
            let l = &*self.label;
            PlayerCounters {
                startup: v.startup.with_label_values(&[l]),
                rebuffers: v.rebuffers.with_label_values(&[l]),
                rebuffer_secs: v.rebuffer_secs.with_label_values(&[l]),
                errors: std::array::from_fn(|_| OnceLock::new()),
            }
        });
        if let Some(ms) = b.startup_ms {
            p.startup.observe(f64::from(ms) / 1e3);
        }
        p.rebuffers.inc_by(u64::from(b.rebuffers));
        if b.rebuffer_ms > 0 {
            p.rebuffer_secs.inc_by(f64::from(b.rebuffer_ms) / 1e3);
        }
        if let Some(i) = b.error {
            p.errors[i].get_or_init(|| m.player.errors.with_label_values(&[&self.label, beacon::ERRORS[i]])).inc();
        }
    }

    fn inc(&self, vec: &IntCounterVec, reason: Option<Reason>, transport: Transport, kind: ObjectKind) {
        let outcome = reason.map_or(0, |r| Reason::ALL.iter().position(|x| *x == r).map_or(0, |i| i + 1));
        let t = Transport::ALL.iter().position(|x| *x == transport).unwrap_or(0);
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let slot = &self.slots[(outcome * Transport::ALL.len() + t) * KINDS.len() + k];
        slot.get_or_init(|| {
            let (decision, reason) = match reason {
                None => ("allow", "ok"),
                Some(r) => ("deny", r.as_str()),
            };
            vec.with_label_values(&[decision, reason, transport.as_str(), &self.label, kind.as_str()])
        })
        .inc();
    }
}

/// What a request asked for, by the extension of its path: the `kind` label of
/// `stile_edge_requests_total`. Admitted manifests are what players fetch to start
/// (and, for live streams, to refresh) playback; segment denials mid-playback point
/// at links that expire before the viewer finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ObjectKind {
    /// An HLS playlist or a DASH MPD.
    Manifest,
    /// A media segment, init segment or subtitle chunk.
    Segment,
    /// Anything else (keys, images, unparsable paths).
    #[default]
    Other,
    /// A player beacon (`…/_stile_beacon`, [`crate::beacon`]): answered by the edge.
    Beacon,
}

impl ObjectKind {
    /// Classifies a request: `manifest` as the validator decided on the canonical path,
    /// else by the extension of the last segment of `path` (the query is ignored).
    pub fn classify(manifest: bool, path: &[u8]) -> ObjectKind {
        if manifest {
            return ObjectKind::Manifest;
        }
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let Some(dot) = name.iter().rposition(|&b| b == b'.') else { return ObjectKind::Other };
        const SEGMENTS: [&[u8]; 13] = [
            b"ts", b"m4s", b"mp4", b"m4a", b"m4v", b"aac", b"ac3", b"ec3", b"mp3", b"vtt", b"webvtt", b"cmfv", b"cmfa",
        ];
        let ext = &name[dot + 1..];
        if SEGMENTS.iter().any(|s| ext.eq_ignore_ascii_case(s)) { ObjectKind::Segment } else { ObjectKind::Other }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Manifest => "manifest",
            ObjectKind::Segment => "segment",
            ObjectKind::Other => "other",
            ObjectKind::Beacon => "beacon",
        }
    }
}

/// How a playlist response was treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaylistOutcome {
    /// Child URIs got the token.
    Rewritten,
    /// Larger than `playlist.max_bytes`: served unmodified.
    TooLarge,
    /// Content-encoded by the origin: served unmodified.
    Encoded,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_requests_total",
                    "Requests by decision, reason code, token transport, share channel and object kind.",
                ),
                &["decision", "reason", "transport", "channel", "kind"],
            ),
        );
        let validation = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new("stile_edge_validation_duration_seconds", "Time spent validating a request.")
                    .buckets(vec![1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2]),
            ),
        );
        let upstream_responses = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("stile_edge_upstream_responses_total", "Origin responses by status class."),
                &["class"],
            ),
        );
        let upstream_errors = registered(
            &registry,
            IntCounterVec::new(
                Opts::new("stile_edge_upstream_errors_total", "Failed origin exchanges by kind."),
                &["kind"],
            ),
        );
        let upstream_duration = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "stile_edge_upstream_duration_seconds",
                    "Time from admission to the end of the response.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
                &["class"],
            ),
        );
        let revocations = registered(
            &registry,
            IntGaugeVec::new(Opts::new("stile_edge_revocation_entries", "Revocations in force, by kind."), &["kind"]),
        );
        let keys = registered(&registry, IntGauge::new("stile_edge_keys", "Verification keys held."));
        let state_version =
            registered(&registry, IntGauge::new("stile_edge_state_version", "Version of the state in force."));
        let state_age = registered(
            &registry,
            IntGauge::new("stile_edge_state_age_seconds", "Seconds since the state in force was known current."),
        );
        let state_reloads = registered(
            &registry,
            IntCounterVec::new(Opts::new("stile_edge_state_reloads_total", "State reloads by result."), &["result"]),
        );
        let playlists = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_playlist_rewrites_total",
                    "HLS playlists considered for token rewriting, by result.",
                ),
                &["result"],
            ),
        );
        let sessions = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_sessions_total",
                    "Session credentials written to viewers: started (from a link) or renewed, by transport.",
                ),
                &["event", "transport"],
            ),
        );
        for event in [SessionEvent::Started, SessionEvent::Renewed] {
            for t in [Transport::Path, Transport::Query, Transport::Cookie] {
                sessions.with_label_values(&[event.as_str(), t.as_str()]);
            }
        }
        let foreign = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_foreign_requests_total",
                    "Requests judged by another vendor's link format, by format and result (a reason code or admitted).",
                ),
                &["format", "result"],
            ),
        );
        let playback = PlaybackVecs {
            starts: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "stile_edge_playback_starts_total",
                        "Playback sessions started by this edge, by share channel.",
                    ),
                    &["channel"],
                ),
            ),
            renewals: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new("stile_edge_playback_renewals_total", "Session credentials renewed, by share channel."),
                    &["channel"],
                ),
            ),
            ended: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "stile_edge_playback_ended_total",
                        "Tracked playback sessions ended, by share channel and cause (idle, expired, revoked, max).",
                    ),
                    &["channel", "cause"],
                ),
            ),
            completion: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stile_edge_playback_completion_ratio",
                        "Ended VOD playback sessions by the furthest position reached over the playlist's duration.",
                    )
                    .buckets(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
                    &["channel"],
                ),
            ),
            tracked: registered(
                &registry,
                IntGauge::new("stile_edge_playback_tracked_sessions", "Playback sessions tracked now."),
            ),
            untracked: registered(
                &registry,
                IntCounter::new(
                    "stile_edge_playback_untracked_total",
                    "Playback sessions served but not tracked: the tracker was full (outcomes.max_sessions).",
                ),
            ),
        };
        let player = PlayerVecs {
            startup: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stile_edge_player_startup_seconds",
                        "Player-reported time from load to the first frame played, by share channel.",
                    )
                    .buckets(vec![0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0]),
                    &["channel"],
                ),
            ),
            rebuffers: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "stile_edge_player_rebuffers_total",
                        "Player-reported stalls after playback started, by share channel.",
                    ),
                    &["channel"],
                ),
            ),
            rebuffer_secs: registered(
                &registry,
                CounterVec::new(
                    Opts::new(
                        "stile_edge_player_rebuffer_seconds_total",
                        "Player-reported time spent stalled after playback started, by share channel.",
                    ),
                    &["channel"],
                ),
            ),
            errors: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "stile_edge_player_errors_total",
                        "Player-reported fatal errors, by share channel and kind (a reason code, a player kind, or other).",
                    ),
                    &["channel", "error"],
                ),
            ),
        };
        let beacons_vec = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_player_beacons_total",
                    "Player beacon requests by result (accepted, malformed, too_large, rate_limited, ...).",
                ),
                &["result"],
            ),
        );
        let beacons = BeaconResult::ALL.map(|r| beacons_vec.with_label_values(&[r.as_str()]));
        // Pre-create the common series so dashboards see zeros, not gaps.
        for r in Reason::ALL {
            requests.with_label_values(&["deny", r.as_str(), Transport::None.as_str(), "none", "other"]);
        }
        for r in ["ok", "error"] {
            state_reloads.with_label_values(&[r]);
        }
        let fast_path = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "stile_edge_fast_path_requests_total",
                    "Plain GETs taken by the edge's sequential path to the origin (`origin.fast_path`): \
                     served by it (its errors included), or handed over to Pingora's proxy before anything reached the viewer \
                     (a pooled connection found closed, a retried connect error or 5xx).",
                ),
                &["outcome"],
            ),
        );
        let fast_path = ["served", "handed_over"].map(|o| fast_path.with_label_values(&[o]));
        let upstream_by_class = STATUS_CLASSES
            .map(|c| (upstream_responses.with_label_values(&[c]), upstream_duration.with_label_values(&[c])));
        Metrics {
            registry,
            requests,
            validation,
            upstream_errors,
            revocations,
            keys,
            state_version,
            state_age,
            state_reloads,
            playlists,
            sessions,
            foreign,
            playback,
            player,
            beacons,
            no_channel: Arc::new(ChannelCounters::new("none")),
            other_channel: Arc::new(ChannelCounters::new("other")),
            channels: RwLock::new(HashMap::new()),
            upstream_by_class,
            fast_path,
        }
    }

    /// Counts one request's decision.
    pub fn request(&self, reason: Option<Reason>, transport: Transport, channel: Option<&str>, kind: ObjectKind) {
        let Some(c) = channel else {
            return self.no_channel.inc(&self.requests, reason, transport, kind);
        };
        if let Ok(map) = self.channels.read()
            && let Some(counters) = map.get(c)
        {
            return counters.inc(&self.requests, reason, transport, kind);
        }
        match self.add_channel(c) {
            Some(counters) => counters.inc(&self.requests, reason, transport, kind),
            None => self.other_channel.inc(&self.requests, reason, transport, kind),
        }
    }

    /// The handles of a (MAC-verified) channel: its own while fewer than
    /// [`MAX_CHANNEL_LABELS`] channels have theirs, else `other`; `none` without one.
    pub(crate) fn channel(&self, channel: Option<&str>) -> Channel {
        let Some(c) = channel else { return self.no_channel.clone() };
        if let Ok(map) = self.channels.read()
            && let Some(counters) = map.get(c)
        {
            return counters.clone();
        }
        self.add_channel(c).unwrap_or_else(|| self.other_channel.clone())
    }

    /// One more (or fewer) tracked playback session.
    pub(crate) fn playback_tracked(&self, delta: i64) {
        self.playback.tracked.add(delta);
    }

    /// Counts one accepted beacon on its (MAC-verified) channel.
    pub(crate) fn player(&self, channel: Option<&str>, b: &Beacon) {
        self.channel(channel).player(self, b);
    }

    /// Counts one beacon request's result.
    pub(crate) fn beacon(&self, result: BeaconResult) {
        let i = BeaconResult::ALL.iter().position(|r| *r == result).unwrap_or(0);
        self.beacons[i].inc();
    }

    /// One playback session served but not tracked.
    pub(crate) fn playback_untracked(&self) {
        self.playback.untracked.inc();
    }

    /// Records the time one validation took.
    pub(crate) fn validation_seconds(&self, secs: f64) {
        self.validation.observe(secs);
    }

    /// Counts one origin response and its duration.
    pub(crate) fn upstream_response(&self, status: u16, secs: f64) {
        let (count, duration) = &self.upstream_by_class[status_class(status)];
        count.inc();
        duration.observe(secs);
    }

    /// Counts one request taken by the sequential path: `served` by it, or handed over.
    pub(crate) fn fast_path(&self, served: bool) {
        self.fast_path[usize::from(!served)].inc();
    }

    /// Counts one failed origin exchange.
    pub(crate) fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    /// One request judged by a foreign format (label values from fixed sets only).
    pub fn foreign(&self, format: stile_foreign::Format, reason: Option<Reason>) {
        self.foreign.with_label_values(&[format.as_str(), reason.map_or("admitted", Reason::as_str)]).inc();
    }

    /// Counts a session credential written to a viewer (a cookie, rewritten URLs, a redirect).
    pub fn session(&self, event: SessionEvent, transport: Transport) {
        self.sessions.with_label_values(&[event.as_str(), transport.as_str()]).inc();
    }

    /// Counts one playlist treatment.
    pub fn playlist(&self, outcome: PlaylistOutcome) {
        let label = match outcome {
            PlaylistOutcome::Rewritten => "rewritten",
            PlaylistOutcome::TooLarge => "too_large",
            PlaylistOutcome::Encoded => "encoded",
        };
        self.playlists.with_label_values(&[label]).inc();
    }

    /// Publishes the gauges of a newly loaded state.
    pub(crate) fn observe_state(&self, state: &State) {
        let c = state.revocations.counts();
        for (kind, n) in [("token_id", c.token_ids), ("subject", c.subjects), ("prefix", c.paths), ("key", c.keys)] {
            self.revocations.with_label_values(&[kind]).set(n as i64);
        }
        self.keys.set(state.keys.len() as i64);
        self.state_version.set(i64::try_from(state.version).unwrap_or(i64::MAX));
    }

    /// Updates the state age gauge.
    pub(crate) fn observe_age(&self, now: u64, fresh_at: u64) {
        self.state_age.set(i64::try_from(now.saturating_sub(fresh_at)).unwrap_or(i64::MAX));
    }

    /// Exports the verified-signature cache's `stile_edge_verified_cache_lookups_total{result}`.
    pub(crate) fn register_verified_cache(&self, cache: &crate::verified::VerifiedCache) {
        registered(&self.registry, Ok(cache.metric()));
    }

    /// Registers `stile_edge_session_cache_lookups_total` (the validator's verified-session cache).
    pub(crate) fn register_session_cache(&self, cache: &crate::verified::SessionCache) {
        registered(&self.registry, Ok(cache.metric()));
    }

    /// Counts one state reload.
    pub(crate) fn state_reload(&self, ok: bool) {
        self.state_reloads.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    /// The registry, for components that register their own metrics (sync).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 << 10);
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics.encode_failed");
        }
        out
    }

    /// The counters of a channel not seen before, or `None` once [`MAX_CHANNEL_LABELS`]
    /// channels have their own (the request then counts as `other`).
    fn add_channel(&self, c: &str) -> Option<Arc<ChannelCounters>> {
        let mut map = self.channels.write().ok()?;
        if let Some(known) = map.get(c) {
            return Some(known.clone());
        }
        if map.len() >= MAX_CHANNEL_LABELS {
            return None;
        }
        let counters = Arc::new(ChannelCounters::new(c));
        map.insert(c.into(), counters.clone());
        Some(counters)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers one metric in `registry` and returns it. Names and help texts are
/// static and unique, so a failure is a bug that shows at the edge's start.
pub(crate) fn registered<M>(registry: &Registry, metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("valid metric");
    registry.register(Box::new(metric.clone())).expect("unique metric name");
    metric
}

/// The index in [`STATUS_CLASSES`] of a status code's class.
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention_and_encode() {
        let m = Metrics::new();
        m.request(None, Transport::Query, Some("email"), ObjectKind::Manifest);
        m.request(Some(Reason::Expired), Transport::Cookie, None, ObjectKind::Segment);
        m.upstream_response(204, 0.01);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(
            text.contains(
                r#"stile_edge_requests_total{channel="email",decision="allow",kind="manifest",reason="ok",transport="query"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"reason="expired""#));
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            assert!(line.starts_with("# TYPE stile_edge_"), "{line}");
        }
    }

    #[test]
    fn object_kinds_come_from_the_extension() {
        for (manifest, path, want) in [
            (true, &b"/vod/abc/master.m3u8?st=x"[..], ObjectKind::Manifest),
            (false, b"/vod/abc/v1/seg1.ts?st=x.m3u8", ObjectKind::Segment),
            (false, b"/_st/tok.en/vod/abc/init.MP4", ObjectKind::Segment),
            (false, b"/vod/abc/chunk-1.m4s", ObjectKind::Segment),
            (false, b"/vod/abc/key.bin", ObjectKind::Other),
            (false, b"/vod/abc/", ObjectKind::Other),
            (false, b"/vod.d/abc", ObjectKind::Other),
            (false, b"", ObjectKind::Other),
        ] {
            assert_eq!(ObjectKind::classify(manifest, path), want, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn cached_handles_count_every_combination_apart() {
        let m = Metrics::new();
        for r in Reason::ALL.into_iter().map(Some).chain([None]) {
            for t in Transport::ALL {
                for k in KINDS {
                    m.request(r, t, Some("ch"), k);
                }
            }
        }
        m.request(Some(Reason::Revoked), Transport::Cookie, Some("ch"), ObjectKind::Segment);
        let text = String::from_utf8(m.encode()).unwrap();
        let series =
            text.lines().filter(|l| l.starts_with("stile_edge_requests_total{") && l.contains(r#"channel="ch""#));
        assert_eq!(series.count(), SLOTS);
        assert!(text.contains(
            r#"stile_edge_requests_total{channel="ch",decision="deny",kind="segment",reason="revoked",transport="cookie"} 2"#
        ));
        for status in [100, 302, 599, 600, 99] {
            m.upstream_response(status, 0.001);
        }
        let text = String::from_utf8(m.encode()).unwrap();
        for (class, n) in [("1xx", 1), ("2xx", 0), ("3xx", 1), ("4xx", 0), ("5xx", 1), ("other", 2)] {
            let line = format!(r#"stile_edge_upstream_responses_total{{class="{class}"}} {n}"#);
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }

    #[test]
    fn player_series_share_the_channel_handles_and_cap() {
        let m = Metrics::new();
        for i in 0..MAX_CHANNEL_LABELS {
            m.request(None, Transport::Path, Some(&format!("c{i}")), ObjectKind::Segment);
        }
        let b = beacon::parse(br#"{"startup_ms":1500,"rebuffers":2,"rebuffer_ms":250,"error":"nope"}"#).unwrap();
        m.player(Some("c0"), &b);
        m.player(Some("c0"), &beacon::parse(br#"{"rebuffers":1,"rebuffer_ms":500}"#).unwrap());
        m.player(Some("one-too-many"), &b);
        m.beacon(BeaconResult::Accepted);
        let text = String::from_utf8(m.encode()).unwrap();
        for line in [
            r#"stile_edge_player_startup_seconds_sum{channel="c0"} 1.5"#,
            r#"stile_edge_player_startup_seconds_bucket{channel="c0",le="2"} 1"#,
            r#"stile_edge_player_rebuffers_total{channel="c0"} 3"#,
            r#"stile_edge_player_rebuffer_seconds_total{channel="c0"} 0.75"#,
            r#"stile_edge_player_errors_total{channel="c0",error="other"} 1"#,
            r#"stile_edge_player_errors_total{channel="other",error="other"} 1"#,
            r#"stile_edge_player_beacons_total{result="accepted"} 1"#,
            r#"stile_edge_player_beacons_total{result="rate_limited"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(!text.contains("one-too-many"));
        // Only the error kinds that happened have a series.
        assert_eq!(text.lines().filter(|l| l.starts_with("stile_edge_player_errors_total{")).count(), 2);
    }

    #[test]
    fn channel_labels_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_CHANNEL_LABELS {
            m.request(None, Transport::Path, Some(&format!("c{i}")), ObjectKind::Segment);
        }
        m.request(None, Transport::Path, Some("one-too-many"), ObjectKind::Segment);
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(r#"channel="other""#));
        assert!(!text.contains("one-too-many"));
    }
}
