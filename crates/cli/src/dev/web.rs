//! The two HTTP servers of `stile dev` besides the edge (axum over hyper, HTTP/1.1
//! with keep-alive):
//!
//! - the **sample origin** (`N+3`): the sample stream under `/vod/sample/`, with range
//!   requests, conditional GETs and the media types players expect;
//! - the **player page** (`N+4`, its own origin, as a customer's web site would be):
//!   the embed kit's example page (`embed/example.html`) and module
//!   (`embed/stile-player.js`), hls.js and dash.js from the repository's
//!   `node_modules` (`npm ci`), and a tiny **sample backend**: `GET /api/link` mints a
//!   fresh link over gRPC (`LinkService.Mint` with a `minter` key) the way a
//!   customer's backend would, so the page's URL stays the same while the credentials
//!   under it rotate. For `transport=cookie` it also sets the cookie, which the
//!   browser sends to the edge because page and edge share a site (`127.0.0.1`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use stile_proto::v1 as pb;
use tower_http::services::ServeDir;

use super::{ASSET_ID, DASH_ENTRY, HLS_ENTRY};

/// The example page and the kit, compiled in so `stile dev` works from any directory.
const EXAMPLE_HTML: &str = include_str!("../../../../embed/example.html");
const PLAYER_JS: &str = include_str!("../../../../embed/stile-player.js");

/// Player libraries served under `/vendor/`: name → path under `node_modules`.
pub(crate) const VENDOR: [(&str, &str); 2] =
    [("hls.min.js", "hls.js/dist/hls.min.js"), ("dash.all.min.js", "dashjs/dist/modern/umd/dash.all.min.js")];

/// The sample origin: `dir` under `/vod/sample/`.
pub(crate) fn origin(dir: &Path) -> Router {
    Router::new()
        .nest_service("/vod/sample", ServeDir::new(dir).append_index_html_on_directories(false))
        .layer(axum::middleware::from_fn(media_types))
}

/// What the page server needs.
#[derive(Debug)]
pub(crate) struct Page {
    /// The control plane, as a customer backend reaches it.
    pub(crate) control: tonic::transport::Channel,
    /// The backend's `minter` key.
    pub(crate) minter: String,
    /// `node_modules` holding hls.js and dash.js, if found.
    pub(crate) node_modules: Option<PathBuf>,
}

/// The player page's origin.
pub(crate) fn page(state: Arc<Page>) -> Router {
    Router::new()
        .route("/", get(|| async { typed("text/html; charset=utf-8", EXAMPLE_HTML) }))
        .route("/example.html", get(|| async { typed("text/html; charset=utf-8", EXAMPLE_HTML) }))
        .route("/stile-player.js", get(|| async { typed("text/javascript; charset=utf-8", PLAYER_JS) }))
        .route("/vendor/{file}", get(vendor))
        .route("/api/link", get(link))
        .with_state(state)
}

/// The first `node_modules` holding both libraries: `explicit`, `./node_modules`, or
/// the repository this binary was built from.
pub(crate) fn find_node_modules(explicit: Option<&Path>) -> Option<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../node_modules");
    let candidates = match explicit {
        Some(p) => vec![p.to_owned()],
        None => vec![PathBuf::from("node_modules"), built_from],
    };
    candidates
        .into_iter()
        .find(|d| VENDOR.iter().all(|(_, rel)| d.join(rel).is_file()))
        .and_then(|d| d.canonicalize().ok())
}

/// Writes the player page for a static server: `example.html`, `stile-player.js` and,
/// when `node_modules` has them, `vendor/` with hls.js and dash.js. Says which libraries it wrote.
pub(crate) fn export_player(dir: &Path, node_modules: Option<&Path>) -> Result<String, String> {
    let vendor = dir.join("vendor");
    std::fs::create_dir_all(&vendor).map_err(|e| format!("cannot create {}: {e}", vendor.display()))?;
    let write = |name: &Path, body: &[u8]| std::fs::write(name, body).map_err(|e| format!("{}: {e}", name.display()));
    write(&dir.join("example.html"), EXAMPLE_HTML.as_bytes())?;
    write(&dir.join("stile-player.js"), PLAYER_JS.as_bytes())?;
    let Some(nm) = node_modules else {
        return Ok("without hls.js and dash.js: run `npm ci` first to include them".into());
    };
    for (name, rel) in VENDOR {
        std::fs::copy(nm.join(rel), vendor.join(name)).map_err(|e| format!("copying {rel}: {e}"))?;
    }
    Ok("with hls.js and dash.js".into())
}

