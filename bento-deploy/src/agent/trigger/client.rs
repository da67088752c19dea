//! `bento trigger`'s client: asks the trigger for a run and passes its page on.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a triggered run could not be followed to its end; each one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket is not ours to open.
    #[error("{}: permission denied: only root and members of trigger_group (agent.toml) may trigger a run", .0.display())]
    PermissionDenied(PathBuf),
    /// Nothing listens at the socket.
    #[error("{}: nobody listens there: is the trigger running (bento-trigger.socket, or `bento trigger --listen`)?", .0.display())]
    NobodyListens(PathBuf),
    /// Any other failure to connect.
    #[error("{}: {source}", .socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("{}: {what}", .socket.display())]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// `sending the request`, `reading the answer`.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The trigger closed the connection before answering.
    #[error("{}: the trigger closed the connection without an answer", .0.display())]
    NoAnswer(PathBuf),
    /// The trigger refused: its reason.
    #[error("the trigger refused: {0}")]
    Refused(String),
    /// The page was cut before the run's last line.
    #[error("{}: the connection ended before the run did", .0.display())]
    CutShort(PathBuf),
    /// Passing the page on failed.
    #[error(transparent)]
    Output(io::Error),
}

/// Asks the trigger at `socket` for a run and copies its page to `out` as it comes.
/// Whether the run succeeded.
pub fn client(socket: &Path, out: &mut dyn Write) -> Result<bool, ClientError> {
    let owned = || socket.to_path_buf();
    let mut conn = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(owned()),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NobodyListens(owned()),
        _ => ClientError::Connect {
            socket: owned(),
            source: e,
        },
    })?;
    let exchange = |what| {
        move |source| ClientError::Exchange {
            socket: owned(),
            what,
            source,
        }
    };
    conn.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .map_err(exchange("sending the request"))?;
    let mut page = BufReader::new(conn);
    let mut status = String::new();
    page.read_line(&mut status)
        .map_err(exchange("reading the answer"))?;
    let mut header = String::new();
    while page.read_line(&mut header).is_ok_and(|n| n > 0) && !header.trim_end().is_empty() {
        header.clear();
    }
    if !status.starts_with("HTTP/1.1 200") {
        let mut body = String::new();
        let _ = page.read_to_string(&mut body);
        if status.is_empty() {
            return Err(ClientError::NoAnswer(owned()));
        }
        let why = body.trim();
        return Err(ClientError::Refused(
            why.strip_prefix("refused: ").unwrap_or(why).to_owned(),
        ));
    }
    // Bytes, not text: a run's output need not be UTF-8, and is passed on as it is.
    let mut last = Vec::new();
    let mut line = Vec::new();
    while page.read_until(b'\n', &mut line).map_err(ClientError::Output)? > 0 {
        out.write_all(&line).map_err(ClientError::Output)?;
        out.flush().map_err(ClientError::Output)?;
        if !line.trim_ascii().is_empty() {
            last = line.trim_ascii().to_vec();
        }
        line.clear();
    }
    match last.as_slice() {
        b"done" => Ok(true),
        b"FAILED" => Ok(false),
        _ => Err(ClientError::CutShort(owned())),
    }
}
