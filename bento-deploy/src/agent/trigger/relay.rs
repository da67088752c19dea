//! Passing a run's output to the client without ever making the run wait: the output is
//! always drained, a slow client loses what does not fit a bounded buffer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// At most this much of a run's output waits for a slow client; more is dropped.
pub const RELAY_BUFFER: usize = 1 << 20;

/// How long one write to the client may block before the relay looks again.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the output left over when the run ends may take to reach the client.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// What became of a run's output on its way to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes dropped because the client read too slowly (or was gone).
    pub dropped: u64,
    /// The client hung up (or stopped reading past the end of the run).
    pub client_gone: bool,
}

#[derive(Default)]
struct Pending {
    bytes: VecDeque<u8>,
    ended: bool,
    dropped: u64,
    gone: bool,
}

/// Copies a run's output from `from` (the read end of the pipe the run writes to) to the
/// client `to`, until `from` ends. The run never waits for the client: `from` is always
/// drained; at most [`RELAY_BUFFER`] bytes wait for a slow client and the rest is dropped;
/// a client that hangs up gets nothing more (no signal, no panic: the write's error is
/// taken as its leaving). When the run's output ends, what is still waiting has
/// a few seconds to go out.
pub fn relay<R, W>(mut from: R, to: &mut W) -> Relayed
where
    R: io::Read + Send,
    W: io::Write + AsFd,
{
    let _ = rustix::net::sockopt::set_socket_timeout(
        to.as_fd(),
        rustix::net::sockopt::Timeout::Send,
        Some(SEND_TIMEOUT),
    );
    let pending = Mutex::new(Pending::default());
    let changed = Condvar::new();
    let lock = || pending.lock().unwrap_or_else(|p| p.into_inner());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut chunk = [0u8; 8192];
            loop {
                let n = match from.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut p = lock();
                let room = if p.gone { 0 } else { RELAY_BUFFER - p.bytes.len() };
                let kept = n.min(room);
                p.bytes.extend(&chunk[..kept]);
                p.dropped += (n - kept) as u64;
                changed.notify_all();
            }
            lock().ended = true;
            changed.notify_all();
        });
        let mut finish_by = None;
        loop {
            let chunk: Vec<u8> = {
                let mut p = lock();
                while p.bytes.is_empty() && !p.ended {
                    p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.bytes.is_empty() {
                    break;
                }
                if p.ended {
                    let by = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_GRACE);
                    if Instant::now() >= by {
                        let left = p.bytes.len() as u64;
                        p.dropped += left;
                        p.bytes.clear();
                        p.gone = true;
                        break;
                    }
                }
                let (front, _) = p.bytes.as_slices();
                front[..front.len().min(8192)].to_vec()
            };
            match to.write(&chunk) {
                Ok(n) if n > 0 => {
                    lock().bytes.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                    ) => {}
                // Gone (EPIPE, reset, or a write of nothing): the rest is drained, dropped.
                _ => {
                    let mut p = lock();
                    p.gone = true;
                    p.dropped += p.bytes.len() as u64;
                    p.bytes.clear();
                    while !p.ended {
                        p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
                        p.dropped += p.bytes.len() as u64;
                        p.bytes.clear();
                    }
                    break;
                }
            }
        }
    });
    let p = pending.into_inner().unwrap_or_else(|p| p.into_inner());
    Relayed {
        dropped: p.dropped,
        client_gone: p.gone,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    use super::*;

    /// A writer of `total` bytes, as a run's output.
    fn run_output(total: usize) -> (UnixStream, std::thread::JoinHandle<()>) {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        let handle = std::thread::spawn(move || {
            let line = [b'x'; 1000];
            let mut sent = 0;
            while sent < total {
                writer
                    .write_all(&line)
                    .expect("the relay always drains the run's output");
                sent += line.len();
            }
        });
        (reader, handle)
    }

    #[test]
    fn a_client_that_never_reads_loses_output_never_stalls_the_run() {
        let (mut ours, _theirs_kept_open_unread) = {
            let (a, b) = UnixStream::pair().unwrap();
            (a, b)
        };
        let (reader, writer) = run_output(8 << 20);
        let started = Instant::now();
        let relayed = relay(reader, &mut ours);
        writer.join().unwrap();
        assert!(relayed.dropped > 0, "{relayed:?}");
        assert!(started.elapsed() < FINISH_GRACE + Duration::from_secs(5));
    }

    #[test]
    fn a_client_that_hangs_up_gets_nothing_more_and_the_run_goes_on() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        let (reader, writer) = run_output(4_000_000);
        let relayed = relay(reader, &mut ours);
        writer.join().unwrap();
        assert!(relayed.client_gone, "{relayed:?}");
        assert_eq!(relayed.dropped, 4_000_000);
    }

    #[test]
    fn a_reading_client_gets_everything_in_order() {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        // Less than the buffer: a client that reads loses nothing, however fast the run.
        let (reader, writer) = run_output(1_000_000);
        let client = std::thread::spawn(move || {
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).unwrap();
            all
        });
        let relayed = relay(reader, &mut ours);
        drop(ours);
        writer.join().unwrap();
        assert_eq!(relayed, Relayed::default());
        let all = client.join().unwrap();
        assert_eq!(all.len(), 1_000_000);
        assert!(all.iter().all(|&b| b == b'x'));
    }
}
