//! The client commands: `mint`, `revoke`, `purge`, `revocations`, `keys`, `assets`,
//! `edges`, `audit`, `api-keys` and `config` (and the connection `explain`
//! uses). Each talks gRPC `stile.v1` to the control plane with a bearer API
//! key, prints aligned tables for people or one JSON document with `--json`,
//! and exits with a documented code ([`Kind::exit_code`], docs/cli.md).
//!
//! Tokens are printed only by `mint` (handing them out is the point); API keys
//! only by `api-keys create`, once. Neither is ever logged.

mod edges;
pub(crate) mod explain;
mod foreign;
mod foreign_keys;
mod links;
mod ops;
pub(crate) mod output;

use std::process::ExitCode;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::settings::{ClientFlags, Settings};

pub(crate) use edges::EdgesCmd;
pub(crate) use links::MintArgs;
pub(crate) use ops::{ApiKeysCmd, AssetsCmd, AuditCmd, KeysCmd, PurgeArgs, RevocationsCmd, RevokeArgs};
pub(crate) use ops::{
    asset_state as output_asset_state, key_state as key_state_name, list_keys as ops_list_keys,
    list_revocations as ops_list_revocations, target_text as revocation_target_text,
};

/// A client command, with the flags every client command shares.
#[derive(Debug)]
pub(crate) enum Command {
    Mint(MintArgs),
    Revoke(RevokeArgs),
    Purge(PurgeArgs),
    Revocations(RevocationsCmd),
    Keys(KeysCmd),
    Assets(AssetsCmd),
    Edges(EdgesCmd),
    Audit(AuditCmd),
    ApiKeys(ApiKeysCmd),
    Explain(explain::Args),
    Config,
}

/// Resolves the settings, runs one client command and maps its outcome to an exit code.
pub(crate) fn run(name: &str, flags: &ClientFlags, command: Command) -> ExitCode {
    let settings = match Settings::load(flags) {
        Ok(s) => s,
        Err(e) => return report(name, &Failure::usage(e)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(name, &Failure::runtime(format!("cannot start the async runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        match command {
            Command::Mint(a) => links::mint(&settings, a).await,
            Command::Revoke(a) => ops::revoke(&settings, a).await,
            Command::Purge(a) => ops::purge(&settings, a).await,
            Command::Revocations(c) => ops::revocations(&settings, c).await,
            Command::Keys(c) => ops::keys(&settings, c).await,
            Command::Assets(c) => ops::assets(&settings, c).await,
            Command::Edges(c) => edges::edges(&settings, c).await,
            Command::Audit(c) => ops::audit(&settings, c).await,
            Command::ApiKeys(c) => ops::api_keys(&settings, c).await,
            Command::Explain(a) => explain::run(&settings, a).await,
            Command::Config => ops::show_config(&settings),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(name, &f),
    }
}

fn report(name: &str, f: &Failure) -> ExitCode {
    if !f.message.is_empty() {
        eprintln!("stile {name}: {}", f.message);
    }
    if let Some(h) = &f.hint {
        eprintln!("  hint: {h}");
    }
    ExitCode::from(f.kind.exit_code())
}

/// How a command failed; decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// 1: the control plane is unreachable, an internal error, local I/O.
    Runtime,
    /// 2: the control plane refused the request (invalid argument, not found,
    /// failed precondition, already exists, aborted).
    Refused,
    /// 3: the API key is missing, unknown, or its role may not do this.
    Auth,
    /// 4: a negative answer that is not an error: `explain` says an edge would
    /// deny the link; a wait confirmed by some expected edges but not all.
    Negative,
    /// 5: a wait confirmed by no edge at all (nobody connected, or nobody ACKed).
    Unconfirmed,
    /// 64: bad flags or configuration (EX_USAGE).
    Usage,
}

impl Kind {
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Kind::Runtime => 1,
            Kind::Refused => 2,
            Kind::Auth => 3,
            Kind::Negative => 4,
            Kind::Unconfirmed => 5,
            Kind::Usage => 64,
        }
    }
}

/// The lines of a `--batch` FILE (`-`: stdin) that hold something, trimmed,
/// with their line numbers (from 1): blank lines and `#` comments are skipped.
pub(crate) fn batch_lines(path: &std::path::Path) -> Result<Vec<(usize, String)>, Failure> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| Failure::usage(format!("cannot open --batch {}: {e}", path.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Failure::runtime(format!("reading {}: {e}", path.display())))?;
        let line = line.trim();
        if !line.is_empty() && !line.starts_with('#') {
            out.push((i + 1, line.to_owned()));
        }
    }
    Ok(out)
}

