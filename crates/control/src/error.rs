//! The API's errors and their mapping to gRPC status codes, in one place.

use tonic::{Code, Status};

use crate::store::StoreError;

/// Why a request failed. Every message tells the caller what to change.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is malformed or violates a policy. → `INVALID_ARGUMENT`
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is fine but the system is not in a state that allows it. → `FAILED_PRECONDITION`
    #[error("{0}")]
    FailedPrecondition(String),
    /// The named thing does not exist. → `NOT_FOUND`
    #[error("{0}")]
    NotFound(String),
    /// The named thing exists already. → `ALREADY_EXISTS`
    #[error("{0}")]
    AlreadyExists(String),
    /// No valid API key. → `UNAUTHENTICATED`
    #[error("{0}")]
    Unauthenticated(String),
    /// The API key's role may not call this RPC. → `PERMISSION_DENIED`
    #[error("{0}")]
    PermissionDenied(String),
    /// The storage backend failed; details are logged, not returned. → `ABORTED` on
    /// a write conflict, `UNAVAILABLE` when the backend cannot be reached,
    /// `INTERNAL` otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's address is backed off after repeated failed
    /// authentications. → `RESOURCE_EXHAUSTED`
    #[error("{0}")]
    TooManyFailures(String),
    /// A local failure (e.g. the OS random source). → `INTERNAL`
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Prefixes the message with where the problem is, e.g. `requests[3]`.
    pub fn context(self, at: &str) -> ApiError {
        match self {
            ApiError::InvalidArgument(m) => ApiError::InvalidArgument(format!("{at}: {m}")),
            ApiError::FailedPrecondition(m) => ApiError::FailedPrecondition(format!("{at}: {m}")),
            ApiError::NotFound(m) => ApiError::NotFound(format!("{at}: {m}")),
            other => other,
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let (code, message) = match e {
            ApiError::InvalidArgument(m) => (Code::InvalidArgument, m),
            ApiError::FailedPrecondition(m) => (Code::FailedPrecondition, m),
            ApiError::NotFound(m) => (Code::NotFound, m),
            ApiError::AlreadyExists(m) => (Code::AlreadyExists, m),
            ApiError::Unauthenticated(m) => (Code::Unauthenticated, m),
            ApiError::PermissionDenied(m) => (Code::PermissionDenied, m),
            ApiError::TooManyFailures(m) => (Code::ResourceExhausted, m),
            ApiError::Store(StoreError::Conflict(m)) => (Code::Aborted, format!("{m}; retry the request")),
            ApiError::Store(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "store.unavailable");
                (Code::Unavailable, "storage backend unavailable; the request was not acknowledged, retry later".into())
            }
            ApiError::Store(e @ StoreError::Full(_)) => {
                tracing::error!(error = %e, "store.full");
                (
                    Code::ResourceExhausted,
                    "the control plane's storage is full; nothing was written or acknowledged. Free disk space on the \
                     control plane, then retry"
                        .into(),
                )
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store.failed");
                (Code::Internal, "storage backend failed; see the control plane's log".into())
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal");
                (Code::Internal, m)
            }
        };
        Status::new(code, bounded(message))
    }
}

/// Longest status message sent, in bytes. Messages may quote what the caller
/// sent; unbounded, a huge field would come back as a `grpc-message` header
/// larger than HTTP/2 peers accept, and the caller would see a transport error
/// instead of the real one.
pub(crate) const MAX_MESSAGE_LEN: usize = 1024;

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (truncated)");
    }
    message
}
