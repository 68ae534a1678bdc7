//! The key the pool groups connections by: scheme, host and port.

use std::fmt;

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::HeaderValue;

use crate::error::Error;

/// An origin in canonical form: the default port is left out, user information is
/// dropped, and the host compares without regard to case (as `Authority` does).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    scheme: Scheme,
    authority: Authority,
}

impl Origin {
    pub(crate) fn from_uri(uri: &Uri) -> Result<Origin, Error> {
        let scheme = uri.scheme().ok_or_else(|| {
            Error::invalid_uri(format!(
                "`{uri}` has no scheme; the client needs an absolute URI such as http://host/path"
            ))
        })?;
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            other => {
                return Err(Error::invalid_uri(format!(
                    "`{uri}` has scheme `{other}`; only `http` and `https` are supported"
                )))
            }
        };
        let authority = match uri.authority() {
            Some(a) if !a.host().is_empty() => a,
            _ => return Err(Error::invalid_uri(format!("`{uri}` has no host"))),
        };
        let needs_rewrite =
            authority.as_str().contains('@') || authority.port_u16() == Some(default_port);
        let authority = if needs_rewrite {
            let rebuilt = match authority.port_u16() {
                Some(port) if port != default_port => format!("{}:{port}", authority.host()),
                _ => authority.host().to_owned(),
            };
            rebuilt
                .parse()
                .map_err(|_| Error::invalid_uri(format!("`{uri}` has an invalid host")))?
        } else {
            authority.clone()
        };
        Ok(Origin {
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
}
