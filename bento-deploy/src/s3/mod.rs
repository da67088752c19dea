//! Object storage as the server: any S3-compatible store (Garage, Ceph RGW, MinIO, AWS).
//! Bundles are signed and secrets encrypted per host, so the store only has to be
//! available and keep hosts apart — the latter by its own permissions (per-host buckets
//! and keys on Garage, prefix policies on AWS or Ceph; `bento server setup --s3`).
//!
//! [`url`] says where each host's place is, [`credentials`] what requests are signed with,
//! [`client`] makes the requests, [`dir`] lays the server layout over them (the admin's
//! side) and is the agent's [`crate::transport::Transport`] too.

pub mod client;
pub mod credentials;
pub mod dir;
pub mod setup;
pub mod url;
