//! A real `redis-server` (from `PATH`; `scripts/install-deps` installs it)
//! on a free loopback port with its own temporary directory, stopped (killed)
//! when dropped. Never touches a system Redis. It can also listen for TLS
//! (beside the plain port the harness itself uses), replicate another one,
//! or run as a Sentinel (`redis-server sentinel.conf --sentinel`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;

/// How the server persists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing on disk (`--save "" --appendonly no`).
    #[default]
    None,
    /// AOF fsynced before every answer (`--appendonly yes --appendfsync always`).
    AofAlways,
}

/// TLS for a server or Sentinel: `tls-port` beside the plain port (which the
/// harness keeps using), and `tls-replication yes` (replicas, and a Sentinel's
/// links to the servers, use TLS; replicas announce their TLS port).
#[derive(Clone, Debug)]
pub struct Tls {
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signs the clients' certificates.
    pub ca: PathBuf,
    /// `tls-auth-clients yes`: clients must present a certificate.
    pub auth_clients: bool,
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub persistence: Persistence,
    pub tls: Option<Tls>,
    /// `--replicaof 127.0.0.1 <port>` (with `tls`: the primary's TLS port).
    pub replica_of: Option<u16>,
    /// Run as a Sentinel watching this primary.
    pub sentinel: Option<Watch>,
}

/// What a Sentinel watches.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The primary's name (`sentinel monitor <name> ...`).
    pub master: String,
    /// The primary's port on 127.0.0.1 (with `tls`: its TLS port).
    pub primary_port: u16,
    /// `sentinel down-after-milliseconds`.
    pub down_after_ms: u64,
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    tls_port: Option<u16>,
    options: Options,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Persistence::None)
    }

    /// A server with the given persistence. Panics (with what to do) when
    /// `redis-server` is missing or does not come up within 10 s.
    pub fn start_with(persistence: Persistence) -> RedisServer {
        RedisServer::start_opts(Options { persistence, ..Options::default() })
    }

    /// A server (or Sentinel) as `options` say; panics like [`start_with`](Self::start_with).
    pub fn start_opts(options: Options) -> RedisServer {
        let mut dir = tempfile::Builder::new().prefix("stile-redis-").tempdir().expect("temp dir for redis-server");
        // The port is free when asked; if another process takes it meanwhile,
        // the server fails to bind and the next port is tried.
        for _ in 0..5 {
            let port = free_port();
            let tls_port = options.tls.as_ref().map(|_| free_port());
            let mut server = RedisServer { child: None, port, tls_port, options: options.clone(), dir };
            if server.spawn() {
                return server;
            }
            dir = server.take_dir();
        }
        panic!("redis-server did not start on any of 5 free ports; see its log in the temp dir");
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>/0`; panics without TLS.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.tls_port.expect("a server started with TLS"))
    }

    /// The TLS port; panics without TLS.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("a server started with TLS")
    }

    /// The (plain) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (AOF, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL, then wait for the process: no shutdown save, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart on port {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one command with arguments and returns the raw RESP reply
    /// (for assertions that must not go through the code under test).
    pub fn command(&self, args: &[&str]) -> String {
        command_at(self.port, args)
    }

    fn spawn(&mut self) -> bool {
        let dir = self.dir.path().to_path_buf();
        let mut cmd = Command::new(binary());
        if let Some(w) = &self.options.sentinel {
            // Sentinel rewrites its configuration file: it must be its own.
            let conf = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                 sentinel monitor {m} 127.0.0.1 {p} 1\nsentinel down-after-milliseconds {m} {d}\n\
                 sentinel failover-timeout {m} 10000\nsentinel parallel-syncs {m} 1\n",
                port = self.port,
                dir = dir.display(),
                log = dir.join("sentinel.log").display(),
                m = w.master,
                p = w.primary_port,
                d = w.down_after_ms,
            );
            let mut text = text;
            if let (Some(tls), Some(port)) = (&self.options.tls, self.tls_port) {
                text.push_str(&format!(
                    "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                     tls-auth-clients {}\ntls-replication yes\n",
                    tls.cert.display(),
                    tls.key.display(),
                    tls.ca.display(),
                    if tls.auth_clients { "yes" } else { "no" },
                ));
            }
            std::fs::write(&conf, text).expect("write sentinel.conf");
            cmd.arg(&conf).arg("--sentinel");
            return self.run(cmd);
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .args(["--save", ""]);
        match self.options.persistence {
            Persistence::None => cmd.args(["--appendonly", "no"]),
            Persistence::AofAlways => cmd.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        if let (Some(tls), Some(port)) = (&self.options.tls, self.tls_port) {
            cmd.arg("--tls-port").arg(port.to_string());
            cmd.arg("--tls-cert-file").arg(&tls.cert).arg("--tls-key-file").arg(&tls.key);
            cmd.arg("--tls-ca-cert-file").arg(&tls.ca);
            cmd.args(["--tls-auth-clients", if tls.auth_clients { "yes" } else { "no" }]);
            cmd.args(["--tls-replication", "yes"]);
        }
        if let Some(primary) = self.options.replica_of {
            cmd.args(["--replicaof", "127.0.0.1"]).arg(primary.to_string());
        }
        self.run(cmd)
    }

    fn run(&mut self, mut cmd: Command) -> bool {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it with scripts/install-deps"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        stream.set_read_timeout(Some(Duration::from_millis(500))).ok();
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        // `-LOADING` while the AOF is replayed: not ready yet.
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-server` from `PATH`.
fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("redis-server")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("redis-server is not on PATH; install it with scripts/install-deps"))
}

/// One command to the server (or Sentinel) on `port`; the raw RESP reply.
pub fn command_at(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis-server");
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).expect("write to redis-server");
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
