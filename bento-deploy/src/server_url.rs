//! Where a host's server is: agent.toml's `server`, parsed once when the file is read
//! (`sftp://user@address:port`, `file:///dir`, or an `s3://` place).

use std::path::PathBuf;

/// Where the server is, parsed from agent.toml's `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerUrl {
    /// `sftp://user@address:port`
    Sftp {
        /// The sftp user (`<user_prefix><host>`).
        user: String,
        /// Host name or address.
        address: String,
        /// Port.
        port: u16,
    },
    /// `file:///dir`: the server root; the host's directory is `<dir>/<host>`.
    Local(PathBuf),
    /// `s3://BUCKET[/PREFIX]?endpoint=…&region=…`: object storage (see [`crate::s3`]).
    S3(crate::s3::url::S3Url),
}

/// Why a server URL was refused: each message quotes the URL and shows the form expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `file://` with a relative path.
    #[error("`{0}`: a file:// server needs an absolute path (file:///srv/bento)")]
    RelativeFile(String),
    /// Neither `sftp://`, `file://` nor `s3://`.
    #[error("`{0}`: expected sftp://user@address:port, file:///dir or s3://BUCKET?endpoint=…&region=…")]
    Scheme(String),
    /// A malformed `s3://` URL.
    #[error(transparent)]
    S3(#[from] crate::s3::url::S3UrlError),
    /// `sftp://` without `user@`.
    #[error("`{0}`: name the sftp user: sftp://user@address:port")]
    NoUser(String),
    /// A port that is not a number from 1 to 65535.
    #[error("`{url}`: bad port `{port}`")]
    Port {
        /// The URL as written.
        url: String,
        /// The port as written.
        port: String,
    },
    /// An empty user or address, or one with `/`, ` `, `@`, or a leading `-`.
    #[error("`{0}`: expected sftp://user@address:port")]
    Malformed(String),
}

impl ServerUrl {
    /// Parses `sftp://user@address[:port]`, `file:///absolute/dir` or an `s3://` URL.
    pub fn parse(url: &str) -> Result<ServerUrl, UrlError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(UrlError::RelativeFile(url.into()));
            }
            return Ok(ServerUrl::Local(PathBuf::from(path)));
        }
        if url.starts_with("s3://") {
            return Ok(ServerUrl::S3(crate::s3::url::S3Url::parse(url)?));
        }
        let Some(rest) = url.strip_prefix("sftp://") else {
            return Err(UrlError::Scheme(url.into()));
        };
        let (user, hostport) = rest.split_once('@').ok_or_else(|| UrlError::NoUser(url.into()))?;
        // `[::1]:22`, `host:22`, or no port.
        let (address, port) = match hostport.strip_prefix('[').and_then(|h| h.split_once(']')) {
            Some((v6, rest)) => (v6, rest.strip_prefix(':')),
            None => match hostport.rsplit_once(':') {
                Some((a, p)) => (a, Some(p)),
                None => (hostport, None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| UrlError::Port {
                url: url.into(),
                port: p.into(),
            })?,
            None => 22,
        };
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', ' ', '@']) && !s.starts_with('-');
        if !ok(user) || !ok(address) || port == 0 {
            return Err(UrlError::Malformed(url.into()));
        }
        Ok(ServerUrl::Sftp {
            user: user.into(),
            address: address.into(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            ServerUrl::parse("sftp://web1@bento.example.org:2222").unwrap(),
            ServerUrl::Sftp {
                user: "web1".into(),
                address: "bento.example.org".into(),
                port: 2222
            }
        );
        assert_eq!(
            ServerUrl::parse("sftp://web1@10.0.0.1").unwrap(),
            ServerUrl::Sftp {
                user: "web1".into(),
                address: "10.0.0.1".into(),
                port: 22
            }
        );
        assert_eq!(
            ServerUrl::parse("file:///srv/bento").unwrap(),
            ServerUrl::Local("/srv/bento".into())
        );
        let refused = |url: &str| ServerUrl::parse(url).unwrap_err();
        assert_eq!(refused("ftp://x"), UrlError::Scheme("ftp://x".into()));
        assert_eq!(refused("sftp://host"), UrlError::NoUser("sftp://host".into()));
        assert_eq!(
            refused("file://relative"),
            UrlError::RelativeFile("file://relative".into())
        );
        // An address or user that ssh would read as an option is refused.
        assert_eq!(
            refused("sftp://-oProxyCommand=x@h"),
            UrlError::Malformed("sftp://-oProxyCommand=x@h".into())
        );
        assert_eq!(
            refused("sftp://u@-oProxyCommand=x"),
            UrlError::Malformed("sftp://u@-oProxyCommand=x".into())
        );
        assert_eq!(
            refused("sftp://a@b:99999").to_string(),
            "`sftp://a@b:99999`: bad port `99999`"
        );
    }
}
