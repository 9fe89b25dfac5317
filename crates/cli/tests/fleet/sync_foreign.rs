//! Foreign keys over the push path, real processes: a control plane and an
//! edge in sync mode with a `[[foreign]]` entry for Bunny links (signed with
//! `stile_foreign::bunny::sign`: Bunny publishes no generator on a registry).
//! Before the key is added the link is denied `unknown_key`; after
//! `stile keys add-foreign` it is admitted (200 from the origin), also after
//! an edge restart with the control plane down (the edge's cache holds the
//! key); after `stile keys rm-foreign` it is denied `unknown_key` again. Bad
//! key material is refused with a clear error and changes nothing; the key
//! material is in no log, no listing and no audit record.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stile_tests::fleet::*;
use stile_tests::net::free_port;
use stile_tests::process::{stile_binary, until};
use stile_tests::token::now;

/// Distinctive, so that a leak is found by a plain search.
const BUNNY_KEY: &str = "bunny-zone-key-7c1d9e2f-never-logged";
/// An Akamai key in hex, given on stdin.
const AKAMAI_KEY: &str = "5e7a9c1b3d5f7e9a2c4b6d8f0a1c3e5f";
const SEG: &str = "/vod/abc/seg.ts";

const FOREIGN: &str = "\n[[foreign]]\nformat = \"bunny\"\npath_prefixes = [\"/vod/\"]\n";

/// Runs the `stile` client with the admin key, `stdin` on its standard input;
/// the exit code and stdout + stderr.
fn stile(control: &Control, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(stile_binary())
        .args(args)
        .args(["--server", &control.url(), "--api-key", ADMIN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stile");
    // A command that reads no stdin may have exited already: a closed pipe is not an error here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn reason(edge: &SyncEdge, target: &str) -> (u16, Option<String>) {
    let r = edge.get(target);
    (r.status, r.header("x-stile-reason").map(str::to_owned))
}

fn denied(why: &str) -> (u16, Option<String>) {
    (403, Some(why.to_owned()))
}

#[test]
fn foreign_keys_reach_a_synced_edge_and_leave_it() {
    let (_content, origin) = content();
    let cp_dir = tempfile::tempdir().unwrap();
    let mut control = Control::start_on(cp_dir.path(), free_port());
    let ops = control.ops();
    let mut edge = SyncEdge::spawn_with("edge-1", &origin, &[control.url()], "", FOREIGN);
    edge.wait_ready();
    ops.wait_converged(1);
    let mut outputs = String::new();

    let claims = stile_foreign::bunny::Claims {
        path: SEG,
        expires: now() + 3600,
        token_path: Some("/vod/abc/"),
        ..Default::default()
    };
    let link = stile_foreign::bunny::sign(BUNNY_KEY.as_bytes(), &claims);
    assert_eq!(reason(&edge, &link), denied("unknown_key"), "{}", edge.log());

    // Bad material: refused, named, nothing stored.
    let (code, out) = stile(&control, &["keys", "add-foreign", "--format", "akamai", "--name", "primary"], "not-hex");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("akamai key: key \"primary\" is not valid hex"), "{out}");
    let (code, out) =
        stile(&control, &["keys", "add-foreign", "--format", "media-cdn", "--name", "ed"], "ed25519:AAAA");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not an Ed25519 public key"), "{out}");
    let (code, out) = stile(&control, &["keys", "add-foreign", "--format", "bunny", "--name", "has space"], "k");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("key name \"has space\" must be"), "{out}");
    let (code, out) = stile(&control, &["keys", "ls-foreign", "--json"], "");
    assert_eq!(
        (code, serde_json::from_str::<serde_json::Value>(&out).unwrap()["keys"].as_array().unwrap().len()),
        (0, 0)
    );
    let version = ops.list().current_version;

    // Added from a file: the edge admits the link within the push path's usual time.
    let key_file = cp_dir.path().join("bunny.key");
    std::fs::write(&key_file, format!("{BUNNY_KEY}\n")).unwrap();
    let key_path = key_file.to_str().unwrap();
    let args =
        ["keys", "add-foreign", "--format", "bunny", "--name", "zone", "--key-file", key_path, "--reason", "move"];
    let (code, out) = stile(&control, &args, "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("bunny key \"zone\" added (version {})", version + 1)), "{out}");
    outputs.push_str(&out);
    let added = Instant::now();
    until(Duration::from_secs(10), "the edge admits the Bunny link", || {
        let r = edge.get(&link);
        (r.status == 200).then_some(())
    });
    eprintln!("foreign key added -> link admitted at the edge: {} ms", added.elapsed().as_millis());
    // A second key, on stdin; a name taken is refused.
    let (code, out) = stile(&control, &["keys", "add-foreign", "--format", "akamai", "--name", "primary"], AKAMAI_KEY);
    assert_eq!(code, 0, "{out}");
    outputs.push_str(&out);
    let (code, out) = stile(&control, &args, "");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bunny key \"zone\" exists; remove it first"), "{out}");

    // Listed without their material.
    let (code, out) = stile(&control, &["keys", "ls-foreign"], "");
    assert_eq!(code, 0, "{out}");
    let rows: Vec<Vec<&str>> = out.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(), [("akamai", "primary"), ("bunny", "zone")]);
    assert!(rows.iter().all(|r| r.last() == Some(&"admin")), "{out}");
    outputs.push_str(&out);
    let (code, out) = stile(&control, &["keys", "ls-foreign", "--json"], "");
    assert_eq!(code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["keys"][1]["name"], "zone");
    assert_eq!(json["keys"][1]["created_by"], "admin");
    outputs.push_str(&out);

    // The edge's cache holds the key: restarted while the control plane is down, it still admits the link.
    until(Duration::from_secs(10), "the cache file with both foreign keys", || {
        // JSON, or the binary form with a JSON head: searched as bytes.
        let bytes = std::fs::read(edge.dir.path().join("cache.json")).ok()?;
        let holds = |key: &str| bytes.windows(key.len()).any(|w| w == key.as_bytes());
        (holds(BUNNY_KEY) && holds(AKAMAI_KEY)).then_some(())
    });
    control.stop();
    edge.restart();
    edge.wait_ready();
    assert_eq!(reason(&edge, &link), (200, None), "{}", edge.log());
    control.restart();
    ops.wait_converged(1);

    // Removed: denied `unknown_key` again; a second removal is NOT_FOUND.
    let rm = ["keys", "rm-foreign", "--format", "bunny", "--name", "zone", "--reason", "done"];
    let (code, out) = stile(&control, &rm, "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("bunny key \"zone\" removed"), "{out}");
    until(Duration::from_secs(10), "the edge denies the Bunny link again", || {
        (reason(&edge, &link) == denied("unknown_key")).then_some(())
    });
    let (code, out) = stile(&control, &rm, "");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not exist"), "{out}");

    // Audited: format and name, never the material.
    let (code, out) = stile(&control, &["audit", "tail", "--json"], "");
    assert_eq!(code, 0, "{out}");
    for target in ["foreign:bunny/zone", "foreign:akamai/primary"] {
        assert!(out.contains(target), "{out}");
    }
    assert!(out.contains("foreign_key_remove"), "{out}");
    outputs.push_str(&out);

    // The material is in no log, no listing, no audit record.
    for (what, text) in [("control log", control.log()), ("edge log", edge.log()), ("CLI output", outputs)] {
        for key in [BUNNY_KEY, AKAMAI_KEY] {
            assert!(!text.contains(key), "{what} holds a foreign key:\n{text}");
        }
    }
}
