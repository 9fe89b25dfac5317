//! The Redis store over TLS (`rediss://`) against a real `redis-server` with
//! `--tls-port`: minting and revoking through the gRPC API as the ACL user of
//! `deploy/redis.conf` with a client certificate (`tls-auth-clients yes`); a
//! server certificate from another CA, and a missing client certificate, are
//! refused with a clear error that carries no password; bad TLS settings fail
//! validation (what makes `stile control` exit 64) with the field's name.

mod common;

use common::{Ca, Plane, assert_status};
use stile_control::config::{Config, RedisConfig, StoreBackend};
use stile_control::store::{RedisStore, Store, StoreError};
use stile_tests::redis::{Options, RedisServer, Tls};
use tonic::Code;

const PASSWORD: &str = "CHANGE-ME";

/// A TLS Redis whose certificate `ca` signed, requiring client certificates
/// from `ca` when `auth_clients`, with the `stile` ACL user of deploy/redis.conf.
fn tls_redis(ca: &Ca, auth_clients: bool) -> RedisServer {
    let (cert, key) = ca.leaf("redis", &["127.0.0.1", "localhost"]);
    let redis = RedisServer::start_opts(Options {
        tls: Some(Tls { cert, key, ca: ca.pem.clone(), auth_clients }),
        ..Options::default()
    });
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/redis.conf")).unwrap();
    let rule = conf
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("user stile "))
        .expect("deploy/redis.conf documents a `user stile` ACL");
    let mut args = vec!["ACL", "SETUSER", "stile"];
    args.extend(rule.split_whitespace());
    assert!(redis.command(&args).starts_with("+OK"), "ACL SETUSER {rule}");
    redis
}

/// `[store.redis]` for `redis` over TLS as `stile`, trusting `ca`.
fn tls_config(redis: &RedisServer, ca: &Ca) -> RedisConfig {
    RedisConfig {
        url: redis.tls_url().replace("rediss://", &format!("rediss://stile:{PASSWORD}@")),
        tls_ca_file: Some(ca.pem.clone()),
        connect_timeout_ms: 1_000,
        command_timeout_ms: 2_000,
        ..RedisConfig::default()
    }
}

#[tokio::test]
async fn minting_and_revoking_over_rediss_as_the_acl_user_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let redis = tls_redis(&ca, true);
    let (cert, key) = ca.leaf("control", &["stile-control"]);
    let mut config = common::config(dir.path());
    config.store.backend = StoreBackend::Redis;
    config.store.redis = RedisConfig { tls_cert_file: Some(cert), tls_key_file: Some(key), ..tls_config(&redis, &ca) };
    config.validate().expect("a valid TLS configuration");
    let debug = format!("{:?}", config.store.redis);
    assert!(!debug.contains(PASSWORD) && debug.contains("rediss://***@127.0.0.1"), "{debug}");

    let plane = Plane::open(config).await.expect("the control plane connects over TLS");
    plane.publish("abc").await;
    let link = plane.mint("abc").await.expect("mint");
    let revoked = plane.revoke(&link.token_id).await.expect("revoke over rediss://");

    // Checked over the harness's own plain connection, not through Stile.
    let v = revoked.version.to_string();
    assert_eq!(redis.command(&["GET", "{stile}:version"]), format!("${}\r\n{v}\r\n", v.len()));
    let stored = redis.command(&["HVALS", "{stile}:revocations"]);
    let token_id = u64::from_str_radix(&link.token_id, 16).expect("a hex token id");
    assert!(stored.contains(&format!("\"token_id\":{token_id}}}")), "{stored}");
    let clients = redis.command(&["CLIENT", "LIST"]);
    let stile = clients.lines().filter(|l| l.contains("user=stile")).count();
    assert!(stile >= 3, "reads, commits and the log tail connect as `stile`: {clients}");
    plane.stop().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let other = Ca::new(dir.path(), "another-ca");
    let redis = tls_redis(&ca, false);
    let config = tls_config(&redis, &other);
    let err = RedisStore::connect(&config, 10).await.expect_err("an untrusted server certificate");
    let StoreError::Unavailable(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("invalid peer certificate: UnknownIssuer"), "{message}");
    assert!(message.contains("check store.redis.tls_ca_file"), "says what to check: {message}");
    assert!(message.contains("rediss://***@127.0.0.1"), "names the server: {message}");
    assert!(!message.contains(PASSWORD), "{message}");

    // The same server with the right CA: the refusal was the certificate.
    let s = RedisStore::connect(&tls_config(&redis, &ca), 10).await.expect("the right CA");
    assert_eq!(s.version().await.unwrap(), 0);
}

#[tokio::test]
async fn a_missing_client_certificate_is_refused_when_redis_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let redis = tls_redis(&ca, true);
    let config = RedisConfig { connect_timeout_ms: 500, command_timeout_ms: 500, ..tls_config(&redis, &ca) };
    let err = RedisStore::connect(&config, 10).await.expect_err("no client certificate");
    let StoreError::Unavailable(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("cannot connect to Redis at rediss://***@127.0.0.1"), "{message}");
    assert!(message.contains("CertificateRequired"), "Redis's alert: {message}");
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
}

