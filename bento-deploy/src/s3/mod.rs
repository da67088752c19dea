//! Object storage as the server: any S3-compatible store (Garage, Ceph RGW, MinIO, AWS).
//! Bundles are signed and secrets encrypted per host, so the store only has to be
//! available and keep hosts apart — the latter by its own permissions (per-host buckets
//! and keys on Garage, prefix policies on AWS or Ceph; `bento server setup --s3`).
//!
//! [`url`] says where each host's place is, [`credentials`] what requests are signed with,
//! [`client`] makes the requests, [`dir`] lays the server layout over them (the admin's
//! side), and [`S3Transport`] is the agent's way in.

pub mod client;
pub mod credentials;
pub mod dir;
pub mod setup;
pub mod url;

use std::io::{self, Write};
use std::time::Instant;

use crate::s3::dir::S3Dir;
use crate::server_dir::ServerDir;
use crate::transport::Transport;

/// The agent's transport to its place in the store.
pub struct S3Transport {
    dir: S3Dir,
}

impl S3Transport {
    /// Over `dir`, the host's directory.
    pub fn new(dir: S3Dir) -> S3Transport {
        S3Transport { dir }
    }
}

impl Transport for S3Transport {
    fn read_to(&mut self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let bytes = self.dir.read(rel, limit)?;
        sink.write_all(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// One PUT: the object is replaced whole.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        self.dir.replace_from(rel, &mut &bytes[..], 0o644)
    }

    fn bytes_transferred(&self) -> u64 {
        self.dir.client().bytes_transferred()
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.dir.client().set_deadline(deadline);
    }
}
