//! Test support for `stile dev` and the client commands: a real `stile dev`
//! process on free ports (killed on drop), what its banner printed, and a
//! runner for client commands with a clean environment.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::{signal, stile_binary, wait_bounded};

/// A running `stile dev`.
#[derive(Debug)]
pub struct Dev {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub base: u16,
    /// The control plane's URL, as the banner prints it (`https://` with `--tls`).
    pub server: String,
    /// With `--tls`: the throwaway CA the banner names, which signed the edge's and
    /// the control plane's certificates.
    pub ca_file: Option<String>,
    pub edge_port: u16,
    pub query_url: String,
    pub path_url: String,
    pub cookie_url: String,
    /// `stile=<token>`.
    pub cookie: String,
    pub token_id: String,
    pub operator: String,
    pub minter: String,
    pub admin: String,
    pub banner: String,
}

/// Five consecutive free ports (the edge's cannot be bound to port 0).
fn free_base() -> u16 {
    let mut seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    loop {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let base = 20_000 + (seed >> 33) as u16 % 40_000;
        if (0..5).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

impl Dev {
    /// Starts `stile dev` and waits for its banner; `extra` are more arguments.
    pub fn start(extra: &[&str]) -> Dev {
        for attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let base = free_base();
            let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
            let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
            let child = Command::new(stile_binary())
                .args(["dev", "--port-base", &base.to_string()])
                .args(extra)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap();
            let mut dev = Dev {
                child,
                dir,
                base,
                server: String::new(),
                ca_file: None,
                edge_port: base + 1,
                query_url: String::new(),
                path_url: String::new(),
                cookie_url: String::new(),
                cookie: String::new(),
                token_id: String::new(),
                operator: String::new(),
                minter: String::new(),
                admin: String::new(),
                banner: String::new(),
            };
            match dev.wait_banner() {
                Ok(()) => return dev,
                Err(e) if attempt < 2 && e.contains("cannot listen") => continue, // a port race: retry
                Err(e) => panic!("stile dev did not start: {e}"),
            }
        }
        unreachable!()
    }

    fn wait_banner(&mut self) -> Result<(), String> {
        // The first start on a machine generates the sample stream with ffmpeg (cached).
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = self.stdout();
            if out.contains("Ctrl-C stops everything") {
                self.banner = out;
                self.parse();
                return Ok(());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}: {}{}", self.stdout(), self.stderr()));
            }
            if Instant::now() > deadline {
                return Err(format!("no banner within 180 s: {}{}", self.stdout(), self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn parse(&mut self) {
        let field = |label: &str| -> String {
            self.banner
                .lines()
                .find_map(|l| {
                    l.trim_start().strip_prefix(label).map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
                })
                .unwrap_or_else(|| panic!("no {label:?} in the banner:\n{}", self.banner))
        };
        self.server = field("control plane ");
        self.ca_file = self
            .banner
            .lines()
            .find_map(|l| l.strip_prefix("TLS: a throwaway CA made for this dev run: "))
            .map(|ca| ca.trim().to_owned());
        self.query_url = field("query ");
        self.path_url = field("path ");
        self.cookie_url = field("cookie ");
        self.operator = field("operator ");
        self.minter = field("minter ");
        self.admin = field("admin ");
        let line = self.banner.lines().find(|l| l.trim_start().starts_with("cookie ")).unwrap();
        self.cookie = line.split("Cookie: ").nth(1).unwrap().trim().to_owned();
        self.token_id = self.banner.split("token id ").nth(1).unwrap()[..16].to_owned();
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// `stile dev`'s log file (`stile-dev.log` in the state directory its banner names):
    /// every event at `info`, the edge's `session.ended` among them.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir().join("stile-dev.log")).unwrap_or_default()
    }

    /// The state directory the banner names (the control plane's store, the edge's
    /// `edge-state.json`, the log file).
    pub fn state_dir(&self) -> PathBuf {
        let state = self.banner.split("state in ").nth(1).and_then(|r| r.split_whitespace().next());
        PathBuf::from(state.unwrap_or_else(|| panic!("no state directory in the banner:\n{}", self.banner)))
    }

    /// The target (path and query) of one of the printed URLs.
    pub fn target(url: &str) -> String {
        let rest = url.split("://").nth(1).unwrap();
        rest[rest.find('/').unwrap()..].to_owned()
    }

    /// Runs a client command against this dev instance with the operator key (and,
    /// with `--tls`, the CA).
    pub fn stile(&self, args: &[&str]) -> Run {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--server", &self.server, "--api-key", &self.operator]);
        if let Some(ca) = &self.ca_file {
            all.extend_from_slice(&["--ca-file", ca]);
        }
        stile(&all, &[])
    }

    /// The banner's `stile` command that starts with `prefix` (e.g. `stile revoke`),
    /// split into its arguments as a shell would (single quotes; the trailing
    /// `# comment` dropped), without the leading `stile`.
    pub fn printed_command(&self, prefix: &str) -> Vec<String> {
        let line = self
            .banner
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} command in the banner:\n{}", self.banner));
        let (mut words, mut word, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
        for c in line.chars() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    started = true;
                }
                '#' if !quoted && !started => break,
                c if c.is_whitespace() && !quoted => {
                    if started {
                        words.push(std::mem::take(&mut word));
                    }
                    started = false;
                }
                c => {
                    word.push(c);
                    started = true;
                }
            }
        }
        if started {
            words.push(word);
        }
        assert_eq!(words.first().map(String::as_str), Some("stile"), "{line}");
        words.split_off(1)
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        signal(self.child.id(), "INT");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "stile dev did not exit within 20 s of SIGINT: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `stile` client command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Runs `stile ARGS` with no `STILE_*` variables and no user configuration file,
/// plus `env`; bounded by a 60 s deadline.
pub fn stile(args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(stile_binary());
    cmd.args(args).stdin(Stdio::null()).env("HOME", home.path()).env("XDG_CONFIG_HOME", home.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("STILE_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out_path: PathBuf = home.path().join("out");
    let err_path: PathBuf = home.path().join("err");
    cmd.stdout(std::fs::File::create(&out_path).unwrap()).stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(60), &format!("stile {args:?}"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Run { code: status.code().unwrap_or(-1), stdout: read(&out_path), stderr: read(&err_path) }
}
