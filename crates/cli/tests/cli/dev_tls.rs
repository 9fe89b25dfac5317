//! The newcomer tour over HTTPS and HTTP/2: `stile dev --tls` makes a throwaway
//! CA, prints https:// links and the CA's path, and every printed link plays
//! with curl (`--cacert … --http2`) and ffmpeg (`-ca_file`). Its control plane
//! serves gRPC over TLS only: plaintext gRPC to it fails, the edge's sync stream
//! verifies it against the CA, and the printed `stile` commands (with
//! `--ca-file`) mint a link that plays and revoke one, which the edge then refuses.

use std::process::Command;
use std::time::Duration;
use stile_tests::dev::{Dev, stile};
use stile_tests::process::eventually;

fn curl(ca: &str, args: &[&str], url: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", ca, "--http2", "-D", "-", "-o", "/dev/stderr"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn dev_tls_tour_over_https_and_http2() {
    let mut dev = Dev::start(&["--tls"]);
    assert!(dev.query_url.starts_with(&format!("https://127.0.0.1:{}/", dev.edge_port)), "{}", dev.banner);
    let ca = dev
        .banner
        .lines()
        .find_map(|l| l.strip_prefix("TLS: a throwaway CA made for this dev run: "))
        .unwrap_or_else(|| panic!("no CA path in the banner:\n{}", dev.banner))
        .trim()
        .to_owned();
    assert!(std::path::Path::new(&ca).is_file(), "{ca}");
    assert!(dev.banner.contains(&format!("curl --cacert {ca} --http2")), "{}", dev.banner);

    // The query link over HTTP/2: the playlist, rewritten, with a Secure cookie.
    let (head, body) = curl(&ca, &[], &dev.query_url);
    assert!(head.starts_with("HTTP/2 200"), "{head}");
    assert!(body.contains("#EXTM3U") && body.contains("st="), "{body}");
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap_or_default();
    assert!(cookie.contains("; Secure"), "{head}");
    // The path link: the manifest answers with a redirect to the same target under a
    // playback session (docs/sessions.md), which then plays.
    let (head, _) = curl(&ca, &[], &dev.path_url);
    assert!(head.starts_with("HTTP/2 302"), "{head}");
    let location = head.lines().find_map(|l| l.strip_prefix("location: ")).unwrap_or_default();
    assert!(location.starts_with("/_st/") && location.contains('.'), "{head}");
    let (head, body) = curl(&ca, &["-L"], &dev.path_url);
    assert!(head.contains("HTTP/2 200"), "{head}");
    assert!(body.contains("#EXTM3U"), "{body}");
    // The cookie link.
    let (head, _) = curl(&ca, &["-H", &format!("Cookie: {}", dev.cookie)], &dev.cookie_url);
    assert!(head.starts_with("HTTP/2 200"), "{head}");

    // ffmpeg plays the stream over HTTPS, verifying the edge against the CA.
    stile_tests::media::ffmpeg_play(&dev.query_url, &["-tls_verify", "1", "-ca_file", &ca])
        .expect("the query link plays");
    stile_tests::media::ffmpeg_play(&dev.path_url, &["-tls_verify", "1", "-ca_file", &ca])
        .expect("the path link plays");

    // Plain HTTP is not served on the HTTPS port.
    assert!(stile_tests::net::get(dev.edge_port, &Dev::target(&dev.query_url), &[]).is_none());

    // The control plane is https:// and the printed commands trust the CA.
    assert_eq!(dev.server, format!("https://127.0.0.1:{}", dev.base), "{}", dev.banner);
    assert_eq!(dev.ca_file.as_deref(), Some(ca.as_str()));
    assert!(dev.banner.contains("gRPC over TLS; state in "), "{}", dev.banner);
    // Plaintext gRPC (HTTP/2 without TLS) to the control port gets no answer.
    let plain = format!("http://127.0.0.1:{}", dev.base);
    let r = stile(&["edges", "ls", "--server", &plain, "--api-key", &dev.operator], &[]);
    assert_ne!(r.code, 0, "plaintext gRPC answered: {r:?}");
    assert!(!r.stdout.contains("change log version"), "{r:?}");
    // The edge holds its sync stream over TLS, verified against the CA.
    let connected = eventually(Duration::from_secs(10), || {
        let e = dev.stile(&["edges", "ls", "--json"]).json();
        e["edges"].as_array().is_some_and(|a| a.len() == 1 && a[0]["edge_id"] == "dev")
    });
    assert!(connected, "{:?}", dev.stile(&["edges", "ls"]));

    // The printed `stile mint`, run as printed: a fresh link that plays.
    let mint = dev.printed_command("stile mint");
    assert!(mint.windows(2).any(|w| w[0] == "--ca-file" && w[1] == ca), "{mint:?}");
    let args: Vec<&str> = mint.iter().map(String::as_str).collect();
    let r = stile(&args, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let fresh = r.stdout.lines().find_map(|l| l.strip_prefix("query")).unwrap_or_default().trim().to_owned();
    assert!(fresh.starts_with(&format!("https://127.0.0.1:{}/", dev.edge_port)), "{r:?}");
    let (head, _) = curl(&ca, &[], &fresh);
    assert!(head.starts_with("HTTP/2 200"), "{head}");

    // The printed `stile revoke --wait`: through the TLS control plane, confirmed by the
    // edge over its TLS sync stream; the edge then refuses the link.
    let revoke = dev.printed_command("stile revoke");
    let args: Vec<&str> = revoke.iter().map(String::as_str).collect();
    let r = stile(&args, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(&format!("revoked token {}", dev.token_id)), "{}", r.stdout);
    assert!(r.stdout.contains("confirmed by all 1 expected edges"), "{}", r.stdout);
    let mut last = String::new();
    let refused = eventually(Duration::from_secs(5), || {
        last = curl(&ca, &[], &dev.query_url).0;
        last.starts_with("HTTP/2 403") && last.contains("x-stile-reason: revoked")
    });
    assert!(refused, "still admitted after revoke: {last}");
    // The printed `stile explain` says why.
    let explain = dev.printed_command("stile explain");
    let args: Vec<&str> = explain.iter().map(String::as_str).collect();
    let r = stile(&args, &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.lines().last().unwrap_or_default().starts_with("DENY revoked (403)"), "{}", r.stdout);
    // The fresh link, another token, still plays.
    let (head, _) = curl(&ca, &[], &fresh);
    assert!(head.starts_with("HTTP/2 200"), "{head}");

    let status = dev.interrupt();
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
}