/// A failed command: what went wrong and, where we know, what to do next.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure { kind: Kind::Usage, message: message.into(), hint: None }
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Failure {
        Failure { kind: Kind::Runtime, message: message.into(), hint: None }
    }

    /// A negative verdict whose explanation was already printed.
    pub(crate) fn negative() -> Failure {
        Failure { kind: Kind::Negative, message: String::new(), hint: None }
    }

    /// A wait confirmed by no edge, whose explanation was already printed.
    pub(crate) fn unconfirmed() -> Failure {
        Failure { kind: Kind::Unconfirmed, message: String::new(), hint: None }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Maps a gRPC status from `server` to a failure with advice.
    pub(crate) fn status(server: &str, s: &tonic::Status) -> Failure {
        use tonic::Code;
        let msg = s.message();
        match s.code() {
            Code::Unauthenticated => Failure {
                kind: Kind::Auth,
                message: format!("the control plane at {server} did not accept the API key: {msg}"),
                hint: Some("pass a valid key with --api-key or STILE_API_KEY (`stile dev` prints one)".into()),
            },
            Code::PermissionDenied => Failure {
                kind: Kind::Auth,
                message: format!("permission denied: {msg}"),
                hint: Some("use an API key whose role may do this (see `stile api-keys ls`, role table in docs/control-plane.md)".into()),
            },
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists | Code::OutOfRange => {
                Failure { kind: Kind::Refused, message: format!("{}: {msg}", code_name(s.code())), hint: None }
            }
            Code::Aborted => Failure {
                kind: Kind::Refused,
                message: format!("aborted: {msg}"),
                hint: Some("something changed concurrently; read the current state and retry".into()),
            },
            Code::Unavailable => unreachable(server, msg),
            Code::DeadlineExceeded => Failure::runtime(format!("the control plane at {server} did not answer in time"))
                .hint("check that it is healthy (`grpcurl -plaintext HOST:PORT grpc.health.v1.Health/Check`)"),
            Code::Unimplemented => Failure {
                kind: Kind::Refused,
                message: format!("the control plane at {server} does not implement this call: {msg}"),
                hint: Some("it may be older than this `stile`; upgrade it".into()),
            },
            code => Failure::runtime(format!("{}: {msg}", code_name(code)))
                .hint("the control plane's log has the details"),
        }
    }
}

fn code_name(code: tonic::Code) -> String {
    // `Code`'s Debug is CamelCase (`NotFound`); show the gRPC spelling.
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn unreachable(server: &str, detail: &str) -> Failure {
    Failure::runtime(format!("cannot reach the control plane at {server}: {detail}")).hint(
        "is it running? Start one with `stile dev` (or `stile control --config FILE`), \
         or point --server / STILE_SERVER at it",
    )
}

/// A connection to the control plane with the caller's API key.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) channel: Channel,
    bearer: MetadataValue<Ascii>,
    pub(crate) server: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("server", &self.server).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects; `role` names the role the command needs, for the hint when no key is set.
    pub(crate) async fn connect(settings: &Settings, role: &str) -> Result<Client, Failure> {
        Client::connect_with_timeout(settings, role, Duration::from_secs(5)).await
    }

    pub(crate) async fn connect_with_timeout(
        settings: &Settings,
        role: &str,
        connect_timeout: Duration,
    ) -> Result<Client, Failure> {
        let Some(key) = settings.api_key.as_deref() else {
            return Err(Failure::usage("no API key given").hint(format!(
                "pass --api-key KEY or set STILE_API_KEY (a key with role {role}; `stile dev` prints one)"
            )));
        };
        let bearer = format!("Bearer {key}")
            .parse()
            .map_err(|_| Failure::usage("the API key contains characters that cannot be sent (not visible ASCII)"))?;
        let server = settings.server.clone();
        let mut endpoint = Endpoint::from_shared(server.clone())
            .map_err(|e| Failure::usage(format!("--server {server:?} is not a valid URL: {e}")))?
            .connect_timeout(connect_timeout)
            .timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        if let Some(tls) = client_tls(settings)? {
            endpoint = endpoint.tls_config(tls).map_err(|e| Failure::usage(error_chain(&e)))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let detail = error_chain(&e);
            if detail.contains("certificate") {
                Failure::runtime(format!("TLS with the control plane at {server} failed: {detail}")).hint(
                    "its certificate must chain to --ca-file / STILE_CA_FILE and name the --server host \
                     (docs/cli.md, \"TLS\")",
                )
            } else {
                unreachable(&server, &detail)
            }
        })?;
        Ok(Client { channel, bearer, server })
    }

    /// Wraps a message with the authorization header.
    pub(crate) fn req<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", self.bearer.clone());
        r
    }

    /// Maps a status from this server.
    pub(crate) fn fail(&self, s: &tonic::Status) -> Failure {
        Failure::status(&self.server, s)
    }
}

/// TLS for an `https://` server: the CA bundle of `--ca-file` / `STILE_CA_FILE`
/// (required there, read and checked now). `None` for `http://`.
pub(crate) fn client_tls(settings: &Settings) -> Result<Option<ClientTlsConfig>, Failure> {
    if !settings.server.starts_with("https://") {
        return Ok(None);
    }
    let Some(path) = &settings.ca_file else {
        return Err(Failure::usage(format!("{} is https:// but no CA file is given", settings.server))
            .hint("pass --ca-file FILE or set STILE_CA_FILE (the CA that signed the control plane's certificate)"));
    };
    let ca = stile_tls::read_ca(path).map_err(|e| Failure::usage(format!("--ca-file: {e}")))?;
    Ok(Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem))))
}

/// `e` and its sources, joined with `: ` (tonic's transport errors hide the cause otherwise).
pub(crate) use stile_tls::error_chain;

/// The wall clock, read in this one place for the client commands.
#[allow(clippy::disallowed_methods)] // reason: the CLI's single clock read; tests pass times explicitly.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Prints a JSON document on stdout.
pub(crate) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()));
}

/// The short name of a proto enum value: `KEY_STATE_ACTIVE` → `ACTIVE`.
pub(crate) fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        for (code, exit) in [
            (tonic::Code::Unauthenticated, 3),
            (tonic::Code::PermissionDenied, 3),
            (tonic::Code::NotFound, 2),
            (tonic::Code::InvalidArgument, 2),
            (tonic::Code::FailedPrecondition, 2),
            (tonic::Code::AlreadyExists, 2),
            (tonic::Code::Aborted, 2),
            (tonic::Code::Unavailable, 1),
            (tonic::Code::Internal, 1),
        ] {
            let f = Failure::status("http://x", &tonic::Status::new(code, "m"));
            assert_eq!(f.kind.exit_code(), exit, "{code:?}");
        }
        assert_eq!(code_name(tonic::Code::FailedPrecondition), "FAILED_PRECONDITION");
    }
}
