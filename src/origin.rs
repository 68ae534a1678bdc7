//! Where a request goes, in the forms each layer needs: the [`Origin`] the pool groups
//! connections by, the `Host` header value, the host and port a connector dials, the
//! origin-form request target written on the wire, and the origin named in errors.
//!
//! Every piece of code that takes a URI apart reads it through here, so that the pool
//! key, the `Host` header and the error text always agree. A leaf below the pool: it
//! imports only the error type.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

use crate::error::Error;

/// The port a URI with `scheme` and no port of its own refers to; `None` for schemes
/// the client does not speak.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// What [`Origin::from_uri`] needs to know of an authority.
#[derive(Debug, PartialEq, Eq)]
struct AuthorityParts {
    has_userinfo: bool,
    host_is_empty: bool,
    /// As `Authority::port_u16` reads it.
    port: Option<u16>,
}

/// The answers of `Authority::host` and `Authority::port_u16` (and a search for `@`)
/// in one pass over the bytes: those three walk the authority as a generic string
/// search each, on every request. An authority with user information, rare in a
/// request URI, takes `Authority::host` as it is.
fn authority_parts(authority: &Authority) -> AuthorityParts {
    let text = authority.as_str();
    let mut has_userinfo = false;
    let mut last_colon = None;
    for (i, byte) in text.bytes().enumerate() {
        match byte {
            b'@' => has_userinfo = true,
            b':' => last_colon = Some(i),
            _ => {}
        }
    }
    // Without user information the host is what comes before the first `:` (or a
    // bracketed IPv6 literal, never empty): it is empty only when nothing is there.
    let host_is_empty = if has_userinfo {
        authority.host().is_empty()
    } else {
        text.is_empty() || text.starts_with(':')
    };
    // As `Authority::port`: whatever follows the last `:`, if it is a `u16`.
    let port = last_colon.and_then(|i| text.get(i + 1..)?.parse::<u16>().ok());
    AuthorityParts {
        has_userinfo,
        host_is_empty,
        port,
    }
}

/// An origin in canonical form: the default port is left out, user information is
/// dropped, and the host compares without regard to case (as `Authority` does).
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// The pool looks an origin up twice per request (checkout and check-in), and
    /// `Authority`'s own `Hash` feeds the hasher one lowercased byte at a time: about
    /// a thousand instructions per lookup. So the hash is computed once, in one write,
    /// when the origin is built. It is keyed (per process), as the map's own hasher
    /// is, so that chosen host names cannot make the pool's maps collide.
    hash: u64,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Origin) -> bool {
        // Equal origins have equal hashes: a cheap way to tell most others apart.
        // `Authority`'s own comparison ignores case byte by byte; the origins the pool
        // compares are nearly always spelled alike, which one memcmp settles.
        self.hash == other.hash
            && self.scheme == other.scheme
            && (self.authority.as_str() == other.authority.as_str()
                || self.authority == other.authority)
    }
}

impl Eq for Origin {}

impl Hash for Origin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A map keyed by [`Origin`], hashed by the origin's own keyed hash: no second hash
/// over it per lookup (the pool looks origins up several times per request).
pub(crate) type OriginMap<V> =
    std::collections::HashMap<Origin, V, std::hash::BuildHasherDefault<OriginHasher>>;

/// The hasher of an [`OriginMap`]: it passes on the hash [`Origin`] computed when it was
/// built, which is keyed per process, so that chosen host names cannot make the map's
/// entries collide any more than with the standard hasher.
#[derive(Default)]
pub(crate) struct OriginHasher(u64);

impl Hasher for OriginHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    /// Never called for an `Origin`, which writes one `u64`; any other bytes are mixed
    /// in rather than dropped.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The keyed hash of an origin, consistent with its `PartialEq`: the scheme and the
/// authority compared without regard to ASCII case.
fn origin_hash(scheme: &Scheme, authority: &Authority) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    // Lowercased into a stack buffer so the hasher sees one write per part; a longer
    // authority (host names run to 253 bytes) goes in chunks, with the same result
    // for equal authorities whatever their case.
    let mut buf = [0u8; 64];
    for part in [scheme.as_str(), authority.as_str()] {
        for chunk in part.as_bytes().chunks(buf.len()) {
            let lower = &mut buf[..chunk.len()];
            lower.copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            hasher.write(lower);
        }
        // Ends each part, so that scheme "ab" + host "c" differs from "a" + "bc".
        hasher.write_u8(0xff);
    }
    hasher.finish()
}

