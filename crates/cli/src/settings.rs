//! Client settings and their precedence: **flags > `STILE_*` environment >
//! configuration file > built-in defaults** (later sources in the list "file,
//! environment, flags" win). `docs/cli.md` § Configuration is the reference.
//!
//! The file is TOML, read from `--config FILE`, else `$STILE_CONFIG`, else
//! `$XDG_CONFIG_HOME/stile/cli.toml` (or `~/.config/stile/cli.toml`) when it
//! exists. An explicitly named file that is missing or invalid is a usage error.
//!
//! Resolution is a pure function of the flags, an environment lookup and the
//! file's text, so tests check every precedence rule without touching the
//! process environment.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The control plane's default listen address (`stile control`, `stile dev`).
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

/// Flags shared by every client command.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ClientFlags {
    /// Control plane URL [env: STILE_SERVER] [default: http://127.0.0.1:7400].
    #[arg(long, visible_alias = "control", value_name = "URL", global = true)]
    pub(crate) server: Option<String>,
    /// API key (role operator for most commands, minter for `mint`, admin for
    /// `api-keys`) [env: STILE_API_KEY].
    #[arg(long, value_name = "KEY", global = true)]
    pub(crate) api_key: Option<String>,
    /// CA bundle (PEM) the control plane's certificate must chain to; needed
    /// for an https:// server [env: STILE_CA_FILE].
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Machine output: one JSON document on stdout [env: STILE_OUTPUT=json].
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Client configuration file [env: STILE_CONFIG] [default: ~/.config/stile/cli.toml].
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) config: Option<PathBuf>,
}

/// The client configuration file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FileSettings {
    /// Control plane URL.
    pub(crate) server: Option<String>,
    /// API key. Keep the file private (mode 0600) when it holds one.
    pub(crate) api_key: Option<String>,
    /// CA bundle (PEM) for an `https://` server.
    pub(crate) ca_file: Option<PathBuf>,
    /// `table` (default) or `json`.
    pub(crate) output: Option<Output>,
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Output {
    /// Aligned tables and sentences for people.
    #[default]
    Table,
    /// One JSON document for scripts.
    Json,
}

/// Where a setting came from (shown by `stile config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A command-line flag.
    Flag,
    /// A `STILE_*` environment variable.
    Env,
    /// The configuration file.
    File,
    /// The built-in default.
    Default,
}

impl Source {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// The resolved client settings.
#[derive(Clone)]
pub(crate) struct Settings {
    /// Control plane URL.
    pub(crate) server: String,
    /// Where `server` came from.
    pub(crate) server_source: Source,
    /// API key, if any source gave one.
    pub(crate) api_key: Option<String>,
    /// Where `api_key` came from.
    pub(crate) api_key_source: Source,
    /// CA bundle for an `https://` server, if any source gave one.
    pub(crate) ca_file: Option<PathBuf>,
    /// Where `ca_file` came from.
    pub(crate) ca_file_source: Source,
    /// Output format.
    pub(crate) output: Output,
    /// The configuration file read, if any.
    pub(crate) file: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("server", &self.server)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("output", &self.output)
            .field("file", &self.file)
            .finish()
    }
}

impl Settings {
    /// Whether output is JSON.
    pub(crate) fn json(&self) -> bool {
        self.output == Output::Json
    }

    /// Resolves the settings from the process environment and the file system.
    pub(crate) fn load(flags: &ClientFlags) -> Result<Settings, String> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (path, explicit) = match (&flags.config, env("STILE_CONFIG")) {
            (Some(p), _) => (Some(p.clone()), true),
            (None, Some(p)) => (Some(PathBuf::from(p)), true),
            (None, None) => (default_file(&env).filter(|p| p.is_file()), false),
        };
        let text = match &path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(t),
                Err(e) if explicit => {
                    return Err(format!("cannot read the configuration file {}: {e}", p.display()));
                }
                Err(_) => None,
            },
            None => None,
        };
        Settings::resolve(flags, &env, path.as_deref(), text.as_deref())
    }

    /// Applies the precedence rules: flags > environment > file > defaults.
    pub(crate) fn resolve(
        flags: &ClientFlags,
        env: &dyn Fn(&str) -> Option<String>,
        path: Option<&Path>,
        text: Option<&str>,
    ) -> Result<Settings, String> {
        let file: FileSettings = match text {
            Some(t) => toml::from_str(t).map_err(|e| {
                let shown = path.map(|p| p.display().to_string()).unwrap_or_default();
                format!("configuration file {shown}: {}", e.message())
            })?,
            None => FileSettings::default(),
        };
        let pick = |flag: Option<String>, var: &str, from_file: Option<String>| match (flag, env(var), from_file) {
            (Some(v), _, _) => (Some(v), Source::Flag),
            (None, Some(v), _) => (Some(v), Source::Env),
            (None, None, Some(v)) => (Some(v), Source::File),
            (None, None, None) => (None, Source::Default),
        };
        let (server, server_source) = pick(flags.server.clone(), "STILE_SERVER", file.server);
        let (api_key, api_key_source) = pick(flags.api_key.clone(), "STILE_API_KEY", file.api_key);
        let (ca_file, ca_file_source) = pick(
            flags.ca_file.as_ref().map(|p| p.display().to_string()),
            "STILE_CA_FILE",
            file.ca_file.map(|p| p.display().to_string()),
        );
        let ca_file = ca_file.map(PathBuf::from);
        let output = if flags.json {
            Output::Json
        } else if let Some(v) = env("STILE_OUTPUT") {
            match v.to_ascii_lowercase().as_str() {
                "json" => Output::Json,
                "table" | "text" => Output::Table,
                _ => return Err(format!("STILE_OUTPUT={v:?}: expected \"json\" or \"table\"")),
            }
        } else {
            file.output.unwrap_or_default()
        };
        let server = server.unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let server = normalise_server(&server)?;
        Ok(Settings {
            server,
            server_source,
            api_key,
            api_key_source,
            ca_file,
            ca_file_source,
            output,
            file: path.map(Path::to_owned),
        })
    }
}

