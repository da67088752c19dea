//! Requests to an S3-compatible store: each signed (SigV4, by rusty-s3) and carried by a
//! blocking HTTP client (ureq, rustls). The store is trusted with availability only, as an
//! sftp server is: every read has a limit and stops at it, a listing is bounded, an error
//! body is read bounded and quoted escaped.
//!
//! A request that fails in passing (no connection, a reset, a timeout, 429 or 5xx) is
//! tried again after a growing delay until the client's deadline; 403, 404 and 412 are
//! answers, mapped to `PermissionDenied`, `NotFound` and `AlreadyExists`.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::s3::credentials::S3Credentials;
use crate::s3::url::{Place, S3Url};
use crate::server_dir::Kind;

type Response = ureq::http::Response<ureq::Body>;

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// The most of an error body read, to quote its code.
const ERROR_BODY: u64 = 4096;
/// What `x-amz-copy-source` escapes: all but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// The most of a listing page read.
const LISTING_PAGE: u64 = 16 * 1024 * 1024;

/// A connection pool to one store, with one set of credentials.
pub struct Client {
    agent: ureq::Agent,
    endpoint: url::Url,
    region: String,
    credentials: Credentials,
    /// Requests still failing at this instant fail for good.
    deadline: Mutex<Instant>,
    bytes: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.endpoint)
    }
}

/// What one attempt of a request gave.
enum Attempt<T> {
    Done(io::Result<T>),
    Again(io::Error),
}

