//! The one relay URL normalisation used everywhere, so one relay is never two.
//!
//! [`RelayUrl::parse`] accepts `ws://` and `wss://` URLs and normalises them:
//! lower-case host, no trailing dot, no default port, no trailing
//! slashes, no query or fragment. Numeric IPv4 spellings (`ws://2130706433`,
//! `ws://0x7f.1`) become dotted quads. A host is ASCII: an internationalised name is
//! written in its punycode form (`xn--…`); see `check_ascii_host`. Parsing applies no
//! address policy;
//! [`RelayUrlPolicy::check`] decides whether a URL may become a sync target.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use url::{Host, Url};

use crate::address::{forbidden_host_name, forbidden_ip, ForbiddenReason};

/// Longest accepted input (and normalised form), in bytes.
pub const MAX_RELAY_URL_LEN: usize = 2048;

/// A normalised relay URL (`ws://` or `wss://`). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayUrl {
    // `url` comes first so the derived ordering is the ordering of the string;
    // every other field is a function of it.
    url: Arc<str>,
    host_start: usize,
    host_end: usize,
    port: u16,
    ip: Option<IpAddr>,
}

/// Why a string is not an acceptable relay URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayUrlError {
    /// The text is not a valid URL; the message says why.
    Invalid(String),
    /// The scheme is not `ws`/`wss` (or `http`/`https` for clone URLs).
    UnsupportedScheme(String),
    /// The URL carries a user name or password; such URLs are refused.
    Credentials,
    /// The URL has no host.
    NoHost,
    /// The input or its normalised form is longer than [`MAX_RELAY_URL_LEN`].
    TooLong,
    /// The host is a private, local or otherwise forbidden address or name.
    Forbidden(ForbiddenReason),
}

impl fmt::Display for RelayUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayUrlError::Invalid(why) => write!(f, "invalid relay URL: {why}"),
            RelayUrlError::UnsupportedScheme(scheme) => {
                write!(f, "unsupported relay URL scheme `{scheme}`")
            }
            RelayUrlError::Credentials => f.write_str("relay URL must not contain credentials"),
            RelayUrlError::NoHost => f.write_str("relay URL has no host"),
            RelayUrlError::TooLong => {
                write!(f, "relay URL is longer than {MAX_RELAY_URL_LEN} bytes")
            }
            RelayUrlError::Forbidden(reason) => {
                write!(f, "relay URL host is not allowed ({reason})")
            }
        }
    }
}

impl std::error::Error for RelayUrlError {}

/// Returns the lower-cased scheme of `input` if it starts with one.
fn scheme_of(input: &str) -> Option<String> {
    let (scheme, _) = input.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then(|| scheme.to_ascii_lowercase())
}

/// Refuses a host that is not ASCII, or that holds percent escapes (which decode to
/// any bytes), before `url` parses it. The workspace links IDNA without Unicode tables
/// (`idna_adapter` 1.0, pinned in this crate's manifest: 47 KB less of the gzipped
/// browser module), which cannot map such a name; punycode (`xn--…`) needs no mapping.
fn check_ascii_host(input: &str) -> Result<(), RelayUrlError> {
    let after_scheme = input.split_once(':').map_or(input, |(_, rest)| rest);
    let authority = after_scheme
        .trim_start_matches(['/', '\\'])
        .split(['/', '\\', '?', '#'])
        .next()
        .unwrap_or_default();
    if authority.is_ascii() && !authority.contains('%') {
        Ok(())
    } else {
        Err(RelayUrlError::Invalid(
            "the host is not ASCII: write an internationalised name in punycode (xn--…)".into(),
        ))
    }
}

fn parse_url(input: &str) -> Result<Url, RelayUrlError> {
    check_ascii_host(input)?;
    Url::parse(input).map_err(|err| match err {
        url::ParseError::EmptyHost => RelayUrlError::NoHost,
        other => RelayUrlError::Invalid(other.to_string()),
    })
}

