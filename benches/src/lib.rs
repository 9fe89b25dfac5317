//! Shared fixtures for the benchmarks (see `benches/`) and the harness binaries
//! in `src/bin/`: child processes killed on drop, gRPC plumbing for a real
//! `stile control`, and percentiles.

pub mod fleet;
pub mod procs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

/// A child process, killed (SIGKILL) and reaped when dropped — also when the
/// harness unwinds from a panic or an error.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// What it is, for error messages.
    pub name: String,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Proc { child, name: name.to_owned() })
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited with {status}", self.name),
            None => Ok(()),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the command line as flags: calls `f(flag, value)` for each argument,
/// where `value()` takes the next argument as the flag's value. An error from
/// `f` (say, an unknown flag) ends it.
pub fn parse_flags(mut f: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<()>) -> Result<()> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        f(&flag, &mut value)?;
    }
    Ok(())
}

/// A loopback port that was free when asked.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The SHA-256 of an API key, hex, as `[[auth.keys]] sha256` wants it.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// One `[[auth.keys]]` entry of a control-plane configuration.
pub fn auth_key_toml(name: &str, role: &str, key: &str) -> String {
    // An edge key may sync as any edge id here (the benchmarks' edges are numbered).
    let edge_ids = if role == "edge" { "edge_ids = [\"*\"]\n" } else { "" };
    format!("[[auth.keys]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n{edge_ids}", key_hash(key))
}

/// A request carrying `authorization: Bearer <key>`.
pub fn auth<T>(m: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert("authorization", format!("Bearer {key}").parse().expect("ascii key"));
    r
}

/// Connects to a gRPC endpoint, retrying for up to 20 s while it comes up.
pub async fn connect(url: &str) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Channel::from_shared(url.to_owned())?.tcp_nodelay(true).connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => bail!("control plane at {url} did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The `p` quantile (0..=1, nearest rank) of sorted values; 0 when empty.
pub fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `12.34 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Writes a markdown note for a criterion run (`target/criterion/notes/NAME`), which
/// `benches/scripts/report.py` appends below the table.
pub fn write_note(name: &str, text: &str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("criterion/notes");
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(dir.join(name), text)) {
        eprintln!("cannot write the note {name}: {e}");
    }
}