impl Origin {
    pub(crate) fn from_uri(uri: &Uri) -> Result<Origin, Error> {
        let Some(scheme) = uri.scheme() else {
            return Err(invalid_uri(uri, Invalid::NoScheme));
        };
        let Some(default_port) = default_port(scheme.as_str()) else {
            return Err(invalid_uri(uri, Invalid::Scheme));
        };
        let Some(authority) = uri.authority() else {
            return Err(invalid_uri(uri, Invalid::NoHost));
        };
        let AuthorityParts {
            has_userinfo,
            host_is_empty,
            port,
        } = authority_parts(authority);
        if host_is_empty {
            return Err(invalid_uri(uri, Invalid::NoHost));
        }
        let authority = if has_userinfo || port == Some(default_port) {
            canonical_authority(authority, default_port)
                .ok_or_else(|| invalid_uri(uri, Invalid::Host))?
        } else {
            authority.clone()
        };
        Ok(Origin {
            hash: origin_hash(scheme, &authority),
            scheme: scheme.clone(),
            authority,
        })
    }

    /// The URI handed to the connector: the origin with path `/`.
    pub(crate) fn to_uri(&self) -> Uri {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static("/"))
            .build()
            .expect("scheme and authority were taken from a valid URI")
    }

    /// The `Host` header value for requests to this origin.
    pub(crate) fn host_header(&self) -> HeaderValue {
        HeaderValue::from_str(self.authority.as_str())
            .expect("an Authority contains only valid header characters")
    }

    /// `host[:port]` as in [`host_header`](Self::host_header), for messages.
    pub(crate) fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

/// What is wrong with a URI the client cannot send to.
enum Invalid {
    NoScheme,
    Scheme,
    NoHost,
    Host,
}

/// The error for a URI [`Origin::from_uri`] refuses. Out of line and cold: the request
/// path stays short in the instruction cache.
#[cold]
#[inline(never)]
fn invalid_uri(uri: &Uri, what: Invalid) -> Error {
    Error::invalid_uri(match what {
        Invalid::NoScheme => format!(
            "`{uri}` has no scheme; the client needs an absolute URI such as http://host/path"
        ),
        Invalid::Scheme => format!(
            "`{uri}` has scheme `{}`; only `http` and `https` are supported",
            uri.scheme_str().unwrap_or_default()
        ),
        Invalid::NoHost => format!("`{uri}` has no host"),
        Invalid::Host => format!("`{uri}` has an invalid host"),
    })
}

/// `authority` without user information and without the scheme's default port; `None`
/// if what is left does not parse. Out of line: almost no request needs it.
#[cold]
#[inline(never)]
fn canonical_authority(authority: &Authority, default_port: u16) -> Option<Authority> {
    let rebuilt = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    rebuilt.parse().ok()
}

/// The host a connector dials (an IPv6 literal keeps its brackets) and the port: the
/// URI's own, else 443 for `https` and 80 for anything else (a connector that does not
/// insist on `http` may be handed other schemes).
pub(crate) fn host_and_port(uri: &Uri) -> Result<(&str, u16), Error> {
    let host = uri
        .host()
        .ok_or_else(|| Error::invalid_uri(format!("`{uri}` has no host")))?;
    let port = uri
        .port_u16()
        .or_else(|| uri.scheme_str().and_then(default_port))
        .unwrap_or(80);
    Ok((host, port))
}

