//! An S3-compatible store as a server root: [`S3Root`] hands out each host's directory as
//! an [`S3Dir`], a [`ServerDir`] whose paths are object keys below the host's place (and
//! `logs/…` below its logs place). The layout's policy ([`crate::layout`]) is the same as on
//! a file system, with what object storage changes:
//!
//! - no rename: an object is replaced by one PUT (readers see the old or the new one, never
//!   a part), so a generation is written straight into `generations/<g>/` — its number
//!   claimed first ([`crate::layout::HostDir::claim`]), each object created only where none
//!   is (`If-None-Match: *`, where the store honours it), the store's MD5s checked — and
//!   `current` replaced last, by one PUT (see [`ServerDir::renames_copy`]);
//! - no links; a "hard link" (a closure host's cache shares the fleet cache's files) is a
//!   copy made inside the store;
//! - directories are key prefixes: one exists while an object is below it.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::s3::client::Client;
use crate::s3::url::{HostPlaces, Place, S3Url};
use crate::server_dir::{Kind, ServerDir};
use crate::wire::host_dir::LOGS_DIR;

/// The most objects one `remove_tree` deletes below a prefix, in all.
const REMOVE_LIMIT: usize = 100_000;

/// The store as a server root: a directory per host, found through the URL's `{host}`.
#[derive(Debug)]
pub struct S3Root {
    client: Arc<Client>,
    url: S3Url,
}

impl S3Root {
    /// The root of `url`, reached through `client`.
    pub fn new(url: S3Url, client: Client) -> S3Root {
        S3Root {
            client: Arc::new(client),
            url,
        }
    }

    /// `host`'s directory.
    pub fn host(&self, host: &str) -> S3Dir {
        S3Dir {
            client: self.client.clone(),
            places: self.url.places(host),
            sub: String::new(),
        }
    }

    /// The URL.
    pub fn url(&self) -> &S3Url {
        &self.url
    }
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what}: not possible in object storage"),
    )
}

