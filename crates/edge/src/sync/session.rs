//! One connection to a control plane: connect, say hello with the applied
//! version, then receive messages in batches and send ACKs, NACKs and
//! heartbeat answers. Nothing here knows the model or the cache.

use std::time::Duration;

use futures::FutureExt;
use stile_proto::v1 as pb;
use stile_proto::v1::edge_message::Kind as Em;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::config::SyncConfig;

/// Largest message accepted from the control plane, bytes. Every message of
/// a snapshot in parts is far smaller (a chunk is some 150 KB); this bounds a
/// one-message `Snapshot` from a control plane that does not send parts.
const MAX_MESSAGE: usize = 16 << 20;
/// Most messages applied as one batch.
const MAX_BATCH: usize = 1024;

/// Why a connection ended (or never started).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// The endpoint URL is not usable.
    #[error("bad endpoint {url:?}: {source}")]
    Endpoint { url: String, source: tonic::transport::Error },
    /// The connection could not be opened (refused, timed out, or the TLS
    /// handshake failed: the cause chain says which, e.g. an unknown issuer).
    #[error("cannot connect to {url}: {}", stile_tls::error_chain(.source))]
    Connect { url: String, source: tonic::transport::Error },
    /// The API key cannot be sent as a header.
    #[error("API key is not visible ASCII")]
    ApiKey,
    /// The control plane answered with an error status (or the connection
    /// failed mid-stream: then the cause, e.g. a TLS alert, follows).
    #[error("{}", status_text(.0))]
    Status(tonic::Status),
    /// No message, not even a heartbeat, for too long.
    #[error("no message from the control plane in {0} ms")]
    Silent(u128),
    /// The control plane ended the stream.
    #[error("the control plane closed the stream")]
    Ended,
    /// Our half of the stream is gone.
    #[error("stream closed")]
    Closed,
}

/// `Code: message`, then the status's sources (a transport error's cause).
fn status_text(status: &tonic::Status) -> String {
    let head = format!("{:?}: {}", status.code(), status.message());
    let Some(source) = std::error::Error::source(status) else { return head };
    let chain = stile_tls::error_chain(source);
    // tonic's message is often the source's own text: not twice.
    match chain.strip_prefix(status.message()).map(|rest| rest.trim_start_matches(": ")) {
        Some("") => head,
        Some(rest) => format!("{head}: {rest}"),
        None => format!("{head}: {chain}"),
    }
}

/// An open sync stream.
#[derive(Debug)]
pub(crate) struct Session {
    out: mpsc::Sender<pb::EdgeMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
    silence: Duration,
}

impl Session {
    /// Connects to `url` and says hello with the `applied` version.
    pub(crate) async fn connect(
        url: &str,
        config: &SyncConfig,
        tls: Option<&tonic::transport::ClientTlsConfig>,
        edge_id: &str,
        api_key: &str,
        applied: u64,
    ) -> Result<Session, SyncError> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|source| SyncError::Endpoint { url: url.to_owned(), source })?;
        if let Some(tls) = tls.filter(|_| url.starts_with("https://")) {
            // The control plane's name is the endpoint's host; its chain must reach `sync.ca_file`.
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|source| SyncError::Endpoint { url: url.to_owned(), source })?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|source| SyncError::Connect { url: url.to_owned(), source })?;
        let mut client = pb::edge_service_client::EdgeServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (out, rx) = mpsc::channel::<pb::EdgeMessage>(64);
        let hello = pb::EdgeHello {
            edge_id: edge_id.to_owned(),
            last_applied_version: applied,
            agent: concat!("stile-edge/", env!("CARGO_PKG_VERSION")).into(),
            chunked_snapshots: true,
        };
        out.send(pb::EdgeMessage { kind: Some(Em::Hello(hello)) }).await.map_err(|_| SyncError::Closed)?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = format!("Bearer {api_key}").parse().map_err(|_| SyncError::ApiKey)?;
        request.metadata_mut().insert("authorization", bearer);
        let inbound = client.sync(request).await.map_err(SyncError::Status)?.into_inner();
        Ok(Session { out, inbound, silence: Duration::from_millis(config.heartbeat_timeout_ms) })
    }

    /// The next batch: waits (at most the heartbeat timeout) for one message,
    /// then takes everything already received with it, up to a bound. The
    /// timeout counts from the previous message, and no message is large (a
    /// snapshot comes in parts), so a long transfer that keeps delivering
    /// never reads as silence.
    pub(crate) async fn receive_batch(&mut self) -> Result<Vec<pb::ControlMessage>, SyncError> {
        let first = match tokio::time::timeout(self.silence, self.inbound.message()).await {
            Err(_) => return Err(SyncError::Silent(self.silence.as_millis())),
            Ok(Err(status)) => return Err(SyncError::Status(status)),
            Ok(Ok(None)) => return Err(SyncError::Ended),
            Ok(Ok(Some(m))) => m,
        };
        // Everything already received joins the batch: one state rebuild, one ACK.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.inbound.message().now_or_never() {
                Some(Ok(Some(m))) => batch.push(m),
                _ => break,
            }
        }
        Ok(batch)
    }

    /// "Enforced from now on": every version up to `version` is applied.
    pub(crate) async fn ack(&self, version: u64) -> Result<(), SyncError> {
        self.send(Em::Ack(pb::Ack { version })).await
    }

    /// The message at `version` was refused, and why.
    pub(crate) async fn nack(&self, version: u64, error: String) -> Result<(), SyncError> {
        self.send(Em::Nack(pb::Nack { version, error })).await
    }

    /// The answer to a heartbeat.
    pub(crate) async fn status(&self, status: pb::EdgeStatus) -> Result<(), SyncError> {
        self.send(Em::Status(status)).await
    }

    async fn send(&self, kind: Em) -> Result<(), SyncError> {
        self.out.send(pb::EdgeMessage { kind: Some(kind) }).await.map_err(|_| SyncError::Closed)
    }
}