/// The request target written on the wire for `uri` (RFC 9112 origin-form): its path
/// and query, `/` when it has neither. Scheme and authority travel in the `Host`
/// header instead.
pub(crate) fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// How an error names the origin of `uri`: `scheme://host[:port]`, never with user
/// information (it may hold a password). A URI that names no origin is shown as given.
pub(crate) fn describe(uri: &Uri) -> String {
    match Origin::from_uri(uri) {
        Ok(origin) => origin.to_string(),
        Err(_) => match (uri.scheme_str(), uri.host()) {
            (Some(scheme), Some(host)) => format!("{scheme}://{host}"),
            _ if uri.authority().is_none() => uri.to_string(),
            _ => String::from("(invalid URI)"),
        },
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(uri: &str) -> Result<Origin, Error> {
        Origin::from_uri(&uri.parse().unwrap())
    }

    #[test]
    fn an_origin_map_finds_an_origin_however_it_is_spelled_and_keeps_others_apart() {
        let mut map = OriginMap::default();
        map.insert(origin("http://Example.com/a").unwrap(), 1);
        map.insert(origin("https://example.com/").unwrap(), 2);
        map.insert(origin("http://example.com:8080/").unwrap(), 3);
        assert_eq!(
            map.get(&origin("http://example.COM:80/b").unwrap()),
            Some(&1)
        );
        assert_eq!(
            map.get(&origin("https://EXAMPLE.com:443/").unwrap()),
            Some(&2)
        );
        assert_eq!(
            map.get(&origin("http://example.com:8080/x").unwrap()),
            Some(&3)
        );
        assert_eq!(map.get(&origin("http://example.org/").unwrap()), None);
    }

    #[test]
    fn default_ports_case_and_userinfo_do_not_split_an_origin() {
        let a = origin("http://Example.com/a").unwrap();
        assert_eq!(a, origin("http://example.com:80/b?c").unwrap());
        assert_eq!(a, origin("http://user:pw@example.com/").unwrap());
        assert_ne!(a, origin("http://example.com:8080/").unwrap());
        assert_ne!(a, origin("https://example.com/").unwrap());
        assert_eq!(origin("https://h:443/").unwrap().to_string(), "https://h");
        assert_eq!(
            origin("http://h:8080/x").unwrap().to_uri(),
            "http://h:8080/"
        );
    }

    #[test]
    fn origins_that_compare_equal_hash_equal_whatever_the_case_or_length() {
        use std::collections::HashSet;
        let long = "a-long-label-that-spans-more-than-one-chunk-of-the-hash-buffer.".repeat(3);
        let lower = origin(&format!("http://{long}example.com:8080/")).unwrap();
        let upper = origin(&format!("http://{}EXAMPLE.COM:8080/x", long.to_uppercase())).unwrap();
        assert_eq!(lower, upper);
        let set: HashSet<Origin> = [lower.clone(), upper].into_iter().collect();
        assert_eq!(set.len(), 1);
        assert!(!set.contains(&origin("http://Example.com/").unwrap()));
        assert_ne!(
            lower,
            origin(&format!("http://{long}example.com:8081/")).unwrap()
        );
        assert_ne!(
            lower,
            origin(&format!("https://{long}example.com:8080/")).unwrap()
        );
    }

    #[test]
    fn authority_parts_agree_with_authority_itself() {
        let mut parsed = 0;
        for text in [
            "example.com",
            "Example.COM:8080",
            "h:80",
            "h:080",
            "h:",
            "h:65536",
            "h:99999999999999999999",
            ":80",
            "127.0.0.1:443",
            "[::1]",
            "[::1]:8080",
            "[::1]:",
            "[fe80::1:2]",
            "user@h",
            "user:pw@h:81",
            "user:pw@",
            "user@:80",
            "a@b@c:1",
        ] {
            let Ok(authority) = text.parse::<Authority>() else {
                continue;
            };
            let expected = AuthorityParts {
                has_userinfo: authority.as_str().contains('@'),
                host_is_empty: authority.host().is_empty(),
                port: authority.port_u16(),
            };
            assert_eq!(authority_parts(&authority), expected, "{text}");
            parsed += 1;
        }
        // `Authority` refuses an entry or two; the rest are really compared.
        assert!(parsed >= 16, "only {parsed} authorities parsed");
    }

    #[test]
    fn uris_without_scheme_or_host_are_refused_by_name() {
        let err = origin("/just/a/path").unwrap_err();
        assert!(err.is_invalid_uri());
        assert!(
            err.to_string().contains("`/just/a/path` has no scheme"),
            "{err}"
        );
        let err = origin("ftp://h/").unwrap_err();
        assert!(err.to_string().contains("scheme `ftp`"), "{err}");
    }

    #[test]
    fn host_header_is_the_canonical_authority() {
        assert_eq!(origin("http://u@h:80/").unwrap().host_header(), "h");
        assert_eq!(
            origin("http://[::1]:81/").unwrap().host_header(),
            "[::1]:81"
        );
    }

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        let target = |uri: &'static str| origin_form(&Uri::from_static(uri)).to_string();
        assert_eq!(target("http://u:p@a.test:8080/x/y?z=1"), "/x/y?z=1");
        assert_eq!(target("http://a.test"), "/");
        assert_eq!(target("http://a.test?z=1"), "/?z=1");
        assert_eq!(target("/already?origin=form"), "/already?origin=form");
    }

    #[test]
    fn host_and_port_fall_back_to_the_scheme_default() {
        let dial = |uri: &'static str| {
            let uri = Uri::from_static(uri);
            let (host, port) = host_and_port(&uri).unwrap();
            (host.to_owned(), port)
        };
        assert_eq!(dial("http://a.test/"), ("a.test".to_owned(), 80));
        assert_eq!(dial("https://a.test/"), ("a.test".to_owned(), 443));
        assert_eq!(dial("https://a.test:8443/"), ("a.test".to_owned(), 8443));
        assert_eq!(dial("http://u:p@[::1]:81/"), ("[::1]".to_owned(), 81));
        assert_eq!(dial("ftp://a.test/"), ("a.test".to_owned(), 80));
        let err = host_and_port(&Uri::from_static("/path")).unwrap_err();
        assert!(err.is_invalid_uri());
        assert!(err.to_string().contains("`/path` has no host"), "{err}");
    }
}
