//! The local trigger: a connection starts an agent run and streams its output. It listens
//! on a unix socket (`trigger_socket`, default `/run/bento/trigger.sock`), mode 0600 for
//! root alone or 0660 with group `trigger_group`; each connection's peer is checked too
//! (`SO_PEERCRED`: root, or a member of that group). TCP on 127.0.0.1:51337, which any
//! local user can reach, only when `trigger_tcp = true`.
//!
//! A client is never in the run's way: the run writes into a pipe (or socket pair) that [`relay`] always
//! drains, passing on to the client what it can take (a bounded buffer; a slow client
//! loses output, a client gone gets none), and a connection that sends no request within
//! [`REQUEST_DEADLINE`] is dropped.

mod access;
mod client;
mod relay;
mod request;
mod serve;
mod socket;

pub use access::{Access, TriggerError};
pub use client::{client, ClientError};
pub use relay::{relay, Relayed, RELAY_BUFFER};
pub use request::{read_request_head, read_what_was_sent, REQUEST_DEADLINE};
pub use serve::{listen, serve_one, Served, MAX_CONNECTIONS};
pub use socket::{listen_tcp, listen_unix, TCP_ADDRESS};
