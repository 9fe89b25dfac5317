//! Real processes the harnesses start: `stile control` (restartable on the
//! same ports) and a private `redis-server`. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Proc, free_port};

/// A `stile control` process with a fixed gRPC and admin port, so it can be
/// stopped and started again where its clients expect it.
#[derive(Debug)]
pub struct ControlProc {
    /// Its name (directory and log).
    pub name: String,
    /// gRPC port.
    pub port: u16,
    /// Admin port (`/metrics`).
    pub admin: u16,
    stile: PathBuf,
    dir: PathBuf,
    /// `RUST_LOG` it runs with (`warn` unless [`ControlProc::start_logging`]).
    rust_log: String,
    proc: Option<Proc>,
}

impl ControlProc {
    /// Writes `root/name/control.toml` (`listen`, `admin_listen`, then `body`)
    /// and starts it; returns once its gRPC port accepts connections.
    pub async fn start(stile: &Path, root: &Path, name: &str, body: &str) -> Result<ControlProc> {
        ControlProc::start_logging(stile, root, name, body, "warn").await
    }

    /// As [`ControlProc::start`], logging with this `RUST_LOG` filter.
    pub async fn start_logging(
        stile: &Path,
        root: &Path,
        name: &str,
        body: &str,
        rust_log: &str,
    ) -> Result<ControlProc> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let (port, admin) = (free_port()?, free_port()?);
        std::fs::write(
            dir.join("control.toml"),
            format!("listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n{body}"),
        )?;
        let mut c = ControlProc {
            name: name.to_owned(),
            port,
            admin,
            stile: stile.to_owned(),
            dir: dir.clone(),
            rust_log: rust_log.to_owned(),
            proc: None,
        };
        c.launch().await?;
        Ok(c)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("control.log")
    }

    /// Stops it: SIGTERM (a graceful stop: sessions end, in-flight calls
    /// drain), SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Result<()> {
        let Some(mut p) = self.proc.take() else { return Ok(()) };
        let _ = Command::new("kill").arg("-TERM").arg(p.pid().to_string()).status();
        let deadline = Instant::now() + grace;
        while p.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = p.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(p);
        Ok(())
    }

    /// Starts it again with the same configuration and ports.
    pub async fn restart(&mut self) -> Result<()> {
        ensure!(self.proc.is_none(), "{} is still running", self.name);
        self.launch().await
    }

    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.stile);
        cmd.args(["control", "--config"]).arg(self.dir.join("control.toml")).env("RUST_LOG", &self.rust_log);
        let mut proc = Proc::spawn(&self.name, cmd, &self.log())?;
        // Opening a large store can take a while.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            proc.check_alive().with_context(|| log_tail(&self.log()))?;
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                break;
            }
            ensure!(Instant::now() < deadline, "{} did not come up: {}", self.name, log_tail(&self.log()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proc = Some(proc);
        Ok(())
    }
}

/// A private `redis-server` (from `PATH`) in a temporary directory, no RDB
/// snapshots, AOF on; killed on drop.
#[derive(Debug)]
pub struct RedisProc {
    /// Its port.
    pub port: u16,
    proc: Proc,
}

impl RedisProc {
    /// Starts it in `root/redis` and waits for `PING`.
    pub async fn start(root: &Path) -> Result<RedisProc> {
        let dir = root.join("redis");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--save", "", "--appendonly", "yes"])
            .arg("--dir")
            .arg(&dir);
        let mut proc = Proc::spawn("redis-server", cmd, &dir.join("redis.log"))
            .context("redis-server must be on PATH (scripts/install-deps), or pass --no-redis")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            proc.check_alive().with_context(|| log_tail(&dir.join("redis.log")))?;
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await {
                let mut buf = [0u8; 16];
                s.write_all(b"PING\r\n").await?;
                if matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"+PONG")) {
                    return Ok(RedisProc { port, proc });
                }
            }
            if Instant::now() > deadline {
                bail!("redis-server did not answer PING within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// The last 20 lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("{}:\n{}", path.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
}
