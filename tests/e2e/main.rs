//! End-to-end tests of the `bento` binary against the real tools.

mod harness;

mod activate;
mod admin;
mod agenix;
mod agent;
mod bad_input;
mod cache;
mod closure;
mod contributor;
mod deploy;
mod edit;
mod faults;
mod flake_update;
mod generate;
mod host;
mod hostile_logs;
mod hostile_server;
mod init;
mod interop;
mod load;
mod local_user;
mod nixos;
mod output;
mod poll;
mod publisher;
mod reach;
mod rekey;
mod remote;
mod remote_cache;
mod roundtrip;
mod sshd;
mod status;
mod templates;
mod trigger;
mod verify;
