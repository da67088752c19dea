//! sftp packets checked at their frame, between ssh's stdout and the sftp client.
//!
//! Every sftp packet starts with its length (4 bytes, big-endian), and the sftp client
//! allocates that much before reading the rest: one packet from a hostile server claiming
//! 4 GiB would make the process reserve 4 GiB. [`Framed`] reads the stream as the client
//! will, and refuses a length above OpenSSH's own limit ([`MAX_PACKET`], what sftp-server
//! and internal-sftp never exceed) before the client sees it. The bytes themselves pass
//! through unchanged.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, ReadBuf};

/// The largest sftp packet body accepted: OpenSSH's `SFTP_MAX_MSG_LENGTH`, 256 KiB.
pub const MAX_PACKET: u32 = 256 * 1024;

/// What the reader saw, shared with whoever reports a failure: why the stream was refused
/// (the sftp client reduces a reader's error to "the connection failed"), and when the
/// server last sent anything.
#[derive(Clone, Debug)]
pub struct Watch(Arc<Mutex<Seen>>);

#[derive(Debug)]
struct Seen {
    refused: Option<String>,
    last_read: Instant,
}

impl Default for Watch {
    fn default() -> Self {
        Watch(Arc::new(Mutex::new(Seen {
            refused: None,
            last_read: Instant::now(),
        })))
    }
}

impl Watch {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reason, once the stream was refused.
    pub fn reason(&self) -> Option<String> {
        self.seen().refused.clone()
    }

    fn refuse(&self, why: String) {
        self.seen().refused = Some(why);
    }

    /// Starts the idle clock anew (at the start of an exchange).
    pub fn touch(&self) {
        self.seen().last_read = Instant::now();
    }

    /// How long the server has sent nothing (since the last [`Watch::touch`] or read).
    pub fn idle(&self) -> Duration {
        self.seen().last_read.elapsed()
    }

    /// Resolves once the server has sent nothing for `limit`.
    pub async fn stalled(&self, limit: Duration) {
        loop {
            let idle = self.idle();
            if idle >= limit {
                return;
            }
            tokio::time::sleep(limit - idle).await;
        }
    }
}

/// A packet length outside OpenSSH's limit, refused at its length field.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server sent an sftp packet of {0} bytes, outside OpenSSH's limit of 1 to {max}: refused \
     (a hostile or broken sftp server)",
    max = MAX_PACKET
)]
struct Refused(u32);

/// A reader of sftp packets that refuses one longer than [`MAX_PACKET`] (or empty: a
/// packet holds at least its type) at its length field.
pub struct Framed<R> {
    inner: R,
    /// The length field being read, and how many of its bytes arrived.
    header: [u8; 4],
    have: usize,
    /// Bytes of the current packet's body still to pass.
    remaining: u32,
    watch: Watch,
}

impl<R> Framed<R> {
    /// Frames `inner`; a refusal and every read are recorded in `watch`.
    pub fn new(inner: R, watch: Watch) -> Framed<R> {
        Framed {
            inner,
            header: [0; 4],
            have: 0,
            remaining: 0,
            watch,
        }
    }

    /// Follows the packets through `bytes`, as they are handed on; the length field refused.
    fn follow(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let take = bytes.len().min(self.remaining as usize);
                bytes = &bytes[take..];
                self.remaining -= take as u32;
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == 4 {
                self.have = 0;
                let length = u32::from_be_bytes(self.header);
                if length > MAX_PACKET || length == 0 {
                    return Err(Refused(length));
                }
                self.remaining = length;
            }
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Framed<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(why) = this.watch.reason() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let fresh = buf.filled()[before..].to_vec();
        if !fresh.is_empty() {
            this.watch.touch();
        }
        if let Err(why) = this.follow(&fresh) {
            buf.set_filled(before);
            this.watch.refuse(why.to_string());
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn packet(body_len: u32) -> Vec<u8> {
        let mut p = body_len.to_be_bytes().to_vec();
        p.extend(std::iter::repeat_n(7u8, body_len as usize));
        p
    }

    fn read_all(input: Vec<u8>, chunk: usize) -> (io::Result<Vec<u8>>, Watch) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let refusal = Watch::default();
        let mut framed = Framed::new(&input[..], refusal.clone());
        let out = rt.block_on(async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; chunk];
            loop {
                let n = framed.read(&mut buf).await?;
                if n == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..n]);
            }
        });
        (out, refusal)
    }

    #[test]
    fn packets_within_the_limit_pass_unchanged_however_they_are_split() {
        let mut stream = packet(5);
        stream.extend(packet(MAX_PACKET));
        stream.extend(packet(1));
        for chunk in [1, 3, 4, 5, 4096, 1 << 20] {
            let (out, refusal) = read_all(stream.clone(), chunk);
            assert_eq!(out.unwrap(), stream, "chunk {chunk}");
            assert!(refusal.reason().is_none());
        }
    }

    #[test]
    fn a_huge_or_empty_length_is_refused_at_its_header() {
        for (bad, shown) in [
            (0xffff_fff0u32, "4294967280"),
            (MAX_PACKET + 1, "262145"),
            (0, "0 bytes"),
        ] {
            let mut stream = packet(5);
            stream.extend(bad.to_be_bytes());
            stream.push(101);
            for chunk in [1, 2, 4096] {
                let (out, refusal) = read_all(stream.clone(), chunk);
                let e = out.unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(
                    e.to_string().contains(shown) && e.to_string().contains("262144"),
                    "{e}"
                );
                assert_eq!(refusal.reason().unwrap(), e.to_string());
            }
        }
    }
}