fn check_no_credentials(url: &Url) -> Result<(), RelayUrlError> {
    if url.username().is_empty() && url.password().is_none() {
        Ok(())
    } else {
        Err(RelayUrlError::Credentials)
    }
}

/// The normalised host of `url` as it appears in a URL (IPv6 in brackets),
/// plus the address when it is an IP literal.
fn normal_host(url: &Url) -> Result<(String, Option<IpAddr>), RelayUrlError> {
    match url.host() {
        None => Err(RelayUrlError::NoHost),
        Some(Host::Domain(domain)) => {
            let domain = domain.strip_suffix('.').unwrap_or(domain);
            if domain.is_empty() {
                Err(RelayUrlError::NoHost)
            } else if domain.ends_with('.') {
                Err(RelayUrlError::Invalid(
                    "host ends with an empty label".into(),
                ))
            } else {
                Ok((domain.to_ascii_lowercase(), None))
            }
        }
        Some(Host::Ipv4(addr)) => Ok((addr.to_string(), Some(IpAddr::V4(addr)))),
        // `url` writes IPv6 in the WHATWG canonical form, which is what we keep.
        Some(Host::Ipv6(addr)) => match url.host_str() {
            Some(text) => Ok((text.to_owned(), Some(IpAddr::V6(addr)))),
            None => Err(RelayUrlError::NoHost),
        },
    }
}

/// Builds the normalised form of an already parsed `ws`/`wss` URL.
fn build(url: &Url) -> Result<RelayUrl, RelayUrlError> {
    let (scheme, default_port) = match url.scheme() {
        "ws" => ("ws", 80),
        "wss" => ("wss", 443),
        other => return Err(RelayUrlError::UnsupportedScheme(other.to_owned())),
    };
    check_no_credentials(url)?;
    let (host, ip) = normal_host(url)?;
    let explicit_port = url.port().filter(|port| *port != default_port);
    if explicit_port == Some(0) {
        return Err(RelayUrlError::Invalid("port 0".into()));
    }
    let path = url.path().trim_end_matches('/');

    let mut text = String::with_capacity(scheme.len() + 3 + host.len() + 6 + path.len());
    text.push_str(scheme);
    text.push_str("://");
    let bracketed = matches!(ip, Some(IpAddr::V6(_)));
    let host_start = text.len() + usize::from(bracketed);
    text.push_str(&host);
    let host_end = text.len() - usize::from(bracketed);
    if let Some(port) = explicit_port {
        text.push(':');
        text.push_str(&port.to_string());
    }
    text.push_str(path);
    if text.len() > MAX_RELAY_URL_LEN {
        return Err(RelayUrlError::TooLong);
    }
    Ok(RelayUrl {
        url: Arc::from(text),
        host_start,
        host_end,
        port: explicit_port.unwrap_or(default_port),
        ip,
    })
}

impl RelayUrl {
    /// Parses and normalises a `ws://` or `wss://` URL. Applies no address policy.
    pub fn parse(input: &str) -> Result<RelayUrl, RelayUrlError> {
        let input = input.trim();
        if input.len() > MAX_RELAY_URL_LEN {
            return Err(RelayUrlError::TooLong);
        }
        match scheme_of(input).as_deref() {
            Some("ws" | "wss") => {}
            Some(other) => return Err(RelayUrlError::UnsupportedScheme(other.to_owned())),
            None => return Err(RelayUrlError::Invalid("missing scheme".into())),
        }
        let relay = build(&parse_url(input)?)?;
        // Guarantee idempotence: the normalised form must normalise to itself.
        match parse_url(relay.as_str()).and_then(|url| build(&url)) {
            Ok(again) if again.url == relay.url => Ok(relay),
            _ => Err(RelayUrlError::Invalid(
                "URL does not normalise stably".into(),
            )),
        }
    }

