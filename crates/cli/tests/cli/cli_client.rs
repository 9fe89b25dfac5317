//! The client commands through the real binary against `stile dev`: documented
//! exit codes (0 ok, 1 unreachable, 2 refused, 3 auth, 4 explain denies, 64
//! usage), `--json` documents, batch minting to a file, and the precedence of
//! flags, environment and configuration file.

use stile_tests::dev::Dev;
use stile_tests::dev::stile;

#[test]
fn commands_exit_codes_and_json() {
    let dev = Dev::start(&["--quiet"]);
    let s = dev.server.as_str();

    // mint: JSON link with every transport; the operator may not mint (3); no key is usage (64).
    let m = stile(&["mint", "sample", "--server", s, "--api-key", &dev.minter, "--subject", "v9", "--json"], &[]);
    assert_eq!(m.code, 0, "{m:?}");
    let link = m.json();
    assert!(link["query_url"].as_str().unwrap().contains("?st="), "{link}");
    assert!(link["path_url"].as_str().unwrap().contains("/_st/"), "{link}");
    assert_eq!(link["cookie"]["name"], "stile");
    let denied = dev.stile(&["mint", "sample"]);
    assert_eq!(denied.code, 3, "{denied:?}");
    assert!(denied.stderr.contains("permission denied") && denied.stderr.contains("hint:"), "{}", denied.stderr);
    let nokey = stile(&["mint", "sample", "--server", s], &[]);
    assert_eq!(nokey.code, 64, "{nokey:?}");
    assert!(nokey.stderr.contains("STILE_API_KEY"), "{}", nokey.stderr);
    let badkey = stile(&["keys", "ls", "--server", s, "--api-key", "stk_nope"], &[]);
    assert_eq!(badkey.code, 3, "{badkey:?}");

    // Refusals are 2, with the server's message.
    let nf = dev.stile(&["assets", "get", "nope"]);
    assert_eq!(nf.code, 2, "{nf:?}");
    assert!(nf.stderr.contains("NOT_FOUND"), "{}", nf.stderr);
    let unpublished = dev.stile(&["assets", "put", "draft1", "--path", "/vod/d/", "--entry", "m.m3u8"]);
    assert_eq!(unpublished.code, 0, "{unpublished:?}");
    let gate = stile(&["mint", "draft1", "--server", s, "--api-key", &dev.minter], &[]);
    assert_eq!(gate.code, 2, "{gate:?}");
    assert!(gate.stderr.contains("FAILED_PRECONDITION"), "{}", gate.stderr);

    // Unreachable is 1 with advice; bad flags are 64.
    let down = stile(&["keys", "ls", "--server", "http://127.0.0.1:1", "--api-key", "k"], &[]);
    assert_eq!(down.code, 1, "{down:?}");
    assert!(down.stderr.contains("cannot reach the control plane") && down.stderr.contains("stile dev"), "{down:?}");
    assert_eq!(stile(&["revoke", "--reason", "x"], &[]).code, 64, "no target");
    assert_eq!(stile(&["keys", "frobnicate"], &[]).code, 64);
    assert_eq!(stile(&["--help"], &[]).code, 0);

    // Listings as JSON.
    let keys = dev.stile(&["keys", "ls", "--json"]).json();
    assert_eq!(keys["keys"][0]["state"], "ACTIVE", "{keys}");
    let rot = dev.stile(&["keys", "rotate", "--reason", "test", "--json"]);
    assert_eq!(rot.code, 0, "{rot:?}");
    assert_eq!(dev.stile(&["keys", "ls", "--json"]).json()["keys"].as_array().unwrap().len(), 2);
    let assets = dev.stile(&["assets", "ls", "--state", "published", "--json"]).json();
    assert_eq!(assets["assets"][0]["id"], "sample", "{assets}");
    assert_eq!(dev.stile(&["edges", "ls", "--json"]).code, 0);
    let table = dev.stile(&["assets", "ls"]);
    assert!(table.stdout.starts_with("ID  ") && table.stdout.contains("PUBLISHED"), "{}", table.stdout);

    // Revocations of every kind, listed.
    for args in [
        vec!["--token-id", "00000000000000aa"],
        vec!["--link", link["query_url"].as_str().unwrap()],
        vec!["--subject", "v9", "--before", "now"],
        vec!["--prefix", "/vod/sample/", "--before", "-1m"],
    ] {
        let mut a = vec!["revoke", "--reason", "test"];
        a.extend(args.iter().copied());
        let r = dev.stile(&a);
        assert_eq!(r.code, 0, "{a:?}: {r:?}");
    }
    let revs = dev.stile(&["revocations", "ls", "--json"]).json();
    assert_eq!(revs["revocations"].as_array().unwrap().len(), 4, "{revs}");
    // (the --wait revocation below makes five)
    assert_eq!(revs["revocations"][1]["target"]["token_id"], link["token_id"]);
    let waited = dev.stile(&[
        "revoke",
        "--token-id",
        "00000000000000bb",
        "--reason",
        "w",
        "--wait",
        "--deadline",
        "1s",
        "--json",
    ]);
    // The dev edge may or may not have joined over sync by now: with it, the
    // revocation is confirmed (0); without it, "confirmed by 0 edges" is its own status (5).
    let doc = waited.json();
    match waited.code {
        0 => assert_eq!(doc["confirmation"]["verdict"], "CONFIRMED", "{doc}"),
        5 => {
            assert_eq!(doc["confirmation"]["verdict"], "NONE", "{doc}");
            assert_eq!(doc["confirmation"]["confirmed"], 0, "{doc}");
        }
        other => panic!("exit {other}: {waited:?}"),
    }
    assert_eq!(dev.stile(&["revoke", "--token-id", "00000000000000bb", "--reason", "w", "--deadline", "1s"]).code, 64);
    let retire = dev.stile(&["revoke", "--key-id", "1", "--reason", "retire old key"]);
    assert_eq!(retire.code, 0, "{retire:?}");
    let status = dev.stile(&["revocations", "status", "--json"]).json();
    assert_eq!(status["committed"], true, "{status}");

    // The audit log shows who did what.
    let audit = dev.stile(&["audit", "tail", "--action", "revoke", "--json"]).json();
    let events = audit["events"].as_array().unwrap();
    assert!(events.len() >= 4 && events.iter().all(|e| e["actor"] == "dev-operator"), "{audit}");

    // Admin: API keys.
    let admin = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--server", s, "--api-key", dev.admin.as_str()]);
        stile(&a, &[])
    };
    let created = admin(&["api-keys", "create", "backend-1", "--role", "minter", "--json"]);
    assert_eq!(created.code, 0, "{created:?}");
    assert!(created.json()["key"].as_str().unwrap().starts_with("stk_"));
    assert!(admin(&["api-keys", "ls"]).stdout.contains("backend-1"));
    assert_eq!(admin(&["api-keys", "create", "backend-1", "--role", "minter"]).code, 2, "name taken");
    assert_eq!(admin(&["api-keys", "delete", "backend-1"]).code, 0);
    assert_eq!(dev.stile(&["api-keys", "ls"]).code, 3, "operators cannot manage keys");
}

