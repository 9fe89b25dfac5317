//! Child processes and bounded waiting: where the `stile` binary is, starting it
//! with its output in a log file, signals, and polling with a deadline (every wait
//! in the end-to-end tests is bounded; a timeout panics with what was awaited).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `stile` binary under test: `NEXTEST_BIN_EXE_stile` when nextest set it,
/// else `stile` in the target directory that holds the running test binary
/// (`target/debug/deps/<test>` → `target/debug/stile`), where cargo builds it
/// before the stile-cli integration tests.
pub fn stile_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXTEST_BIN_EXE_stile") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().map(|d| if d.ends_with("deps") { d.parent().unwrap_or(d) } else { d }).unwrap_or(&exe);
    let bin = dir.join(format!("stile{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} does not exist: build it (cargo build -p stile-cli)", bin.display());
    bin
}

/// Starts `stile SUBCOMMAND --config CONFIG EXTRA…` (through `wrapper`, e.g.
/// `prlimit --fsize=N --`, which must `exec` it) with `RUST_LOG=info`, stdin
/// closed, stdout and stderr into `log`.
pub fn spawn_stile(subcommand: &str, config: &Path, extra: &[&str], log: std::fs::File, wrapper: &[&str]) -> Child {
    let stile = stile_binary();
    let mut cmd = match wrapper.split_first() {
        None => Command::new(&stile),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&stile);
            c
        }
    };
    cmd.args([subcommand, "--config"])
        .arg(config)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("a second handle on the log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("stile starts")
}

/// Sends `sig` (a name such as `TERM`, `HUP`, `STOP`) to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit` with `what`.
pub fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 20 ms until it returns true (then true) or `limit` passes (then false).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Waits for `child` to exit; kills it and panics (naming `what`) after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
