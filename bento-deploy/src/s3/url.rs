//! `s3://` server URLs: where in an S3-compatible store each host's directory is.
//!
//! `s3://BUCKET[/PREFIX]?endpoint=URL&region=R[&logs=BUCKET[/PREFIX]]`. `{host}` in a
//! bucket or a prefix is the host's name: per-host buckets (`s3://bento-{host}`, as Garage's
//! per-bucket permissions need) or per-host prefixes in one bucket (`s3://fleet/{host}`, as
//! prefix policies of AWS or Ceph allow). A host's `logs/` is `logs` when given (a place the
//! host may write, kept apart from what the admin publishes), else `logs/` below its
//! directory. The URL carries no credentials.

/// One place in the store: a bucket and a key prefix (empty, or ending in `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The bucket.
    pub bucket: String,
    /// The prefix every key starts with.
    pub prefix: String,
}

/// A host's places: its directory and its `logs/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPlaces {
    /// Where `current` and `generations/` are.
    pub main: Place,
    /// Where `logs/` is (`logs/` of `main` unless the URL names another place).
    pub logs: Place,
}

/// A parsed `s3://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// As written, for messages.
    pub text: String,
    /// The store's endpoint (`http://` or `https://`).
    pub endpoint: url::Url,
    /// The region the requests are signed for.
    pub region: String,
    bucket: String,
    prefix: String,
    logs: Option<(String, String)>,
}

/// Why an `s3://` URL was refused; each quotes it and shows the form expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum S3UrlError {
    /// A part is missing or malformed.
    #[error("`{url}`: {why}; expected s3://BUCKET[/PREFIX]?endpoint=https://…&region=R[&logs=BUCKET[/PREFIX]] (`{{host}}` names a host's bucket or prefix)")]
    Malformed {
        /// The URL as written.
        url: String,
        /// What is wrong.
        why: String,
    },
}

/// Whether `name`, with `{host}` standing for a host name, can be a bucket name: lowercase
/// letters, digits, `-` and `.`, 3 to 63 characters.
fn bucket_ok(name: &str) -> bool {
    let plain = name.replace("{host}", "h");
    (3..=63).contains(&plain.len())
        && plain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// Whether `prefix` (without its trailing `/`) is a clean key prefix: `/`-separated parts,
/// none empty, `.` or `..`, of printable ASCII other than `\`.
fn prefix_ok(prefix: &str) -> bool {
    prefix.is_empty()
        || prefix.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '\\' && c != '?' && c != '#')
        })
}

/// `BUCKET[/PREFIX]` split, the prefix ending in `/` when not empty.
fn split_place(text: &str) -> (String, String) {
    match text.split_once('/') {
        Some((bucket, prefix)) => {
            let prefix = prefix.trim_end_matches('/');
            let prefix = match prefix.is_empty() {
                true => String::new(),
                false => format!("{prefix}/"),
            };
            (bucket.to_owned(), prefix)
        }
        None => (text.to_owned(), String::new()),
    }
}