    /// Maps a git clone URL to the relay at the same host: `https` becomes
    /// `wss`, `http` becomes `ws`, a non-default port is kept and the path,
    /// query and fragment are dropped. Other schemes (`ssh`, `git`, `file`,
    /// scp-like `user@host:path`) give [`RelayUrlError::UnsupportedScheme`].
    pub fn from_clone_url(input: &str) -> Result<RelayUrl, RelayUrlError> {
        let input = input.trim();
        if input.len() > MAX_RELAY_URL_LEN {
            return Err(RelayUrlError::TooLong);
        }
        let relay_scheme = match scheme_of(input).as_deref() {
            Some("https") => "wss",
            Some("http") => "ws",
            Some(other) => return Err(RelayUrlError::UnsupportedScheme(other.to_owned())),
            None if input.contains(':') && !input.contains("://") => {
                return Err(RelayUrlError::UnsupportedScheme("ssh".into()))
            }
            None => return Err(RelayUrlError::Invalid("missing scheme".into())),
        };
        let url = parse_url(input)?;
        check_no_credentials(&url)?;
        let (host, _) = normal_host(&url)?;
        let relay = match url.port() {
            Some(port) => format!("{relay_scheme}://{host}:{port}"),
            None => format!("{relay_scheme}://{host}"),
        };
        RelayUrl::parse(&relay)
    }

    /// The normalised URL text.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The normalised host: lower-case, no trailing dot, IPv6 without brackets.
    pub fn host(&self) -> &str {
        self.url.get(self.host_start..self.host_end).unwrap_or("")
    }

    /// The address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The explicit port, or the scheme default (80 for `ws`, 443 for `wss`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the scheme is `wss`.
    pub fn is_secure(&self) -> bool {
        self.url.starts_with("wss:")
    }

    /// Where the relay's NIP-11 document is: the same URL over `http(s)`.
    pub fn info_url(&self) -> String {
        match self.url.split_once("://") {
            Some((_, rest)) if self.is_secure() => format!("https://{rest}"),
            Some((_, rest)) => format!("http://{rest}"),
            None => self.url.to_string(),
        }
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RelayUrl").field(&self.as_str()).finish()
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RelayUrl {
    type Err = RelayUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RelayUrl::parse(s)
    }
}

impl AsRef<str> for RelayUrl {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl serde::Serialize for RelayUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for RelayUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RelayUrlVisitor;

        impl serde::de::Visitor<'_> for RelayUrlVisitor {
            type Value = RelayUrl;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a ws:// or wss:// relay URL")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RelayUrl, E> {
                RelayUrl::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(RelayUrlVisitor)
    }
}

/// Which relay URLs may become sync targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayUrlPolicy {
    /// Allow private, loopback, link-local and local-name hosts (default: refuse).
    pub allow_private: bool,
}