fn typed(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn vendor(State(page): State<Arc<Page>>, axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let Some((_, rel)) = VENDOR.iter().find(|(name, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let Some(dir) = &page.node_modules else {
        let msg = format!("{file} is not installed: run `npm ci` in the Stile repository (scripts/dev does)\n");
        return (StatusCode::NOT_FOUND, msg).into_response();
    };
    match tokio::fs::read(dir.join(rel)).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{file}: {e}\n")).into_response(),
    }
}

/// `GET /api/link?format=hls|dash&transport=query|path|cookie[&ttl=SECONDS]`.
#[derive(Debug, serde::Deserialize)]
struct LinkParams {
    format: Option<String>,
    transport: Option<String>,
    ttl: Option<u64>,
}

async fn link(State(page): State<Arc<Page>>, Query(p): Query<LinkParams>) -> Response {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": m }))).into_response();
    let format = p.format.as_deref().unwrap_or("hls");
    let entry = match format {
        "hls" => HLS_ENTRY,
        "dash" => DASH_ENTRY,
        _ => return bad("format must be hls or dash"),
    };
    let transport = p.transport.as_deref().unwrap_or("query");
    if !matches!(transport, "query" | "path" | "cookie") {
        return bad("transport must be query, path or cookie");
    }
    let mint = pb::MintRequest {
        asset_id: ASSET_ID.into(),
        entry: entry.into(),
        subject: "web-viewer".into(),
        channel: "embed:dev-page".into(),
        ttl_secs: p.ttl.unwrap_or(0),
        ..Default::default()
    };
    let mut req = tonic::Request::new(mint);
    if let Ok(v) = format!("Bearer {}", page.minter).parse() {
        req.metadata_mut().insert("authorization", v);
    }
    let minted = pb::link_service_client::LinkServiceClient::new(page.control.clone()).mint(req).await;
    let link = match minted.map(|r| r.into_inner().link) {
        Ok(Some(l)) => l,
        Ok(None) => return bad("the control plane returned no link"),
        Err(s) => {
            let body = serde_json::json!({ "error": format!("mint: {:?}: {}", s.code(), s.message()) });
            return (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response();
        }
    };
    let cookie = link.cookie.clone().unwrap_or_default();
    let url = match transport {
        "query" => link.query_url.clone(),
        "path" => link.path_url.clone(),
        _ => cookie.url.clone(),
    };
    let body = serde_json::json!({
        "url": url,
        "format": format,
        "transport": transport,
        "with_credentials": transport == "cookie",
        "expires_at": link.expires_at,
        "token_id": link.token_id,
    });
    let mut resp = (
        [(header::CACHE_CONTROL, "no-store")], // a fresh link on every call
        axum::Json(body),
    )
        .into_response();
    if transport == "cookie" {
        // Host-only and port-agnostic: the browser sends it to the edge on this same host.
        let set = format!(
            "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax",
            cookie.name, cookie.value, cookie.path, cookie.max_age
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The media type players expect, by extension; `Cache-Control` as a CDN origin would send.
async fn media_types(req: Request, next: Next) -> Response {
    let ext = req.uri().path().rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let mut resp = next.run(req).await;
    let ctype = match ext.as_str() {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "m4s" => "video/iso.segment",
        "mp4" => "video/mp4",
        "ts" => "video/mp2t",
        _ => "",
    };
    if !ctype.is_empty() && (resp.status().is_success() || resp.status() == StatusCode::PARTIAL_CONTENT) {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    }
    resp
}