impl S3Url {
    /// Parses an `s3://` URL.
    pub fn parse(text: &str) -> Result<S3Url, S3UrlError> {
        let bad = |why: &str| S3UrlError::Malformed {
            url: text.to_owned(),
            why: why.to_owned(),
        };
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (place, query) = rest
            .split_once('?')
            .ok_or_else(|| bad("no ?endpoint=…&region=…"))?;
        let (bucket, prefix) = split_place(place);
        let (mut endpoint, mut region, mut logs) = (None, None, None);
        for pair in query.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad("a query part without `=`"))?;
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| bad("a query value that is not UTF-8"))?
                .into_owned();
            match key {
                "endpoint" => endpoint = Some(value),
                "region" => region = Some(value),
                "logs" => logs = Some(split_place(&value)),
                other => return Err(bad(&format!("unknown parameter `{}`", other.escape_default()))),
            }
        }
        let endpoint = endpoint.ok_or_else(|| bad("no endpoint"))?;
        let endpoint: url::Url = endpoint.parse().map_err(|_| bad("the endpoint is not a URL"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(bad("the endpoint must be http:// or https:// with a host"));
        }
        if endpoint.path() != "/" || endpoint.query().is_some() {
            return Err(bad("the endpoint must be a bare http(s)://host[:port]"));
        }
        let region = region.filter(|r| !r.is_empty()).ok_or_else(|| bad("no region"))?;
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("the region must be letters, digits, `-` and `_`"));
        }
        for (b, p) in std::iter::once((&bucket, &prefix)).chain(logs.as_ref().map(|(b, p)| (b, p))) {
            if !bucket_ok(b) {
                return Err(bad(&format!("`{}` is not a bucket name", b.escape_default())));
            }
            if !prefix_ok(p.trim_end_matches('/')) {
                return Err(bad(&format!(
                    "`{}` is not a clean key prefix",
                    p.escape_default()
                )));
            }
        }
        let per_host = |(b, p): (&String, &String)| b.contains("{host}") || p.contains("{host}");
        if !per_host((&bucket, &prefix)) || logs.as_ref().is_some_and(|(b, p)| !per_host((b, p))) {
            return Err(bad(
                "name each host's place with `{host}` in the bucket or the prefix",
            ));
        }
        Ok(S3Url {
            text: text.to_owned(),
            endpoint,
            region,
            bucket,
            prefix,
            logs,
        })
    }

    /// `host`'s places (`host` must be a valid host name).
    pub fn places(&self, host: &str) -> HostPlaces {
        let fill = |s: &str| s.replace("{host}", host);
        let main = Place {
            bucket: fill(&self.bucket),
            prefix: fill(&self.prefix),
        };
        let logs = match &self.logs {
            Some((bucket, prefix)) => Place {
                bucket: fill(bucket),
                prefix: fill(prefix),
            },
            None => Place {
                bucket: main.bucket.clone(),
                prefix: format!("{}logs/", main.prefix),
            },
        };
        HostPlaces { main, logs }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_host_buckets_and_prefixes() {
        let u = S3Url::parse(
            "s3://bento-{host}?endpoint=http://127.0.0.1:3900&region=garage&logs=bento-{host}-logs",
        )
        .unwrap();
        let p = u.places("web1");
        assert_eq!(
            (p.main.bucket.as_str(), p.main.prefix.as_str()),
            ("bento-web1", "")
        );
        assert_eq!(
            (p.logs.bucket.as_str(), p.logs.prefix.as_str()),
            ("bento-web1-logs", "")
        );
        let u = S3Url::parse("s3://fleet/hosts/{host}/?endpoint=https://s3.example.org&region=eu-west-1")
            .unwrap();
        let p = u.places("db1");
        assert_eq!(
            (p.main.bucket.as_str(), p.main.prefix.as_str()),
            ("fleet", "hosts/db1/")
        );
        assert_eq!(p.logs.prefix, "hosts/db1/logs/");
    }

    #[test]
    fn refuses_what_is_not_a_clean_place() {
        for (url, why) in [
            ("s3://bento?endpoint=http://a&region=r", "`{host}`"),
            ("s3://bento-{host}?region=r", "no endpoint"),
            (
                "s3://bento-{host}?endpoint=ftp://a&region=r",
                "http:// or https://",
            ),
            ("s3://bento-{host}?endpoint=http://a/x&region=r", "bare"),
            ("s3://bento-{host}?endpoint=http://a", "no region"),
            ("s3://Bento-{host}?endpoint=http://a&region=r", "bucket name"),
            (
                "s3://b-{host}/../x?endpoint=http://a&region=r",
                "clean key prefix",
            ),
            (
                "s3://b-{host}?endpoint=http://a&region=r&x=1",
                "unknown parameter",
            ),
            ("s3://b-{host}", "no ?endpoint"),
        ] {
            let e = S3Url::parse(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
