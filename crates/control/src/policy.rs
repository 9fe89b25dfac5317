//! Checks of the values a policy and a link carry — country codes and rules,
//! edge base URLs — shared by the configuration (checked at start-up) and
//! minting (checked per request). Pure: no I/O, no state.

use stile_token::{Country, CountryRule, MAX_COUNTRIES};

/// Why a policy value is refused. The messages name the value and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PolicyError {
    /// Not an ISO 3166-1 alpha-2 code.
    #[error("{0:?} is not an ISO 3166-1 alpha-2 country code")]
    Country(String),
    /// Both an allow-list and a deny-list.
    #[error("give allow or deny countries, not both")]
    AllowAndDeny,
    /// More countries than a token carries.
    #[error("at most {MAX_COUNTRIES} countries")]
    TooManyCountries,
    /// A base URL that is not `http://` or `https://`.
    #[error("{0:?} must start with https:// or http://")]
    BaseUrlScheme(String),
    /// A base URL with more than scheme, host and port.
    #[error("{0:?} must be scheme://host[:port] with no path, query or fragment")]
    BaseUrlShape(String),
}

/// Parses an ISO 3166-1 alpha-2 code (either case).
pub(crate) fn parse_country(code: &str) -> Result<Country, PolicyError> {
    Country::parse(code).ok_or_else(|| PolicyError::Country(code.to_owned()))
}

/// A country rule from allow- and deny-lists; at most one may be non-empty.
pub(crate) fn country_rule(allow: &[String], deny: &[String]) -> Result<Option<CountryRule>, PolicyError> {
    let parse = |codes: &[String]| codes.iter().map(|c| parse_country(c)).collect::<Result<Vec<_>, _>>();
    let rule = match (allow.is_empty(), deny.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => CountryRule::Allow(parse(allow)?),
        (true, false) => CountryRule::Deny(parse(deny)?),
        (false, false) => return Err(PolicyError::AllowAndDeny),
    };
    if rule.countries().len() > MAX_COUNTRIES {
        return Err(PolicyError::TooManyCountries);
    }
    Ok(Some(rule))
}

/// Checks an edge base URL (`http(s)://authority`, no path, query or
/// fragment) and returns it without a trailing `/`.
pub(crate) fn normalise_base_url(url: &str) -> Result<String, PolicyError> {
    let trimmed = url.trim_end_matches('/');
    let authority = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| PolicyError::BaseUrlScheme(url.to_owned()))?;
    if authority.is_empty()
        || !authority.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err(PolicyError::BaseUrlShape(url.to_owned()));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(normalise_base_url("https://e.example:8443/"), Ok("https://e.example:8443".into()));
        assert_eq!(normalise_base_url("http://[::1]:8080"), Ok("http://[::1]:8080".into()));
        // "https://" loses its trailing slashes first: no scheme is left.
        for bad in ["ftp://e", "e.example", "https://"] {
            assert_eq!(normalise_base_url(bad), Err(PolicyError::BaseUrlScheme(bad.into())), "{bad}");
        }
        for bad in ["https://e/x", "https://e?x=1", "https://e#f", "https://u@e"] {
            assert_eq!(normalise_base_url(bad), Err(PolicyError::BaseUrlShape(bad.into())), "{bad}");
        }
    }

    #[test]
    fn country_rules() {
        let codes = |c: &[&str]| c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(country_rule(&[], &[]), Ok(None));
        let fr = stile_token::Country::parse("FR").unwrap();
        assert_eq!(country_rule(&codes(&["fr"]), &[]), Ok(Some(CountryRule::Allow(vec![fr]))));
        assert_eq!(country_rule(&[], &codes(&["FR"])), Ok(Some(CountryRule::Deny(vec![fr]))));
        assert_eq!(country_rule(&codes(&["US"]), &codes(&["FR"])), Err(PolicyError::AllowAndDeny));
        assert_eq!(country_rule(&codes(&["USA"]), &[]), Err(PolicyError::Country("USA".into())));
        let many: Vec<String> = (0..=MAX_COUNTRIES).map(|i| format!("A{}", (b'A' + i as u8 % 26) as char)).collect();
        assert_eq!(country_rule(&many, &[]), Err(PolicyError::TooManyCountries));
    }
}