impl Client {
    /// A client of the store of `url`, signing with `credentials`; each request waits at
    /// most `request_timeout`, and a failing one is retried for `patience`.
    pub fn new(
        url: &S3Url,
        credentials: &S3Credentials,
        request_timeout: Duration,
        patience: Duration,
    ) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(request_timeout))
            .max_redirects(0)
            .build();
        let credentials = match &credentials.token {
            Some(token) => Credentials::new_with_token(
                credentials.key.clone(),
                credentials.secret.as_str(),
                token.as_str(),
            ),
            None => Credentials::new(credentials.key.clone(), credentials.secret.as_str()),
        };
        Client {
            agent: config.into(),
            endpoint: url.endpoint.clone(),
            region: url.region.clone(),
            credentials,
            deadline: Mutex::new(Instant::now() + patience),
            bytes: AtomicU64::new(0),
        }
    }

    /// From now on, requests still failing at `deadline` fail (kind `TimedOut`).
    pub fn set_deadline(&self, deadline: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = deadline;
        }
    }

    /// Bytes sent and received so far (bodies).
    pub fn bytes_transferred(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn bucket(&self, name: &str) -> io::Result<Bucket> {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_owned(),
            self.region.clone(),
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bucket {name}: {e}")))
    }

    /// Runs `attempt` until it is done or the deadline passes, waiting longer each time.
    fn retrying<T>(&self, what: &str, mut attempt: impl FnMut() -> Attempt<T>) -> io::Result<T> {
        let mut wait = Duration::from_millis(100);
        loop {
            let e = match attempt() {
                Attempt::Done(result) => return result,
                Attempt::Again(e) => e,
            };
            let deadline = self
                .deadline
                .lock()
                .map(|d| *d)
                .unwrap_or_else(|_| Instant::now());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what}: {e}")));
            }
            std::thread::sleep(wait.min(left));
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Sends a request until it is answered: `send` makes one attempt; `answer` takes the
    /// statuses it expects (`None` for any other). A failure on the way or a passing
    /// status is tried again; any other status is the store's refusal.
    fn request<T>(
        &self,
        what: &str,
        mut send: impl FnMut() -> Result<Response, ureq::Error>,
        mut answer: impl FnMut(u16, &mut Response) -> Option<Attempt<T>>,
    ) -> io::Result<T> {
        self.retrying(what, || {
            let mut response = match send() {
                Ok(r) => r,
                Err(e) => return Attempt::Again(io::Error::other(e.to_string())),
            };
            let status = response.status().as_u16();
            if let Some(answered) = answer(status, &mut response) {
                return answered;
            }
            let refused = Client::status_error(what, status, &mut response);
            match Client::passing(status) {
                true => Attempt::Again(refused),
                false => Attempt::Done(Err(refused)),
            }
        })
    }

    /// The error of a response with an unexpected status, its S3 code quoted.
    fn status_error(what: &str, status: u16, response: &mut Response) -> io::Error {
        let body = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY)
            .read_to_string()
            .unwrap_or_default();
        let code = body
            .split("<Code>")
            .nth(1)
            .and_then(|rest| rest.split("</Code>").next())
            .unwrap_or("")
            .escape_default()
            .to_string();
        let kind = match status {
            403 => io::ErrorKind::PermissionDenied,
            404 => io::ErrorKind::NotFound,
            409 | 412 => io::ErrorKind::AlreadyExists,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("{what}: the store answered {status} {code}"))
    }

    /// Whether a status means "try again".
    fn passing(status: u16) -> bool {
        status == 429 || status >= 500
    }

    fn key(place: &Place, rel: &str) -> io::Result<String> {
        crate::confined::check_rel(rel)?;
        Ok(format!("{}{rel}", place.prefix))
    }

    /// The key of object `rel` of `place`, its bucket, and `doing` it as said in errors.
    fn object(&self, place: &Place, rel: &str, doing: &str) -> io::Result<(String, Bucket, String)> {
        let key = Client::key(place, rel)?;
        let what = format!("{doing} {}/{key}", place.bucket);
        Ok((key, self.bucket(&place.bucket)?, what))
    }

    /// Copies object `rel` of `place` into `sink`, refusing (kind `FileTooLarge`) one of
    /// more than `limit` bytes, before copying when the store says its length.
    pub fn get_to(&self, place: &Place, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let (key, bucket, what) = self.object(place, rel, "reading")?;
        // The bytes go to `sink` only once a whole answer is in: a retry never appends.
        let send = || {
            let url = bucket.get_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
            self.agent.get(url.as_str()).call()
        };
        let body = self.request(&what, send, |status, response| {
            if status != 200 {
                return None;
            }
            let length = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if length.is_some_and(|n| n > limit) {
                return Some(Attempt::Done(Err(too_large(&what, limit))));
            }
            let mut bytes = Vec::new();
            let read = response
                .body_mut()
                .as_reader()
                .take(limit + 1)
                .read_to_end(&mut bytes);
            Some(match read {
                Ok(n) if n as u64 > limit => Attempt::Done(Err(too_large(&what, limit))),
                Ok(_) => Attempt::Done(Ok(bytes)),
                Err(e) => Attempt::Again(e),
            })
        })?;
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        sink.write_all(&body)?;
        Ok(body.len() as u64)
    }

    /// Writes object `rel` of `place` (one PUT: readers see the old object or the new one,
    /// never a part). With `exclusive`, only where nothing is (`If-None-Match: *`; kind
    /// `AlreadyExists` otherwise, on stores that honour it).
    pub fn put(&self, place: &Place, rel: &str, bytes: &[u8], exclusive: bool) -> io::Result<()> {
        let (key, bucket, what) = self.object(place, rel, "writing")?;
        let send = || {
            let mut action = bucket.put_object(Some(&self.credentials), &key);
            if exclusive {
                action.headers_mut().insert("if-none-match", "*");
            }
            let url = action.sign(SIGNED_FOR);
            let mut request = self.agent.put(url.as_str());
            if exclusive {
                request = request.header("if-none-match", "*");
            }
            request.send(bytes)
        };
        self.request(&what, send, |status, _| {
            (200..=299).contains(&status).then(|| {
                self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Attempt::Done(Ok(()))
            })
        })
    }

    /// Copies object `from_rel` of `from` to `to_rel` of `to` inside the store (a
    /// server-side copy: no byte passes through here).
    pub fn copy(&self, from: &Place, from_rel: &str, to: &Place, to_rel: &str) -> io::Result<()> {
        let source = format!("/{}/{}", from.bucket, Client::key(from, from_rel)?);
        let source: String = percent_encoding::utf8_percent_encode(&source, COPY_SOURCE).collect();
        let key = Client::key(to, to_rel)?;
        let bucket = self.bucket(&to.bucket)?;
        let what = format!("copying {} to {}/{key}", source, to.bucket);
        let send = || {
            let mut action = bucket.put_object(Some(&self.credentials), &key);
            action.headers_mut().insert("x-amz-copy-source", source.clone());
            let url = action.sign(SIGNED_FOR);
            let request = self.agent.put(url.as_str()).header("x-amz-copy-source", &source);
            request.send_empty()
        };
        self.request(&what, send, |status, _| {
            (200..=299).contains(&status).then_some(Attempt::Done(Ok(())))
        })
    }

    /// Deletes object `rel` of `place`; one that is not there is no error.
    pub fn delete(&self, place: &Place, rel: &str) -> io::Result<()> {
        let (key, bucket, what) = self.object(place, rel, "deleting")?;
        let send = || {
            let url = bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            self.agent.delete(url.as_str()).call()
        };
        self.request(&what, send, |status, _| {
            matches!(status, 200..=299 | 404).then_some(Attempt::Done(Ok(())))
        })
    }

    /// Whether object `rel` of `place` is there.
    pub fn exists(&self, place: &Place, rel: &str) -> io::Result<bool> {
        let (key, bucket, what) = self.object(place, rel, "looking up")?;
        let send = || {
            let url = bucket.head_object(Some(&self.credentials), &key).sign(SIGNED_FOR);
            self.agent.head(url.as_str()).call()
        };
        self.request(&what, send, |status, _| match status {
            200 => Some(Attempt::Done(Ok(true))),
            404 => Some(Attempt::Done(Ok(false))),
            _ => None,
        })
    }

    /// Calls `visit` with each page of the listing of `prefix` in `bucket` (one level, with
    /// `delimiter`; every depth without), each page read bounded, until the last one.
    fn each_page(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: bool,
        mut visit: impl FnMut(&rusty_s3::actions::ListObjectsV2Response) -> io::Result<()>,
    ) -> io::Result<()> {
        let bucket_name = bucket;
        let bucket = self.bucket(bucket)?;
        let what = format!("listing {bucket_name}/{prefix}");
        let mut token: Option<String> = None;
        loop {
            let send = || {
                let mut action = bucket.list_objects_v2(Some(&self.credentials));
                action.with_prefix(prefix);
                if delimiter {
                    action.with_delimiter("/");
                }
                action.with_max_keys(1000);
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                let url = action.sign(SIGNED_FOR);
                self.agent.get(url.as_str()).call()
            };
            let page = self.request(&what, send, |status, response| {
                if status != 200 {
                    return None;
                }
                Some(
                    match response
                        .body_mut()
                        .with_config()
                        .limit(LISTING_PAGE)
                        .read_to_string()
                    {
                        Ok(text) => {
                            Attempt::Done(rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(
                                |e| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}")),
                            ))
                        }
                        Err(e) => Attempt::Again(io::Error::other(e.to_string())),
                    },
                )
            })?;
            visit(&page)?;
            match page.next_continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(()),
            }
        }
    }

    /// The entries of the "directory" `rel` (`""`: the place itself) of `place`: objects
    /// as files, common prefixes as directories, at most `limit` (kind `InvalidData`
    /// past it).
    pub fn list(&self, place: &Place, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        let prefix = match rel {
            "" => place.prefix.clone(),
            rel => format!("{}/", Client::key(place, rel)?),
        };
        // One name below `prefix`, as listed (decoded; nothing deeper, nothing empty).
        let name_of = |key: &str, dir: bool| {
            let key = percent_encoding::percent_decode_str(key).decode_utf8().ok()?;
            let rest = key.strip_prefix(prefix.as_str())?;
            let name = if dir { rest.strip_suffix('/')? } else { rest };
            (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
        };
        let mut entries = Vec::new();
        self.each_page(&place.bucket, &prefix, true, |page| {
            let files = page.contents.iter().filter_map(|o| name_of(&o.key, false));
            entries.extend(files.map(|name| (name, Kind::File)));
            let dirs = page
                .common_prefixes
                .iter()
                .filter_map(|d| name_of(&d.prefix, true));
            entries.extend(dirs.map(|name| (name, Kind::Dir)));
            match entries.len() > limit {
                true => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("listing {}/{prefix}: more than {limit} entries", place.bucket),
                )),
                false => Ok(()),
            }
        })?;
        Ok(entries)
    }

    /// Every object below the "directory" `rel` of `place`, at any depth: its path below
    /// `rel` and its ETag (quotes taken off); at most `limit`.
    pub fn etags(&self, place: &Place, rel: &str, limit: usize) -> io::Result<Vec<(String, String)>> {
        let prefix = format!("{}/", Client::key(place, rel)?);
        let mut out = Vec::new();
        self.each_page(&place.bucket, &prefix, false, |page| {
            for object in &page.contents {
                let key = percent_encoding::percent_decode_str(&object.key).decode_utf8_lossy();
                if let Some(rest) = key.strip_prefix(prefix.as_str()) {
                    out.push((rest.to_owned(), object.etag.trim_matches('"').to_owned()));
                }
            }
            match out.len() > limit {
                true => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("listing {}/{prefix}: more than {limit} objects", place.bucket),
                )),
                false => Ok(()),
            }
        })?;
        Ok(out)
    }
}

fn too_large(what: &str, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("{what}: larger than {limit} bytes: refused"),
    )
}
