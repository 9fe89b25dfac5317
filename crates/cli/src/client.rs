//! `stile mint`: a minimal client of the control plane's `LinkService.Mint`,
//! printing the link in each transport form. The token is printed because
//! handing it out is the point; nothing else logs it.

use std::process::ExitCode;

use stile_proto::v1 as pb;
use stile_proto::v1::link_service_client::LinkServiceClient;

/// Arguments of `stile mint`.
#[derive(Debug, clap::Args)]
pub(crate) struct MintArgs {
    /// Id of a PUBLISHED asset.
    asset: String,
    /// Control plane URL.
    #[arg(long, env = "STILE_CONTROL", default_value = "http://127.0.0.1:7400")]
    control: String,
    /// API key with role minter or admin.
    #[arg(long, env = "STILE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// Lifetime in seconds (0: the policy's default).
    #[arg(long, default_value_t = 0)]
    ttl: u64,
    /// Policy template (default: the control plane's default policy).
    #[arg(long)]
    policy: Option<String>,
    /// Viewer id to bind the link to.
    #[arg(long)]
    subject: Option<String>,
    /// Client IP address to bind the link to.
    #[arg(long)]
    client_ip: Option<String>,
    /// Share channel, e.g. `email`.
    #[arg(long)]
    channel: Option<String>,
    /// Edge base URL (default: the control plane's `links.default_base_url`).
    #[arg(long)]
    base_url: Option<String>,
    /// Scope path (default: the asset's whole prefix).
    #[arg(long)]
    scope: Option<String>,
    /// Path the URLs point at (default: the asset's entry manifest).
    #[arg(long)]
    entry: Option<String>,
}

pub(crate) fn mint(args: MintArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stile mint: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(args)) {
        Ok(link) => {
            println!("token_id   {}", link.token_id);
            println!(
                "expires_at {} (key {}, policy {}, scope {})",
                link.expires_at, link.key_id, link.policy, link.scope
            );
            println!("query      {}", link.query_url);
            println!("path       {}", link.path_url);
            if let Some(c) = link.cookie {
                println!("cookie     {} with {}={}; Path={}; Max-Age={}", c.url, c.name, c.value, c.path, c.max_age);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stile mint: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn call(args: MintArgs) -> Result<pb::Link, String> {
    let channel = tonic::transport::Endpoint::from_shared(args.control.clone())
        .map_err(|e| format!("bad --control {:?}: {e}", args.control))?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.control))?;
    let request = pb::MintRequest {
        asset_id: args.asset,
        ttl_secs: args.ttl,
        policy: args.policy.unwrap_or_default(),
        subject: args.subject.unwrap_or_default(),
        client_ip: args.client_ip.unwrap_or_default(),
        channel: args.channel.unwrap_or_default(),
        base_url: args.base_url.unwrap_or_default(),
        scope: args.scope.unwrap_or_default(),
        entry: args.entry.unwrap_or_default(),
        ..Default::default()
    };
    let mut request = tonic::Request::new(request);
    let bearer =
        format!("Bearer {}", args.api_key).parse().map_err(|_| "the API key is not visible ASCII".to_owned())?;
    request.metadata_mut().insert("authorization", bearer);
    let response =
        LinkServiceClient::new(channel).mint(request).await.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    response.into_inner().link.ok_or_else(|| "the control plane returned no link".to_owned())
}
