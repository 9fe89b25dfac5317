//! Keys for foreign formats, named as the vendor names them (Google's
//! `KeyName`, Akamai's primary and transition key, nginx's secret), parsed
//! from the spelling the vendor writes them in.
//!
//! Secrets never print: `Debug` shows the name and the kind only.

use core::fmt;

use ed25519_dalek::VerifyingKey;

use crate::{Format, util};

/// Most keys one format holds (vendors allow 1–3; formats without a key name
/// try each key in turn, so the bound also bounds verification cost).
pub const MAX_KEYS: usize = 8;
/// Longest shared secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 256;
/// Longest key name, in bytes (Google allows 63).
pub const MAX_KEY_NAME_LEN: usize = 64;

/// How a key is written in the operator's old configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEncoding {
    /// Hex digits, even length (Akamai).
    Hex,
    /// base64, standard or URL alphabet, padding optional (Google).
    Base64,
    /// The text itself, as UTF-8 bytes (Bunny's security key, nginx's secret).
    Raw,
}

/// Why a key could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key text is not in the stated encoding.
    #[error("key {0:?} is not valid {1}")]
    Encoding(String, &'static str),
    /// Empty or longer than [`MAX_SECRET_LEN`].
    #[error("key {0:?} must be 1..={MAX_SECRET_LEN} bytes")]
    Length(String),
    /// An Ed25519 public key that is not 32 bytes or not a curve point.
    #[error("key {0:?} is not an Ed25519 public key")]
    Ed25519(String),
    /// Empty, too long, or not visible ASCII.
    #[error("key name {0:?} must be 1..={MAX_KEY_NAME_LEN} visible ASCII bytes")]
    Name(String),
    /// An `ed25519:` key for a format other than Media CDN.
    #[error("key {0:?}: ed25519 keys are Media CDN's only")]
    Ed25519Format(String),
    /// More than [`MAX_KEYS`] keys, or a name given twice.
    #[error("too many keys or duplicate name {0:?}")]
    Set(String),
}

/// What a key is.
#[derive(Clone)]
pub(crate) enum Material {
    /// A shared secret for an HMAC or a keyed hash.
    Secret(Vec<u8>),
    /// An Ed25519 public key, decompressed once at load.
    Ed25519(VerifyingKey),
}

/// One named key.
#[derive(Clone)]
pub struct Key {
    name: String,
    pub(crate) material: Material,
}

impl Key {
    /// A shared secret given as bytes.
    pub fn secret(name: &str, secret: &[u8]) -> Result<Key, KeyError> {
        check_name(name)?;
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err(KeyError::Length(name.into()));
        }
        Ok(Key { name: name.into(), material: Material::Secret(secret.to_vec()) })
    }

    /// A shared secret written as the vendor writes it.
    pub fn parse_secret(name: &str, text: &str, encoding: KeyEncoding) -> Result<Key, KeyError> {
        let bytes = decode(name, text, encoding)?;
        Key::secret(name, &bytes)
    }

    /// An Ed25519 public key (32 bytes), as Media CDN keysets hold them.
    pub fn ed25519_public(name: &str, public: &[u8]) -> Result<Key, KeyError> {
        check_name(name)?;
        let bytes: [u8; 32] = public.try_into().map_err(|_| KeyError::Ed25519(name.into()))?;
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Ed25519(name.into()))?;
        Ok(Key { name: name.into(), material: Material::Ed25519(vk) })
    }

    /// An Ed25519 public key written in base64 (either alphabet, padding optional).
    pub fn parse_ed25519_public(name: &str, text: &str) -> Result<Key, KeyError> {
        let bytes = decode(name, text, KeyEncoding::Base64)?;
        Key::ed25519_public(name, &bytes)
    }

    /// A key of `format` written as that vendor writes it — hex (Akamai),
    /// base64 or base64url (Cloud CDN; Media CDN HMAC keys), `ed25519:` +
    /// base64 (a Media CDN public key), the text itself (Bunny, nginx): the
    /// spelling of a state file's `foreign_keys` entry and of
    /// `stile keys add-foreign`, decoded the same way by both.
    pub fn parse_as(format: Format, name: &str, text: &str) -> Result<Key, KeyError> {
        let encoding = match format {
            Format::Akamai => KeyEncoding::Hex,
            Format::CloudCdn | Format::MediaCdn => KeyEncoding::Base64,
            Format::Bunny | Format::NginxSecureLink => KeyEncoding::Raw,
        };
        match text.strip_prefix("ed25519:") {
            Some(public) if format == Format::MediaCdn => Key::parse_ed25519_public(name, public),
            Some(_) => Err(KeyError::Ed25519Format(name.into())),
            None => Key::parse_secret(name, text, encoding),
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is an Ed25519 public key.
    pub fn is_ed25519(&self) -> bool {
        matches!(self.material, Material::Ed25519(_))
    }

    pub(crate) fn secret_bytes(&self) -> Option<&[u8]> {
        match &self.material {
            Material::Secret(s) => Some(s),
            Material::Ed25519(_) => None,
        }
    }

    pub(crate) fn ed25519(&self) -> Option<&VerifyingKey> {
        match &self.material {
            Material::Ed25519(k) => Some(k),
            Material::Secret(_) => None,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_ed25519() { "ed25519-public" } else { "secret(<redacted>)" };
        write!(f, "Key({:?}, {kind})", self.name)
    }
}

/// The keys one format verifies with, in order (first = primary).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    /// From a list of keys: at most [`MAX_KEYS`], names unique.
    pub fn new(keys: Vec<Key>) -> Result<Keys, KeyError> {
        if keys.len() > MAX_KEYS {
            return Err(KeyError::Set(String::new()));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.name == k.name) {
                return Err(KeyError::Set(k.name.clone()));
            }
        }
        Ok(Keys { keys })
    }

    /// The key called `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.name.as_bytes() == name)
    }

    /// The reason when no key verified: `bad_signature` if some key of the
    /// right kind was tried, `unknown_key` if there was none to try.
    pub(crate) fn miss(&self, ed25519: bool) -> stile_token::Reason {
        if self.keys.iter().any(|k| k.is_ed25519() == ed25519) {
            stile_token::Reason::BadSignature
        } else {
            stile_token::Reason::UnknownKey
        }
    }

    /// Every key, primary first.
    pub fn iter(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.len() > MAX_KEY_NAME_LEN || !name.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(KeyError::Name(name.into()));
    }
    Ok(())
}

