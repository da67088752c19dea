//! The admin's side of a fleet: its hosts, the bundle assembled for each, the systems
//! built for them, and `bento init`.

pub mod build;
pub mod bundle;
pub mod hosts;
pub mod init;