#[test]
fn revoke_batch_from_a_file_is_one_call() {
    let dev = Dev::start(&["--quiet"]);
    let file = dev.dir.path().join("leaked.txt");
    let lines = "# leaked on a forum\n00000000000000a1\n00000000000000A2\n\nsubject:viewer-7\nprefix:/vod/sample/\npurge:/vod/old/\n";
    std::fs::write(&file, lines).unwrap();
    let f = file.to_str().unwrap();
    let r = dev.stile(&["revoke", "--batch", f, "--reason", "incident 42", "--before", "now", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let doc = r.json();
    assert_eq!(doc["count"], 5, "{doc}");
    let (first, last) = (doc["first_version"].as_u64().unwrap(), doc["last_version"].as_u64().unwrap());
    assert_eq!(last - first, 4, "{doc}");
    let revs = dev.stile(&["revocations", "ls", "--json"]).json();
    let targets: Vec<_> = revs["revocations"].as_array().unwrap().iter().map(|r| r["target"].clone()).collect();
    assert_eq!(targets[1]["token_id"], "00000000000000a2", "lower-cased: {revs}");
    assert_eq!((targets[4]["prefix"].as_str(), targets[4]["purge"].as_bool()), (Some("/vod/old/"), Some(true)));
    let audit = dev.stile(&["audit", "tail", "--action", "revoke_batch", "--json"]).json();
    assert_eq!(audit["events"][0]["count"], 5, "{audit}");

    // A line the client cannot read is usage (64) naming it; a target the server refuses is 2 naming its index.
    std::fs::write(&file, "00000000000000a1\nsubjekt:x\n").unwrap();
    let bad = dev.stile(&["revoke", "--batch", f, "--reason", "r"]);
    assert_eq!(bad.code, 64, "{bad:?}");
    assert!(bad.stderr.contains("line 2"), "{}", bad.stderr);
    std::fs::write(&file, format!("00000000000000a1\nsubject:{}\n", "v".repeat(65))).unwrap();
    let refused = dev.stile(&["revoke", "--batch", f, "--reason", "r"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("targets[1]"), "{}", refused.stderr);
    assert_eq!(dev.stile(&["revocations", "ls", "--json"]).json()["revocations"].as_array().unwrap().len(), 5);
}

#[test]
fn batch_minting_writes_one_line_per_link() {
    let dev = Dev::start(&["--quiet"]);
    let out = dev.dir.path().join("links.txt");
    let out_s = out.to_str().unwrap();
    let key = dev.minter.as_str();
    let r = stile(
        &[
            "mint",
            "sample",
            "--server",
            &dev.server,
            "--api-key",
            key,
            "--count",
            "2500",
            "--subject",
            "v-{n}",
            "--out",
            out_s,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("minted 2500 links to"), "{}", r.stderr);
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2500);
    assert!(lines.iter().all(|l| l.starts_with("http://127.0.0.1:") && l.contains("?st=")));

    // JSON lines from a batch file; each names its subject.
    let batch = dev.dir.path().join("batch.jsonl");
    std::fs::write(
        &batch,
        "{\"subject\":\"a\",\"channel\":\"email\"}\n# comment\n{\"asset_id\":\"sample\",\"subject\":\"b\"}\n",
    )
    .unwrap();
    let r = stile(
        &["mint", "sample", "--server", &dev.server, "--api-key", key, "--batch", batch.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let links: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(links.len(), 2);
    let ex = dev.stile(&["explain", "--json", links[0]["query_url"].as_str().unwrap()]).json();
    assert_eq!(ex["token"]["subject"], "a");
    assert_eq!(ex["token"]["channel"], "email");

    // A bad line is a usage error naming the line.
    std::fs::write(&batch, "{\"subjct\":\"a\"}\n").unwrap();
    let r =
        stile(&["mint", "sample", "--server", &dev.server, "--api-key", key, "--batch", batch.to_str().unwrap()], &[]);
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("line 1"), "{}", r.stderr);
}

#[test]
fn settings_precedence_flags_env_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cli.toml");
    std::fs::write(&file, "server = \"http://file:1\"\napi_key = \"stk_file\"\noutput = \"json\"\n").unwrap();
    let f = file.to_str().unwrap();

    let show = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["config"];
        a.extend_from_slice(args);
        let r = stile(&a, env);
        assert_eq!(r.code, 0, "{r:?}");
        r
    };
    // File only (output = json from the file).
    let j = show(&[], &[("STILE_CONFIG", f)]).json();
    assert_eq!((j["server"].as_str(), j["server_source"].as_str()), (Some("http://file:1"), Some("file")));
    assert!(j["api_key"].as_str().unwrap().starts_with("stk_file"), "{j}");
    // Environment beats the file.
    let j = show(&[], &[("STILE_CONFIG", f), ("STILE_SERVER", "http://env:2")]).json();
    assert_eq!((j["server"].as_str(), j["server_source"].as_str()), (Some("http://env:2"), Some("environment")));
    // Flags beat both.
    let j = show(&["--server", "http://flag:3", "--config", f], &[("STILE_SERVER", "http://env:2")]).json();
    assert_eq!((j["server"].as_str(), j["server_source"].as_str()), (Some("http://flag:3"), Some("flag")));
    // Defaults, as a table; the key is never shown whole.
    let t = show(&[], &[]);
    assert!(t.stdout.contains("http://127.0.0.1:7400") && t.stdout.contains("default"), "{}", t.stdout);
    let t = show(&["--api-key", "stk_0123456789abcdefghij"], &[]);
    assert!(!t.stdout.contains("stk_0123456789abcdefghij"), "{}", t.stdout);
    // A missing or broken file named explicitly is a usage error.
    assert_eq!(stile(&["config", "--config", "/nonexistent/cli.toml"], &[]).code, 64);
    std::fs::write(&file, "sever = 1\n").unwrap();
    let r = stile(&["config"], &[("STILE_CONFIG", f)]);
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.stderr.contains("unknown field"), "{}", r.stderr);
}

#[test]
fn explain_works_offline_with_a_key_file() {
    let dev = Dev::start(&["--quiet"]);
    let state = dev.dir.path().join("state.json");
    // No server, no key file: passes as far as checked, says what it could not check.
    let off = stile(&["explain", "--offline", &dev.query_url], &[]);
    assert_eq!(off.code, 0, "{off:?}");
    assert!(off.stdout.contains("not checked: key, signature, revoked"), "{}", off.stdout);
    // Scope mismatch for a given path, and expiry for a given edge clock.
    let scope = stile(&["explain", "--offline", "--path", "/vod/other/x.ts", &dev.query_url], &[]);
    assert_eq!(scope.code, 4, "{scope:?}");
    assert!(scope.stdout.contains("DENY scope"), "{}", scope.stdout);
    let late = stile(&["explain", "--offline", "--skew", "+2h", &dev.query_url], &[]);
    assert_eq!(late.code, 4, "{late:?}");
    assert!(late.stdout.contains("DENY expired") && late.stdout.contains("2 h ahead"), "{}", late.stdout);
    // Not a token at all.
    let junk = stile(&["explain", "--offline", "http://edge/vod/a.ts?st=not-a-token"], &[]);
    assert_eq!(junk.code, 4);
    assert!(junk.stdout.contains("DENY malformed"), "{}", junk.stdout);
    // A state file with a different key: unknown_key; with a tampered token: bad_signature.
    std::fs::write(&state, r#"{"version":1,"keys":[{"id":9,"secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#)
        .unwrap();
    let k = stile(&["explain", "--offline", "--key-file", state.to_str().unwrap(), &dev.query_url], &[]);
    assert_eq!(k.code, 4, "{k:?}");
    assert!(k.stdout.contains("DENY unknown_key"), "{}", k.stdout);
    std::fs::write(&state, r#"{"version":1,"keys":[{"id":1,"secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#)
        .unwrap();
    let b = stile(&["explain", "--offline", "--key-file", state.to_str().unwrap(), &dev.query_url], &[]);
    assert!(b.stdout.contains("DENY bad_signature"), "{}", b.stdout);
    // Unreachable control plane: still explains, says so.
    let un = stile(&["explain", "--server", "http://127.0.0.1:1", "--api-key", "k", &dev.query_url], &[]);
    assert_eq!(un.code, 0, "{un:?}");
    assert!(un.stdout.contains("not reached"), "{}", un.stdout);
}

/// `stile explain --format`: another vendor's link, through the real binary, with
/// Bunny's published test vector (token-tester.b-cdn.net, key "SecurityKey",
/// expiring at 1598024587) judged at a time before and after its expiry.
#[test]
fn explain_judges_a_vendors_link_offline() {
    const URL: &str = "https://token-tester.b-cdn.net/300kb.jpg?token=HS256-o10JRWlsAItyAsdKS6jJKjabHN4FrFsplDHPV1idcX4&expires=1598024587";
    let key = "main=SecurityKey";
    let ok = stile(&["explain", "--format", "bunny", "--foreign-key", key, "--at", "1598024000", URL], &[]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("PASS: the bunny link verifies with key main"), "{}", ok.stdout);
    assert!(ok.stdout.contains("upstream    /300kb.jpg "), "the origin's target has no token: {}", ok.stdout);
    assert!(!ok.stdout.contains("o10JRWlsAItyAsdKS6jJKjabHN4FrFsplDHPV1idcX4"), "the token is never printed whole");

    let late = stile(&["explain", "--json", "--format", "bunny", "--foreign-key", key, "--at", "1598024600", URL], &[]);
    assert_eq!(late.code, 4, "{late:?}");
    let v: serde_json::Value = serde_json::from_str(&late.stdout).unwrap();
    assert_eq!((v["verdict"]["reason"].as_str(), v["verdict"]["http_status"].as_u64()), (Some("expired"), Some(403)));

    let forged =
        stile(&["explain", "--format", "bunny", "--foreign-key", "main=NotTheKey", "--at", "1598024000", URL], &[]);
    assert_eq!(forged.code, 4, "{forged:?}");
    assert!(forged.stdout.contains("DENY bad_signature (403)"), "{}", forged.stdout);

    let unknown = stile(&["explain", "--format", "fastly", "--foreign-key", key, URL], &[]);
    assert_eq!(unknown.code, 64, "{unknown:?}");
    assert!(
        unknown.stderr.contains("expected stile or one of akamai, cloud-cdn, media-cdn, bunny, nginx-secure-link"),
        "{}",
        unknown.stderr
    );
    let orphan = stile(&["explain", "--foreign-key", key, URL], &[]);
    assert_eq!(orphan.code, 64, "--foreign-key without --format is a usage error: {orphan:?}");

    // One key as `--key`, named by --key-name or not at all.
    let one =
        stile(&["explain", "--offline", "--format", "bunny", "--key", "SecurityKey", "--at", "1598024000", URL], &[]);
    assert_eq!(one.code, 0, "{one:?}");
    let named = ["explain", "--format", "bunny", "--key", "NotTheKey", "--key-name", "main", "--at", "1598024000", URL];
    assert_eq!(stile(&named, &[]).code, 4);
}

/// `stile explain --format stile --key`: a Stile link judged with one key given on the
/// command line (base64url as state files write it, or hex), exit 0 / 4.
#[test]
fn explain_takes_one_stile_key_on_the_command_line() {
    use base64::Engine as _;
    let token = stile_tests::token::mint(|_| {});
    let url = format!("https://edge.example/vod/abc/master.m3u8?st={token}");
    let secret = stile_tests::token::SECRET;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    for key in [&b64, &hex] {
        let ok = stile(&["explain", "--offline", "--format", "stile", "--key", key, &url], &[]);
        assert_eq!(ok.code, 0, "{ok:?}");
        assert!(ok.stdout.contains("the MAC verifies with key 1 from --key"), "{}", ok.stdout);
    }
    let forged = stile(&["explain", "--offline", "--format", "stile", "--key", &"00".repeat(32), &url], &[]);
    assert_eq!(forged.code, 4, "{forged:?}");
    assert!(forged.stdout.contains("DENY bad_signature (403)"), "{}", forged.stdout);
    let short = stile(&["explain", "--offline", "--format", "stile", "--key", "AAAA", &url], &[]);
    assert_eq!(short.code, 64, "{short:?}");
    assert!(!forged.stdout.contains(&token) && !forged.stderr.contains(&b64), "neither the token nor the key printed");
}