#[tokio::test]
async fn plain_redis_urls_are_refused_by_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let redis = tls_redis(&ca, false);
    // The TLS port spoken to in clear text: no answer Stile accepts.
    let url = redis.tls_url().replace("rediss://", "redis://");
    let config = RedisConfig { url, connect_timeout_ms: 300, command_timeout_ms: 300, ..RedisConfig::default() };
    let err = RedisStore::connect(&config, 10).await.expect_err("clear text to a TLS port");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

/// `Config::from_toml` is what `stile control` runs before anything else;
/// its error exits with status 64.
fn invalid(redis_section: &str) -> String {
    let text = format!("[store]\nbackend = \"redis\"\n\n[store.redis]\n{redis_section}\n");
    match Config::from_toml(&text) {
        Ok(_) => panic!("accepted:\n{redis_section}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_tls_settings_fail_validation_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let (cert, key) = ca.leaf("control", &["stile-control"]);
    let missing = dir.path().join("missing.pem");
    let (ca_pem, missing) = (ca.pem.display(), missing.display());
    let (cert, key) = (cert.display(), key.display());
    let url = "url = \"rediss://stile:secret@127.0.0.1:6380/0\"";

    let e = invalid(&format!("{url}\ntls_ca_file = \"{missing}\""));
    assert!(e.contains(&format!("store.redis.tls_ca_file {missing}: cannot read")), "{e}");
    let e = invalid(&format!("{url}\ntls_ca_file = \"{key}\""));
    assert!(e.contains("store.redis.tls_ca_file") && e.contains("no PEM certificate"), "{e}");
    let e = invalid(&format!("{url}\ntls_cert_file = \"{cert}\""));
    assert!(e.contains("set tls_cert_file and tls_key_file together"), "{e}");
    let e = invalid(&format!("{url}\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{cert}\""));
    assert!(e.contains("store.redis.tls_key_file") && e.contains("no PEM private key"), "{e}");
    let e = invalid(&format!("url = \"redis://127.0.0.1:6379/0\"\ntls_ca_file = \"{ca_pem}\""));
    assert!(e.contains("apply to rediss://"), "{e}");
    let e = invalid("url = \"rediss://stile:secret@127.0.0.1:6380/0#insecure\"");
    assert!(e.contains("#insecure") && !e.contains("secret"), "{e}");
    let e = invalid("url = \"https://127.0.0.1:6380\"");
    assert!(e.contains("store.redis.url"), "{e}");

    let ok = format!("{url}\ntls_ca_file = \"{ca_pem}\"\ntls_cert_file = \"{cert}\"\ntls_key_file = \"{key}\"");
    let text = format!("[store]\nbackend = \"redis\"\n\n[store.redis]\n{ok}\n");
    Config::from_toml(&text).expect("CA, certificate and key");
}

#[test]
fn bad_sentinel_settings_fail_validation_naming_the_field() {
    let e = invalid("[store.redis.sentinel]\naddresses = [\"127.0.0.1\"]");
    assert!(e.contains("store.redis.sentinel.addresses: \"127.0.0.1\" is not host:port"), "{e}");
    let e = invalid("[store.redis.sentinel]\naddresses = [\"127.0.0.1:26379\"]\nmaster_name = \"\"");
    assert!(e.contains("store.redis.sentinel.master_name"), "{e}");
    let e =
        invalid("url = \"redis+unix:///run/redis.sock\"\n[store.redis.sentinel]\naddresses = [\"127.0.0.1:26379\"]");
    assert!(e.contains("url must be redis:// or rediss://"), "{e}");
    let e = invalid("[store.redis.sentinel]\ntls = true");
    assert!(e.contains("sentinel.tls is set but sentinel.addresses is empty"), "{e}");
    let e = invalid("[store.redis.sentinel]\naddresses = [\"127.0.0.1:26379\"]\nport = 1");
    assert!(e.contains("unknown field"), "{e}");
    let text = "[store]\nbackend = \"redis\"\n[store.redis.sentinel]\naddresses = [\"10.0.0.1:26379\", \"[::1]:26379\"]\n\
                master_name = \"stile\"\npassword = \"sentinel-secret\"\n";
    let config = Config::from_toml(text).expect("a valid Sentinel section");
    let debug = format!("{:?}", config.store.redis);
    assert!(!debug.contains("sentinel-secret") && debug.contains("10.0.0.1:26379"), "{debug}");
}

#[tokio::test]
async fn an_api_call_over_a_broken_tls_redis_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "stile-test-ca");
    let mut redis = tls_redis(&ca, false);
    let mut config = common::config(dir.path());
    config.store.backend = StoreBackend::Redis;
    config.store.redis = RedisConfig { connect_timeout_ms: 300, command_timeout_ms: 500, ..tls_config(&redis, &ca) };
    let plane = Plane::open(config).await.expect("control plane");
    redis.kill();
    assert_status(plane.revoke("0123456789abcdef").await, Code::Unavailable, "retry");
    plane.stop().await;
}
