//! The Redis key layout: every key under one hash tag `{<key_prefix>}`, so
//! one Redis Cluster slot holds them all and one script can touch them. The
//! table of keys, their types and contents is in `docs/redis.md` ("Key layout
//! and versions"); a test below keeps the two in step.

/// The key names, built once.
#[derive(Debug)]
pub(super) struct KeyNames {
    pub(super) version: String,
    pub(super) log: String,
    pub(super) revocations: String,
    pub(super) revocations_by_version: String,
    pub(super) revocations_by_expiry: String,
    pub(super) purges: String,
    pub(super) purges_by_expiry: String,
    pub(super) purge_floor: String,
    pub(super) assets: String,
    pub(super) asset_ids: String,
    pub(super) asset_revisions: String,
    pub(super) signing_keys: String,
    pub(super) foreign_keys: String,
    pub(super) api_keys: String,
    pub(super) api_key_names: String,
    pub(super) audit: String,
    pub(super) audit_seq: String,
    /// Replica ids that published a fleet view (their views expire on their own).
    pub(super) fleet_replicas: String,
    /// Prefix of the per-replica fleet view keys.
    pub(super) fleet: String,
}

impl KeyNames {
    pub(super) fn new(prefix: &str) -> KeyNames {
        let k = |name: &str| format!("{{{prefix}}}:{name}");
        KeyNames {
            version: k("version"),
            log: k("log"),
            revocations: k("revocations"),
            revocations_by_version: k("revocations:by_version"),
            revocations_by_expiry: k("revocations:by_expiry"),
            purges: k("purges"),
            purges_by_expiry: k("purges:by_expiry"),
            purge_floor: k("purge_floor"),
            assets: k("assets"),
            asset_ids: k("assets:ids"),
            asset_revisions: k("assets:revision"),
            signing_keys: k("signing_keys"),
            foreign_keys: k("foreign_keys"),
            api_keys: k("api_keys"),
            api_key_names: k("api_keys:names"),
            audit: k("audit"),
            audit_seq: k("audit:seq"),
            fleet_replicas: k("fleet:replicas"),
            fleet: k("fleet:"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let k = KeyNames::new("stile");
        for key in [&k.version, &k.log, &k.revocations_by_expiry, &k.audit_seq, &k.api_key_names] {
            assert!(key.starts_with("{stile}:"), "{key}");
        }
    }

    #[test]
    fn docs_redis_md_lists_every_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/redis.md")).unwrap();
        // Every field, read from the Debug form so that a new key cannot be left out.
        let names = format!("{:?}", KeyNames::new("stile"));
        let keys: Vec<&str> = names.split('"').filter(|s| s.starts_with("{stile}:")).collect();
        assert_eq!(keys.len(), 19, "{names}");
        for key in keys {
            // The per-replica view keys are `{stile}:fleet:<replica>`.
            let key = if key.ends_with(':') { format!("{key}<replica>") } else { key.to_owned() };
            // A row's second key is written as its suffix: `{stile}:assets` / `:assets:revision`.
            let suffix = key.trim_start_matches("{stile}");
            assert!(
                doc.contains(&format!("`{key}`")) || doc.contains(&format!("/ `{suffix}`")),
                "docs/redis.md's key table lacks {key}"
            );
        }
    }
}
