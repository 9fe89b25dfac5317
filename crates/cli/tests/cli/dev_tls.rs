//! The newcomer tour over HTTPS and HTTP/2: `stile dev --tls` makes a throwaway
//! CA, prints https:// links and the CA's path, and every printed link plays
//! with curl (`--cacert … --http2`) and ffmpeg (`-ca_file`).

use std::process::Command;
use stile_tests::dev::Dev;

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
        .find_map(|l| l.strip_prefix("TLS: a throwaway CA made for this dev edge: "))
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

    let status = dev.interrupt();
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
}