/// Accepts `host:port` and `http(s)://host:port[/]`; returns a URL without a trailing `/`.
fn normalise_server(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Err("the control plane URL is empty; pass --server URL".into());
    }
    let url = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("--server {s:?}: expected http://host:port or https://host:port"));
    }
    Ok(url)
}

fn default_file(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let base = env("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")));
    base.map(|b| b.join("stile").join("cli.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: ClientFlags, env: &[(&str, &str)], file: Option<&str>) -> Result<Settings, String> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Settings::resolve(&flags, &lookup, file.map(|_| Path::new("cli.toml")), file)
    }

    fn flags(server: Option<&str>, key: Option<&str>, json: bool) -> ClientFlags {
        ClientFlags { server: server.map(Into::into), api_key: key.map(Into::into), json, config: None, ca_file: None }
    }

    #[test]
    fn precedence_is_flags_then_env_then_file_then_default() {
        let file = "server = \"http://file:1\"\napi_key = \"k-file\"\noutput = \"json\"\n";
        let env = [("STILE_SERVER", "http://env:2"), ("STILE_API_KEY", "k-env"), ("STILE_OUTPUT", "table")];

        let s = resolve(flags(Some("http://flag:3"), Some("k-flag"), true), &env, Some(file)).unwrap();
        assert_eq!(
            (s.server.as_str(), s.api_key.as_deref(), s.output),
            ("http://flag:3", Some("k-flag"), Output::Json)
        );
        assert_eq!((s.server_source, s.api_key_source), (Source::Flag, Source::Flag));

        let s = resolve(flags(None, None, false), &env, Some(file)).unwrap();
        assert_eq!((s.server.as_str(), s.api_key.as_deref(), s.output), ("http://env:2", Some("k-env"), Output::Table));
        assert_eq!((s.server_source, s.api_key_source), (Source::Env, Source::Env));

        let s = resolve(flags(None, None, false), &[], Some(file)).unwrap();
        assert_eq!(
            (s.server.as_str(), s.api_key.as_deref(), s.output),
            ("http://file:1", Some("k-file"), Output::Json)
        );
        assert_eq!(s.server_source, Source::File);

        let s = resolve(flags(None, None, false), &[], None).unwrap();
        assert_eq!((s.server.as_str(), s.api_key, s.output), (DEFAULT_SERVER, None, Output::Table));
        assert_eq!((s.server_source, s.api_key_source), (Source::Default, Source::Default));
    }

    #[test]
    fn servers_are_normalised_and_checked() {
        let s = resolve(flags(Some("127.0.0.1:9000/"), None, false), &[], None).unwrap();
        assert_eq!(s.server, "http://127.0.0.1:9000");
        assert!(resolve(flags(Some("ftp://x"), None, false), &[], None).unwrap_err().contains("expected http"));
    }

    #[test]
    fn bad_files_and_values_are_usage_errors() {
        let e = resolve(flags(None, None, false), &[], Some("sever = \"x\"")).unwrap_err();
        assert!(e.contains("cli.toml") && e.contains("unknown field"), "{e}");
        let e = resolve(flags(None, None, false), &[("STILE_OUTPUT", "yaml")], None).unwrap_err();
        assert!(e.contains("STILE_OUTPUT"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let s = resolve(flags(None, Some("stk_secret"), false), &[], None).unwrap();
        assert!(!format!("{s:?}").contains("stk_secret"));
    }
}