impl RelayUrlPolicy {
    /// Refuses `url` with [`RelayUrlError::Forbidden`] when private hosts are not
    /// allowed and its IP literal or host name is forbidden.
    pub fn check(&self, url: &RelayUrl) -> Result<(), RelayUrlError> {
        if self.allow_private {
            return Ok(());
        }
        let reason = match url.ip() {
            Some(ip) => forbidden_ip(ip),
            None => forbidden_host_name(url.host()),
        };
        match reason {
            Some(reason) => Err(RelayUrlError::Forbidden(reason)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::tests::{in_v4, in_v6, V4_FORBIDDEN, V4_PUBLIC, V6_FORBIDDEN, V6_PUBLIC};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use ForbiddenReason as R;

    fn norm(input: &str) -> String {
        match RelayUrl::parse(input) {
            Ok(url) => url.as_str().to_owned(),
            Err(err) => panic!("{input:?} failed: {err}"),
        }
    }

    fn err(input: &str) -> RelayUrlError {
        match RelayUrl::parse(input) {
            Ok(url) => panic!("{input:?} parsed as {url}"),
            Err(err) => err,
        }
    }

    fn policy_err(input: &str) -> Option<ForbiddenReason> {
        let url = RelayUrl::parse(input).unwrap();
        assert_eq!(
            RelayUrlPolicy {
                allow_private: true
            }
            .check(&url),
            Ok(())
        );
        match RelayUrlPolicy::default().check(&url) {
            Ok(()) => None,
            Err(RelayUrlError::Forbidden(reason)) => Some(reason),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn root_forms_are_one_relay() {
        for input in [
            "wss://r.com",
            "wss://r.com/",
            "WSS://R.COM:443/",
            "  wss://r.com//  ",
            "wss://r.com.",
            "wss://R.com.:443",
            "wss://r.com/?a=1",
            "wss://r.com#frag",
            "wss://r.com/?a=1#frag",
        ] {
            assert_eq!(norm(input), "wss://r.com", "{input}");
        }
    }

    #[test]
    fn paths_and_ports() {
        assert_eq!(norm("wss://r.com/nostr/"), "wss://r.com/nostr");
        assert_eq!(norm("wss://r.com/nostr///"), "wss://r.com/nostr");
        assert_eq!(norm("wss://r.com/a/b/?x#y"), "wss://r.com/a/b");
        assert_eq!(norm("wss://r.com/a/./b/../c"), "wss://r.com/a/c");
        assert_eq!(norm("ws://r.com:80/"), "ws://r.com");
        assert_eq!(norm("ws://r.com:443/"), "ws://r.com:443");
        assert_eq!(norm("wss://r.com:80"), "wss://r.com:80");
        assert_eq!(norm("wss://r.com:7777/x/"), "wss://r.com:7777/x");
    }

    #[test]
    fn accessors() {
        let url = RelayUrl::parse("WSS://Relay.Example.COM.:8443/Path/").unwrap();
        assert_eq!(url.as_str(), "wss://relay.example.com:8443/Path");
        assert_eq!(url.host(), "relay.example.com");
        assert_eq!(url.port(), 8443);
        assert!(url.is_secure());
        assert_eq!(url.ip(), None);

        let url = RelayUrl::parse("ws://relay.example.com").unwrap();
        assert_eq!(url.port(), 80);
        assert!(!url.is_secure());
        assert_eq!(RelayUrl::parse("wss://x.io").unwrap().port(), 443);
    }

    #[test]
    fn ipv6_hosts() {
        let url = RelayUrl::parse("ws://[::1]:7000/").unwrap();
        assert_eq!(url.as_str(), "ws://[::1]:7000");
        assert_eq!(url.host(), "::1");
        assert_eq!(url.ip(), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(url.port(), 7000);

        let url = RelayUrl::parse("wss://[2606:4700:0:0::1111]").unwrap();
        assert_eq!(url.as_str(), "wss://[2606:4700::1111]");
        assert_eq!(url.host(), "2606:4700::1111");
        assert_eq!(policy_err(url.as_str()), None);
    }

    /// An internationalised name is accepted in punycode, and refused otherwise (raw or
    /// percent-escaped), with a reason.
    #[test]
    fn hosts_are_ascii() {
        let url = RelayUrl::parse("wss://XN--bcher-kva.Example/").unwrap();
        assert_eq!(url.as_str(), "wss://xn--bcher-kva.example");
        assert_eq!(url.host(), "xn--bcher-kva.example");
        for input in [
            "wss://Bücher.Example/",
            "wss://b%C3%BCcher.example",
            "ws:\\\\üA.example",
            "wss://user@bücher.example:443/path",
        ] {
            let refused = RelayUrl::parse(input);
            assert!(
                matches!(&refused, Err(RelayUrlError::Invalid(why)) if why.contains("punycode")),
                "{input}: {refused:?}"
            );
        }
        // Non-ASCII after the host is the path's business.
        assert_eq!(norm("wss://r.example/ü"), "wss://r.example/%C3%BC");
        assert!(RelayUrl::from_clone_url("https://bücher.example/repo.git").is_err());
    }

    #[test]
    fn numeric_ipv4_forms() {
        for input in [
            "ws://2130706433",
            "ws://0x7f.1",
            "ws://0177.0.0.1",
            "ws://0x7F000001",
            "ws://127.1",
            "ws://127.0.0.1.",
        ] {
            let url = RelayUrl::parse(input).unwrap();
            assert_eq!(url.as_str(), "ws://127.0.0.1", "{input}");
            assert_eq!(url.ip(), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            assert_eq!(policy_err(input), Some(R::Loopback), "{input}");
        }
        assert_eq!(norm("ws://167772161"), "ws://10.0.0.1");
        assert_eq!(policy_err("ws://167772161"), Some(R::Private));
    }

    #[test]
    fn ipv4_mapped_ipv6() {
        for input in ["ws://[::ffff:127.0.0.1]", "ws://[::ffff:7f00:1]"] {
            let url = RelayUrl::parse(input).unwrap();
            assert_eq!(url.as_str(), "ws://[::ffff:7f00:1]");
            assert_eq!(url.host(), "::ffff:7f00:1");
            assert_eq!(policy_err(input), Some(R::Loopback));
        }
        assert_eq!(policy_err("wss://[::ffff:8.8.8.8]"), None);
    }

    #[test]
    fn policy_literals() {
        let cases = [
            ("ws://0.0.0.0", Some(R::Unspecified)),
            ("ws://[::]", Some(R::Unspecified)),
            ("ws://[::1]", Some(R::Loopback)),
            ("ws://100.64.0.1", Some(R::SharedCgnat)),
            ("ws://100.128.0.1", None),
            ("ws://172.15.255.255", None),
            ("ws://172.16.0.1", Some(R::Private)),
            ("ws://172.31.255.255", Some(R::Private)),
            ("ws://172.32.0.0", None),
            ("ws://169.254.169.254", Some(R::LinkLocal)),
            ("ws://255.255.255.255", Some(R::Broadcast)),
            ("ws://[fe80::1]", Some(R::LinkLocal)),
            ("ws://[fd00::1]", Some(R::UniqueLocal)),
            ("ws://[2002:c0a8:101::1]", Some(R::Private)),
            ("ws://[2002:808:808::1]", None),
            ("ws://[64:ff9b::7f00:1]", Some(R::Loopback)),
            ("ws://[64:ff9b::808:808]", None),
            ("ws://[2001:db8::1]", Some(R::Documentation)),
            ("wss://1.1.1.1", None),
            ("wss://8.8.8.8", None),
            ("wss://93.184.216.34", None),
        ];
        for (input, want) in cases {
            assert_eq!(policy_err(input), want, "{input}");
        }
    }

    #[test]
    fn policy_names() {
        for input in [
            "ws://localhost",
            "ws://localhost.",
            "ws://LOCALHOST",
            "ws://foo.localhost",
            "ws://printer.local",
            "ws://db.internal",
            "ws://nas.home.arpa",
            "ws://box.lan",
            "ws://intranet",
        ] {
            assert_eq!(policy_err(input), Some(R::LocalName), "{input}");
        }
        assert_eq!(norm("ws://localhost."), "ws://localhost");
        assert_eq!(norm("ws://LOCALHOST"), "ws://localhost");
        assert_eq!(
            RelayUrl::parse("ws://LocalHost.").unwrap().host(),
            "localhost"
        );
        for input in [
            "wss://relay.damus.io",
            "wss://nos.lol",
            "wss://relay.ngit.dev/",
        ] {
            assert_eq!(policy_err(input), None, "{input}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("http://r.com"),
            RelayUrlError::UnsupportedScheme("http".into())
        );
        assert_eq!(
            err("HTTPS://r.com"),
            RelayUrlError::UnsupportedScheme("https".into())
        );
        assert_eq!(
            err("ftp://[oops"),
            RelayUrlError::UnsupportedScheme("ftp".into())
        );
        assert!(matches!(err("relay.damus.io"), RelayUrlError::Invalid(_)));
        assert!(matches!(err(""), RelayUrlError::Invalid(_)));
        assert!(matches!(err("wss://[::1"), RelayUrlError::Invalid(_)));
        assert!(matches!(
            err("wss://r.com:99999"),
            RelayUrlError::Invalid(_)
        ));
        assert!(matches!(err("wss://r.com:0"), RelayUrlError::Invalid(_)));
        assert!(matches!(err("wss://r.com.."), RelayUrlError::Invalid(_)));
        assert_eq!(err("wss://user@r.com"), RelayUrlError::Credentials);
        assert_eq!(err("wss://user:pw@r.com"), RelayUrlError::Credentials);
        assert_eq!(err("wss://:pw@r.com"), RelayUrlError::Credentials);
        assert_eq!(err("ws://"), RelayUrlError::NoHost);
        assert_eq!(err("wss://:443"), RelayUrlError::NoHost);
        let long = format!("wss://r.com/{}", "a".repeat(MAX_RELAY_URL_LEN));
        assert_eq!(err(&long), RelayUrlError::TooLong);
        // Percent-encoding can grow the path past the limit.
        let growing = format!("wss://r.com/{}x", "{".repeat(1000));
        assert_eq!(err(&growing), RelayUrlError::TooLong);
    }

    #[test]
    fn error_display() {
        assert_eq!(
            RelayUrlError::Forbidden(R::Loopback).to_string(),
            "relay URL host is not allowed (loopback)"
        );
        assert_eq!(
            RelayUrlError::UnsupportedScheme("ssh".into()).to_string(),
            "unsupported relay URL scheme `ssh`"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(RelayUrlError::NoHost);
        assert_eq!(boxed.to_string(), "relay URL has no host");
    }

    #[test]
    fn clone_urls() {
        let cases = [
            (
                "https://relay.ngit.dev/npub1abc/repo.git",
                "wss://relay.ngit.dev",
            ),
            ("HTTPS://Git.Example.COM./a/b?c#d", "wss://git.example.com"),
            ("http://git.example.com/repo", "ws://git.example.com"),
            (
                "https://git.example.com:8443/repo",
                "wss://git.example.com:8443",
            ),
            ("https://git.example.com:443/repo", "wss://git.example.com"),
            ("http://git.example.com:80/repo", "ws://git.example.com"),
            ("http://git.example.com:8080", "ws://git.example.com:8080"),
            ("https://git.example.com:80/", "wss://git.example.com:80"),
            ("https://[2606:4700::1111]/r.git", "wss://[2606:4700::1111]"),
        ];
        for (input, want) in cases {
            match RelayUrl::from_clone_url(input) {
                Ok(url) => assert_eq!(url.as_str(), want, "{input}"),
                Err(e) => panic!("{input}: {e}"),
            }
        }
        for (input, scheme) in [
            ("ssh://git@github.com/a/b.git", "ssh"),
            ("git://github.com/a/b.git", "git"),
            ("file:///srv/repo.git", "file"),
            ("git@github.com:a/b.git", "ssh"),
            ("wss://relay.example.com", "wss"),
        ] {
            assert_eq!(
                RelayUrl::from_clone_url(input),
                Err(RelayUrlError::UnsupportedScheme(scheme.into())),
                "{input}"
            );
        }
        assert_eq!(
            RelayUrl::from_clone_url("https://user:token@git.example.com/r.git"),
            Err(RelayUrlError::Credentials)
        );
        assert_eq!(
            RelayUrl::from_clone_url("https:///"),
            Err(RelayUrlError::NoHost)
        );
        assert!(matches!(
            RelayUrl::from_clone_url("/srv/repo.git"),
            Err(RelayUrlError::Invalid(_))
        ));
    }

    #[test]
    fn traits() {
        let a: RelayUrl = "WSS://R.COM/".parse().unwrap();
        let b = RelayUrl::parse("wss://r.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "wss://r.com");
        assert_eq!(format!("{a:?}"), "RelayUrl(\"wss://r.com\")");
        let set: std::collections::HashSet<_> = [a.clone(), b.clone()].into_iter().collect();
        assert_eq!(set.len(), 1);
        let c = RelayUrl::parse("wss://s.com").unwrap();
        assert!(a < c);
        assert_eq!(a.as_ref(), "wss://r.com");
    }

    #[test]
    fn serde_round_trip() {
        let url = RelayUrl::parse("wss://r.com/nostr").unwrap();
        let json = serde_json::to_string(&url).unwrap();
        assert_eq!(json, "\"wss://r.com/nostr\"");
        let back: RelayUrl = serde_json::from_str(&json).unwrap();
        assert_eq!(back, url);
        let normalised: RelayUrl = serde_json::from_str("\"WSS://R.COM:443/nostr/\"").unwrap();
        assert_eq!(normalised, url);
        let owned: Vec<RelayUrl> =
            serde_json::from_value(serde_json::json!(["wss://r.com/nostr"])).unwrap();
        assert_eq!(owned, vec![url]);
        assert!(serde_json::from_str::<RelayUrl>("\"http://r.com\"").is_err());
        assert!(serde_json::from_str::<RelayUrl>("42").is_err());
    }

    fn random_case(text: &str, mask: u64) -> String {
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    fn host_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            (
                proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..4),
                "[a-z]{2,6}",
                any::<bool>()
            )
                .prop_map(|(labels, tld, dot)| {
                    let mut host = labels.join(".");
                    host.push('.');
                    host.push_str(&tld);
                    if dot {
                        host.push('.');
                    }
                    host
                }),
            any::<u32>().prop_map(|n| Ipv4Addr::from(n).to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| format!("{n:#x}")),
            any::<[u8; 4]>().prop_map(|o| format!("0{:o}.0{:o}.{}.0x{:x}", o[0], o[1], o[2], o[3])),
            any::<u128>().prop_map(|n| format!("[{}]", Ipv6Addr::from(n))),
            any::<u32>().prop_map(|n| format!("[::ffff:{}]", Ipv4Addr::from(n))),
            Just("localhost".to_owned()),
            Just("xn--bcher-kva.example".to_owned()),
        ]
    }

    fn url_strategy() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("ws"), Just("wss")],
            host_strategy(),
            prop_oneof![
                Just(None),
                Just(Some(80u16)),
                Just(Some(443u16)),
                (1u16..).prop_map(Some)
            ],
            proptest::collection::vec("[A-Za-z0-9._~%-]{0,6}", 0..4),
            0usize..4,
            proptest::option::of("[a-z0-9=&]{0,8}"),
            proptest::option::of("[a-z0-9]{0,8}"),
            any::<u64>(),
            prop_oneof![Just(""), Just(" "), Just("\t\n ")],
        )
            .prop_map(
                |(scheme, host, port, segments, slashes, query, fragment, mask, ws)| {
                    let mut url = format!(
                        "{ws}{}://{}",
                        random_case(scheme, mask),
                        random_case(&host, mask.rotate_left(7))
                    );
                    if let Some(port) = port {
                        url.push_str(&format!(":{port}"));
                    }
                    for segment in segments {
                        url.push('/');
                        url.push_str(&segment);
                    }
                    url.push_str(&"/".repeat(slashes));
                    if let Some(query) = query {
                        url.push('?');
                        url.push_str(&query);
                    }
                    if let Some(fragment) = fragment {
                        url.push('#');
                        url.push_str(&fragment);
                    }
                    url.push_str(ws);
                    url
                },
            )
    }

    fn check_idempotent(input: &str) -> Result<(), TestCaseError> {
        if let Ok(url) = RelayUrl::parse(input) {
            let again = RelayUrl::parse(url.as_str());
            prop_assert_eq!(again.as_ref(), Ok(&url), "input {:?}", input);
            let text = url.as_str();
            prop_assert!(!text.ends_with('/'));
            prop_assert!(!text.contains('?') && !text.contains('#'));
            prop_assert!(!url.host().ends_with('.'));
            prop_assert_eq!(url.host().to_ascii_lowercase(), url.host());
            prop_assert!(text.len() <= MAX_RELAY_URL_LEN);
            prop_assert_eq!(url.ip(), url.host().parse::<IpAddr>().ok());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(input in url_strategy()) {
            prop_assert!(RelayUrl::parse(&input).is_ok(), "{:?} should parse", input);
            check_idempotent(&input)?;
        }

        #[test]
        fn arbitrary_input_never_panics(input in "\\PC{0,80}") {
            check_idempotent(&input)?;
            let _ = RelayUrl::from_clone_url(&input);
        }

        #[test]
        fn arbitrary_ws_input_is_idempotent(input in "(ws|wss|WS|Wss)://[\\PC]{0,60}") {
            check_idempotent(&input)?;
        }

        #[test]
        fn arbitrary_clone_input_maps_to_root(input in "https?://[\\PC]{0,60}") {
            if let Ok(url) = RelayUrl::from_clone_url(&input) {
                let rest = url.as_str().split_once("://").map(|(_, rest)| rest).unwrap_or("");
                prop_assert!(!rest.contains('/'), "{}", url);
                prop_assert_eq!(RelayUrl::parse(url.as_str()), Ok(url.clone()));
            }
        }

        #[test]
        fn policy_refuses_forbidden_v4(idx in 0..V4_FORBIDDEN.len(), bits in any::<u32>(), decimal in any::<bool>()) {
            let (net, prefix, _) = V4_FORBIDDEN[idx];
            let addr = in_v4(net, prefix, bits);
            let host = if decimal { u32::from(addr).to_string() } else { addr.to_string() };
            let url = RelayUrl::parse(&format!("wss://{host}:4443/x")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(url.ip(), Some(IpAddr::V4(addr)));
            let want = forbidden_ip(IpAddr::V4(addr));
            prop_assert!(want.is_some());
            prop_assert_eq!(RelayUrlPolicy::default().check(&url), Err(RelayUrlError::Forbidden(want.unwrap_or(R::Reserved))));
            prop_assert_eq!(RelayUrlPolicy { allow_private: true }.check(&url), Ok(()));
            let mapped = RelayUrl::parse(&format!("ws://[::ffff:{addr}]")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(RelayUrlPolicy::default().check(&mapped).is_err());
        }

        #[test]
        fn policy_refuses_forbidden_v6(idx in 0..V6_FORBIDDEN.len(), bits in any::<u128>()) {
            let (net, prefix, reason) = V6_FORBIDDEN[idx];
            let addr = in_v6(net, prefix, bits);
            let url = RelayUrl::parse(&format!("ws://[{addr}]/")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(RelayUrlPolicy::default().check(&url), Err(RelayUrlError::Forbidden(reason)));
            prop_assert_eq!(RelayUrlPolicy { allow_private: true }.check(&url), Ok(()));
        }

        #[test]
        fn policy_accepts_public(v4 in (0..V4_PUBLIC.len(), any::<u32>()), v6 in (0..V6_PUBLIC.len(), any::<u128>()), labels in proptest::collection::vec("[a-z0-9]{1,10}", 1..3)) {
            let (net, prefix) = V4_PUBLIC[v4.0];
            let addr = in_v4(net, prefix, v4.1);
            let (net6, prefix6) = V6_PUBLIC[v6.0];
            let addr6 = in_v6(net6, prefix6, v6.1);
            let name = format!("{}.com", labels.join("."));
            for input in [format!("wss://{addr}"), format!("wss://[{addr6}]:8080"), format!("wss://{name}/")] {
                let url = RelayUrl::parse(&input).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(RelayUrlPolicy::default().check(&url), Ok(()), "{}", input);
            }
        }

        #[test]
        fn policy_refuses_local_names(label in "[a-z][a-z0-9]{0,9}", idx in 0..6usize, upper in any::<u64>()) {
            let host = match idx {
                0 => label.clone(),
                1 => format!("{label}.localhost"),
                2 => format!("{label}.local"),
                3 => format!("{label}.internal"),
                4 => format!("{label}.home.arpa"),
                _ => format!("{label}.lan."),
            };
            let url = RelayUrl::parse(&format!("ws://{}", random_case(&host, upper))).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(RelayUrlPolicy::default().check(&url), Err(RelayUrlError::Forbidden(R::LocalName)));
            prop_assert_eq!(RelayUrlPolicy { allow_private: true }.check(&url), Ok(()));
        }
    }
}
