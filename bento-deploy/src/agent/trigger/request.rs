//! Reading a connection's request: whatever it asks, within a deadline, so that a
//! connection that says nothing is dropped and one that did is not cut off.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How long a connection has to send its whole request; then it is dropped, no run.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Reads a request's head (up to a blank line, at most 8 KiB) so the client is not cut
/// off by an unread request; what it asks does not matter. Whether a request came: false
/// when the client sent nothing in [`REQUEST_DEADLINE`] (in all, not per byte), closed
/// without a word, or sent more than 8 KiB without a blank line.
pub fn read_request_head<C: io::Read + AsFd>(conn: &mut C) -> bool {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return true;
        }
        if head.len() >= 8192 {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = rustix::net::sockopt::set_socket_timeout(
            conn.as_fd(),
            rustix::net::sockopt::Timeout::Recv,
            Some(left.max(Duration::from_millis(1))),
        );
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            // The client is done sending: a request if it said anything.
            Ok(_) => return !head.is_empty(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Reads, without waiting, what the client sent already (at most 8 KiB): a connection
/// closed on unread data is reset, and the client would lose the answer written to it.
pub fn read_what_was_sent<C: io::Read + AsFd>(conn: &mut C) {
    if rustix::io::ioctl_fionbio(conn.as_fd(), true).is_ok() {
        let mut sent = [0u8; 8192];
        let _ = conn.read(&mut sent);
        let _ = rustix::io::ioctl_fionbio(conn.as_fd(), false);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_request_that_never_comes_is_given_up_at_the_deadline() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        let started = Instant::now();
        assert!(!read_request_head(&mut ours));
        assert!(started.elapsed() >= REQUEST_DEADLINE);
        assert!(started.elapsed() < REQUEST_DEADLINE + Duration::from_secs(2));
        theirs.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(read_request_head(&mut ours));
    }
}