fn decode(name: &str, text: &str, encoding: KeyEncoding) -> Result<Vec<u8>, KeyError> {
    use base64::Engine as _;
    let text = text.trim();
    match encoding {
        KeyEncoding::Hex => util::hex_vec(text.as_bytes()).ok_or_else(|| KeyError::Encoding(name.into(), "hex")),
        KeyEncoding::Base64 => {
            let url = text.bytes().any(|b| b == b'-' || b == b'_');
            let r = if url { util::B64URL.decode(text) } else { util::B64STD.decode(text) };
            r.map_err(|_| KeyError::Encoding(name.into(), "base64"))
        }
        KeyEncoding::Raw => Ok(text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_redaction() {
        let k = Key::parse_secret("my-key", "nZtRohdNF9m3cKM24IcK4w==", KeyEncoding::Base64).unwrap();
        assert_eq!(k.secret_bytes().unwrap().len(), 16);
        assert_eq!(format!("{k:?}"), "Key(\"my-key\", secret(<redacted>))");
        let k = Key::parse_secret("a", "52a152a152a1", KeyEncoding::Hex).unwrap();
        assert_eq!(k.secret_bytes().unwrap(), &[0x52, 0xa1, 0x52, 0xa1, 0x52, 0xa1]);
        assert_eq!(Key::parse_secret("a", "abc", KeyEncoding::Hex).unwrap_err(), KeyError::Encoding("a".into(), "hex"));
        assert_eq!(Key::secret("", b"x").unwrap_err(), KeyError::Name(String::new()));
        assert_eq!(Key::secret("k", b"").unwrap_err(), KeyError::Length("k".into()));
        assert_eq!(Key::ed25519_public("k", &[0; 31]).unwrap_err(), KeyError::Ed25519("k".into()));
        let dup = vec![Key::secret("a", b"1").unwrap(), Key::secret("a", b"2").unwrap()];
        assert!(Key::parse_as(Format::Akamai, "p", "52a1").is_ok());
        assert_eq!(Key::parse_as(Format::Akamai, "p", "zz").unwrap_err(), KeyError::Encoding("p".into(), "hex"));
        assert_eq!(Key::parse_as(Format::Bunny, "z", "ed25519:AAAA").unwrap_err(), KeyError::Ed25519Format("z".into()));
        assert_eq!(Key::parse_as(Format::NginxSecureLink, "n", "s3cret").unwrap().secret_bytes(), Some(&b"s3cret"[..]));
        assert_eq!(Keys::new(dup).unwrap_err(), KeyError::Set("a".into()));
    }
}