impl S3Root {
    /// The host directory `rel` starts with, and the rest of it (`""` for the host's own).
    fn split(&self, rel: &str) -> io::Result<(S3Dir, String)> {
        let (host, rest) = rel.split_once('/').unwrap_or((rel, ""));
        if !bento_secrets::names::HostName::is_valid(host) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` is not a host name", host.escape_default()),
            ));
        }
        Ok((self.host(host), rest.to_owned()))
    }
}

/// The root's paths are `<host>/…` (and `cache/…`, the fleet cache's own place, named as
/// a host would be): each goes to that place.
impl ServerDir for S3Root {
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (dir, rest) = self.split(rel)?;
        dir.read(&rest, limit)
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        Err(unsupported(&format!("reading the link {rel}")))
    }

    fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        let (dir, rest) = self.split(rel)?;
        match rest.as_str() {
            "" => Ok(Some(Kind::Dir)),
            rest => dir.kind(rest),
        }
    }

    /// Hosts are not listed: each is found by its name (status shows the fleet's hosts).
    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        match rel {
            "" => Ok(Vec::new()),
            rel => {
                let (dir, rest) = self.split(rel)?;
                dir.entries_at_most(&rest, limit)
            }
        }
    }

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir>> {
        let (dir, rest) = self.split(rel)?;
        match rest.as_str() {
            "" => Ok(Box::new(dir)),
            rest => dir.dir(rest),
        }
    }

    fn create_dir(&self, name: &str) -> io::Result<Box<dyn ServerDir>> {
        self.dir(name)
    }

    fn seal(&self, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    fn create_new(&self, name: &str, _bytes: &[u8], _mode: u32) -> io::Result<()> {
        Err(unsupported(&format!("writing {name} outside a host's place")))
    }

    fn replace_from(&self, rel: &str, from: &mut dyn Read, mode: u32) -> io::Result<()> {
        let (dir, rest) = self.split(rel)?;
        dir.replace_from(&rest, from, mode)
    }

    fn rename(&self, from: &str, _to: &str, _replace: bool) -> io::Result<()> {
        Err(unsupported(&format!("renaming {from}")))
    }

    /// A copy inside the store: the closure a host needs, from the fleet cache into the
    /// host's own place (Garage keeps the blocks once; other stores keep each copy).
    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_rest) = self.split(from)?;
        let (to_dir, to_rest) = self.split(to)?;
        let (from_place, from_key) = from_dir.locate(&from_rest)?;
        let (to_place, to_key) = to_dir.locate(&to_rest)?;
        self.client.copy(from_place, &from_key, to_place, &to_key)
    }

    fn remove_tree(&self, name: &str) -> io::Result<()> {
        let (dir, rest) = self.split(name)?;
        match rest.as_str() {
            "" => Err(unsupported(&format!("removing the host directory {name}"))),
            rest => dir.remove_tree(rest),
        }
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn renames_copy(&self) -> bool {
        true
    }
}

/// A directory of a host in the store: `sub` (empty, or ending in `/`) below its place.
#[derive(Clone, Debug)]
pub struct S3Dir {
    client: Arc<Client>,
    places: HostPlaces,
    sub: String,
}

impl S3Dir {
    /// Where `rel` (below this directory) is: the place and the key below it.
    fn locate(&self, rel: &str) -> io::Result<(&Place, String)> {
        crate::confined::check_rel(rel).or_else(|e| match rel {
            "" => Ok(()),
            _ => Err(e),
        })?;
        let full = format!("{}{rel}", self.sub);
        let full = full.trim_end_matches('/');
        match full.strip_prefix(LOGS_DIR) {
            Some("") => Ok((&self.places.logs, String::new())),
            Some(rest) if rest.starts_with('/') => Ok((&self.places.logs, rest[1..].to_owned())),
            _ => Ok((&self.places.main, full.to_owned())),
        }
    }

    /// Whether anything is below the prefix `key` of `place`.
    fn has_entries(&self, place: &Place, key: &str) -> io::Result<bool> {
        match self.client.list(place, key, 1) {
            Ok(entries) => Ok(!entries.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// The agent's transport to its place in object storage.
impl crate::transport::Transport for S3Dir {
    fn read_to(&mut self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let (place, key) = self.locate(rel)?;
        self.client.get_to(place, &key, limit, sink)
    }

    /// One PUT: the object is replaced whole.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        let (place, key) = self.locate(rel)?;
        self.client.put(place, &key, bytes, false)
    }

    fn bytes_transferred(&self) -> u64 {
        self.client.bytes_transferred()
    }

    fn set_deadline(&mut self, deadline: std::time::Instant) {
        self.client.set_deadline(deadline);
    }
}

impl ServerDir for S3Dir {
    fn read(&self, rel: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (place, key) = self.locate(rel)?;
        let mut bytes = Vec::new();
        self.client.get_to(place, &key, limit, &mut bytes)?;
        Ok(bytes)
    }

    fn read_link(&self, rel: &str) -> io::Result<PathBuf> {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: object storage has no links", rel.escape_default()),
        ))
    }

    fn kind(&self, rel: &str) -> io::Result<Option<Kind>> {
        let (place, key) = self.locate(rel)?;
        if !key.is_empty() && self.client.exists(place, &key)? {
            return Ok(Some(Kind::File));
        }
        Ok((key.is_empty() || self.has_entries(place, &key)?).then_some(Kind::Dir))
    }

    fn entries_at_most(&self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        // A prefix with nothing below it lists as an empty directory: in a store every
        // directory is there until something is put in it.
        let (place, key) = self.locate(rel)?;
        self.client.list(place, &key, limit)
    }

    fn dir(&self, rel: &str) -> io::Result<Box<dyn ServerDir>> {
        crate::confined::check_rel(rel)?;
        Ok(Box::new(S3Dir {
            client: self.client.clone(),
            places: self.places.clone(),
            sub: format!("{}{rel}/", self.sub),
        }))
    }

    fn create_dir(&self, name: &str) -> io::Result<Box<dyn ServerDir>> {
        let (place, key) = self.locate(name)?;
        if self.has_entries(place, &key)? {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        self.dir(name)
    }

    fn seal(&self, _mode: u32) -> io::Result<()> {
        Ok(())
    }

    fn create_new(&self, name: &str, bytes: &[u8], _mode: u32) -> io::Result<()> {
        let (place, key) = self.locate(name)?;
        self.client.put(place, &key, bytes, true)
    }

    fn replace_from(&self, rel: &str, from: &mut dyn Read, _mode: u32) -> io::Result<()> {
        let (place, key) = self.locate(rel)?;
        let mut bytes = Vec::new();
        from.read_to_end(&mut bytes)?;
        self.client.put(place, &key, &bytes, false)
    }

    /// A single object: copied, then the original deleted (not atomic; the layout does
    /// not rely on it here, see [`ServerDir::renames_copy`]).
    fn rename(&self, from: &str, to: &str, replace: bool) -> io::Result<()> {
        let (place, from_key) = self.locate(from)?;
        let (to_place, to_key) = self.locate(to)?;
        let mut bytes = Vec::new();
        self.client
            .get_to(place, &from_key, 64 * 1024 * 1024, &mut bytes)?;
        self.client.put(to_place, &to_key, &bytes, !replace)?;
        self.client.delete(place, &from_key)
    }

    fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_place, from_key) = self.locate(from)?;
        let (to_place, to_key) = self.locate(to)?;
        self.client.copy(from_place, &from_key, to_place, &to_key)
    }

    fn remove_tree(&self, name: &str) -> io::Result<()> {
        let (place, key) = self.locate(name)?;
        if self.client.exists(place, &key)? {
            return self.client.delete(place, &key);
        }
        let mut removed = 0;
        let mut stack = vec![key];
        while let Some(dir) = stack.pop() {
            for (entry, kind) in self.client.list(place, &dir, REMOVE_LIMIT)? {
                let path = format!("{dir}/{entry}");
                match kind {
                    Kind::Dir => stack.push(path),
                    _ => {
                        self.client.delete(place, &path)?;
                        removed += 1;
                    }
                }
                if removed > REMOVE_LIMIT {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{name}: more than {REMOVE_LIMIT} objects"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    fn renames_copy(&self) -> bool {
        true
    }

    /// The store's ETags: the MD5 of each object written by one PUT.
    fn md5s(&self, rel: &str) -> io::Result<Option<std::collections::BTreeMap<String, String>>> {
        let (place, key) = self.locate(rel)?;
        Ok(Some(
            self.client
                .etags(place, &key, REMOVE_LIMIT)?
                .into_iter()
                .collect(),
        ))
    }
}
