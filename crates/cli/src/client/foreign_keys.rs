//! `stile keys add-foreign`, `rm-foreign`, `ls-foreign`: other vendors'
//! signing keys kept by the control plane and pushed to every edge
//! (`KeyService.AddForeign`, docs/migration.md "Foreign keys").
//!
//! The key is read from a file or from stdin, never from the command line (it
//! would land in the shell history and the process list), and never printed:
//! the listing shows format, name and when and by whom it was added.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use stile_proto::v1 as pb;
use stile_proto::v1::key_service_client::KeyServiceClient;

use super::output::{Table, relative, rfc3339, utc};
use super::{Client, Failure, print_json};
use crate::settings::Settings;

/// The formats, as `[[foreign]]` entries name them.
const FORMATS: [&str; 5] = ["akamai", "cloud-cdn", "media-cdn", "bunny", "nginx-secure-link"];

/// Longest key text read (the control plane accepts 1024 bytes).
const MAX_KEY_TEXT: u64 = 1024;

/// `stile keys add-foreign`
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The link format.
    #[arg(long, value_parser = FORMATS)]
    format: String,
    /// The key's name as the vendor names it (Google's KeyName; free for the others).
    #[arg(long)]
    name: String,
    /// A file holding the key as the vendor writes it: hex (akamai), base64
    /// or base64url (cloud-cdn, media-cdn), `ed25519:` + base64 (a media-cdn
    /// public key), the text itself (bunny, nginx-secure-link). Surrounding
    /// whitespace is ignored. Without it, the key is read from stdin.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
}

/// `stile keys rm-foreign`
#[derive(Debug, Args)]
pub(crate) struct RmArgs {
    /// The link format.
    #[arg(long, value_parser = FORMATS)]
    format: String,
    /// The key's name.
    #[arg(long)]
    name: String,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    reason: String,
}

pub(crate) async fn add(settings: &Settings, client: &Client, a: AddArgs) -> Result<(), Failure> {
    let key = read_key(a.key_file.as_ref())?;
    let req = pb::AddForeignKeyRequest { format: a.format, name: a.name, key, reason: a.reason };
    let r = rpc(client).add_foreign(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner();
    let k = r.key.unwrap_or_default();
    if settings.json() {
        print_json(&json!({ "key": info_json(&k), "version": r.version }));
    } else {
        println!(
            "{} key {:?} added (version {}); edges admit its links once they apply it",
            k.format, k.name, r.version
        );
    }
    Ok(())
}

pub(crate) async fn rm(settings: &Settings, client: &Client, a: RmArgs) -> Result<(), Failure> {
    let req = pb::RemoveForeignKeyRequest { format: a.format.clone(), name: a.name.clone(), reason: a.reason };
    let r = rpc(client).remove_foreign(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner();
    if settings.json() {
        print_json(&json!({ "format": a.format, "name": a.name, "version": r.version }));
    } else {
        println!("{} key {:?} removed (version {}); edges forget it once they apply it", a.format, a.name, r.version);
    }
    Ok(())
}

pub(crate) async fn ls(settings: &Settings, client: &Client, now: u64) -> Result<(), Failure> {
    let req = pb::ListForeignKeysRequest {};
    let keys = rpc(client).list_foreign(client.req(req)).await.map_err(|s| client.fail(&s))?.into_inner().keys;
    if settings.json() {
        print_json(&json!({ "keys": keys.iter().map(info_json).collect::<Vec<_>>() }));
        return Ok(());
    }
    let mut t = Table::new(&["FORMAT", "NAME", "ADDED", "BY"]);
    for k in &keys {
        let added = format!("{} ({})", utc(k.created_at), relative(k.created_at, now));
        t.row(vec![k.format.clone(), k.name.clone(), added, k.created_by.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}

fn rpc(client: &Client) -> KeyServiceClient<tonic::transport::Channel> {
    KeyServiceClient::new(client.channel.clone())
}

fn info_json(k: &pb::ForeignKeyInfo) -> serde_json::Value {
    json!({
        "format": k.format, "name": k.name, "created_at": k.created_at, "created": rfc3339(k.created_at),
        "created_by": k.created_by,
    })
}

/// The key text from the file, or stdin; at most [`MAX_KEY_TEXT`] bytes, trimmed.
fn read_key(file: Option<&PathBuf>) -> Result<String, Failure> {
    let (what, reader): (String, Box<dyn Read>) = match file {
        Some(path) => {
            let f =
                std::fs::File::open(path).map_err(|e| Failure::usage(format!("--key-file {}: {e}", path.display())))?;
            (format!("--key-file {}", path.display()), Box::new(f))
        }
        None => ("stdin".to_owned(), Box::new(std::io::stdin())),
    };
    let mut text = String::new();
    reader
        .take(MAX_KEY_TEXT + 1)
        .read_to_string(&mut text)
        .map_err(|e| Failure::usage(format!("{what}: {e} (the key must be UTF-8 text)")))?;
    if text.len() as u64 > MAX_KEY_TEXT {
        return Err(Failure::usage(format!("{what}: the key must be at most {MAX_KEY_TEXT} bytes")));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(Failure::usage(format!("{what}: no key (give --key-file PATH, or the key on stdin)")));
    }
    Ok(text.to_owned())
}
