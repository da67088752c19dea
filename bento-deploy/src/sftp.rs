//! The sftp transport: one connection through the system OpenSSH client
//! (`ssh -s … sftp`), the server's host key pinned, the host's own key for login.
//!
//! Going through `ssh` means the host's ssh_config applies: ProxyCommand (Tor,
//! corkscrew), ProxyJump, IdentityAgent… The sftp protocol itself is spoken by
//! `openssh-sftp-client` on the child's pipes, inside a small single-threaded runtime.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use openssh_sftp_client::file::File;
use openssh_sftp_client::{Sftp, SftpOptions};

use crate::transport::{check_rel, deadline_passed, Download, Transport};

pub mod frame;
pub mod publisher;

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// sftp user.
    pub user: String,
    /// Server address.
    pub address: String,
    /// sshd port.
    pub port: u16,
    /// The private key to log in with (`-i`, and no other); `None`: whatever the user's
    /// ssh config and agent offer (an admin publishing).
    pub identity: Option<PathBuf>,
    /// The pinned server key(s), in known_hosts format.
    pub known_hosts: PathBuf,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// The ssh client binary.
    pub ssh: String,
}

/// An open sftp session.
pub struct SftpTransport {
    runtime: tokio::runtime::Runtime,
    sftp: Option<Sftp>,
    child: tokio::process::Child,
    transferred: u64,
    /// Operations still waiting at this point fail.
    deadline: Option<Instant>,
    /// What this says when the deadline passes (`None`: the run's deadline).
    deadline_message: Option<String>,
    /// An exchange during which the server sends nothing for this long fails.
    request_timeout: Option<Duration>,
    /// What the framing reader saw: a refused packet, the last read.
    watch: frame::Watch,
    /// The directory relative paths are below (empty: the server's start directory, the
    /// chroot of a host's user).
    base: PathBuf,
}

fn to_io(e: openssh_sftp_client::Error) -> io::Error {
    use openssh_sftp_client::{error::SftpErrorKind, Error::SftpError};
    let kind = match &e {
        SftpError(SftpErrorKind::NoSuchFile, _) => io::ErrorKind::NotFound,
        SftpError(SftpErrorKind::PermDenied, _) => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

impl SftpTransport {
    /// Connects (one `ssh` process for the whole run). The error says whether trying
    /// again may help ([`ConnectError::transient`]).
    pub fn connect(target: &SshTarget) -> Result<SftpTransport, ConnectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConnectError::permanent(format!("starting the sftp client: {e}")))?;
        let mut cmd = tokio::process::Command::new(&target.ssh);
        cmd.args(ssh_args(target))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let watch = frame::Watch::default();
        let (sftp, child) = runtime.block_on(async {
            let mut child = cmd
                .spawn()
                .map_err(|e| ConnectError::permanent(format!("running {}: {e}", target.ssh)))?;
            let stdin = child.stdin.take().expect("piped stdin");
            // Every packet's length is checked before the sftp client allocates it.
            let stdout = frame::Framed::new(child.stdout.take().expect("piped stdout"), watch.clone());
            let limit = target.connect_timeout + Duration::from_secs(5);
            match tokio::time::timeout(limit, Sftp::new(stdin, stdout, SftpOptions::default())).await {
                Ok(Ok(sftp)) => Ok((sftp, child)),
                // A packet the framing refused: no retry makes that server answer sanely.
                Ok(Err(_)) if watch.reason().is_some() => {
                    let _ = child.start_kill();
                    Err(ConnectError::permanent(watch.reason().unwrap_or_default()))
                }
                Ok(Err(e)) => Err(connect_error(&mut child, Some(e.to_string())).await),
                Err(_) => Err(connect_error(&mut child, None).await),
            }
        })?;
        // Connected: what ssh still says on stderr (its debug output with a verbose
        // `LogLevel`, a chatty ProxyCommand) is read and dropped, so that a full pipe never
        // stops ssh mid-transfer. The task runs whenever the runtime does, i.e. during
        // every exchange with the server.
        let mut child = child;
        if let Some(mut stderr) = child.stderr.take() {
            runtime.spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 8192];
                while matches!(stderr.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
        Ok(SftpTransport {
            runtime,
            sftp: Some(sftp),
            child,
            transferred: 0,
            deadline: None,
            deadline_message: None,
            request_timeout: None,
            watch,
            base: PathBuf::new(),
        })
    }

    /// Bounds every later exchange: all fail at `deadline` (saying `message`), and each
    /// fails when the server sends nothing for `request_timeout` while it waits (a stalled
    /// sftp subsystem, which ssh keep-alives do not notice).
    pub fn with_deadlines(
        mut self,
        deadline: Instant,
        message: String,
        request_timeout: Duration,
    ) -> SftpTransport {
        self.deadline = Some(deadline);
        self.deadline_message = Some(message);
        self.request_timeout = Some(request_timeout);
        self
    }

    /// From now on, relative paths name files below `base` on the server (an absolute
    /// path as the sftp server sees it).
    pub fn with_base(mut self, base: &Path) -> SftpTransport {
        self.base = base.to_path_buf();
        self
    }

    /// Runs `f` with relative paths below `dir` (relative to the base), so that what it
    /// reports names paths as seen from `dir`.
    pub fn in_dir<T>(&mut self, dir: &str, f: impl FnOnce(&mut SftpTransport) -> T) -> T {
        let base = below(&self.base, dir);
        let outer = std::mem::replace(&mut self.base, base);
        let done = f(self);
        self.base = outer;
        done
    }

    /// `rel` on the server: below the base, when there is one.
    fn at(&self, rel: &str) -> PathBuf {
        below(&self.base, rel)
    }

    /// `rel` on the server, once checked ([`check_rel`]).
    fn checked(&self, rel: &str) -> io::Result<PathBuf> {
        check_rel(rel)?;
        Ok(self.at(rel))
    }

    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("open until dropped")
    }

    /// Runs `work` to its end, cut short at the deadline.
    fn run<T>(&self, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        self.runtime.block_on(self.bounded(work))
    }

    /// Creates a fresh temp file next to `rel` ([`temp_name`]), exclusively: never an
    /// existing file, never through a link. sftp says only "failure" for a name taken: another
    /// is tried, unless the server is stuck. `failed` begins the error when none could be.
    async fn create_temp(&self, rel: &str, failed: &str) -> io::Result<(String, File)> {
        let mut failure = None;
        for _ in 0..8 {
            let tmp = temp_name(rel);
            let open = async {
                let mut options = self.sftp().options();
                options
                    .write(true)
                    .create_new(true)
                    .open(self.at(&tmp))
                    .await
                    .map_err(to_io)
            };
            match self.bounded(open).await {
                Ok(file) => return Ok((tmp, file)),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(e),
                Err(e) => failure = Some(e),
            }
        }
        let why = failure.map_or(String::new(), |e| format!(": {e}"));
        Err(io::Error::other(format!("{failed}{why}")))
    }

    /// Runs one exchange with the server, cut short at the deadline.
    fn block<T>(&self, work: impl Future<Output = Result<T, openssh_sftp_client::Error>>) -> io::Result<T> {
        self.runtime
            .block_on(self.bounded(async { work.await.map_err(to_io) }))
    }

    /// `work`, failing at the deadline, or when the server sends nothing for the request
    /// timeout; a packet the framing refused is named as the cause of any failure.
    async fn bounded<T>(&self, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        use futures_util::future::{select, Either};
        self.watch.touch();
        let stall = async {
            match self.request_timeout {
                Some(limit) => {
                    self.watch.stalled(limit).await;
                    limit
                }
                None => std::future::pending().await,
            }
        };
        let raced = async {
            match select(std::pin::pin!(work), std::pin::pin!(stall)).await {
                Either::Left((done, _)) => done,
                Either::Right((limit, _)) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the server's sftp answered nothing for {} s (deploy.request_timeout): stalled",
                        limit.as_secs()
                    ),
                )),
            }
        };
        let done = match self.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), raced)
                .await
                .map_err(|_| self.deadline_error())
                .and_then(|r| r),
            None => raced.await,
        };
        done.map_err(|e| self.explain(e))
    }

    /// `e`, or the packet the framing refused when there was one: the sftp client only
    /// says its background task failed.
    fn explain(&self, e: io::Error) -> io::Error {
        match self.watch.reason() {
            Some(why) => io::Error::new(io::ErrorKind::InvalidData, why),
            None => e,
        }
    }

    /// The error of an exchange cut short by the deadline.
    fn deadline_error(&self) -> io::Error {
        match &self.deadline_message {
            Some(message) => io::Error::new(io::ErrorKind::TimedOut, message.clone()),
            None => deadline_passed(),
        }
    }
}

/// `rel` on the server: below `base`, when there is one.
fn below(base: &Path, rel: &str) -> PathBuf {
    if base.as_os_str().is_empty() {
        PathBuf::from(rel)
    } else {
        base.join(rel)
    }
}

pub use crate::server_dir::Kind;

fn kind_of(t: Option<openssh_sftp_client::metadata::FileType>) -> Kind {
    match t {
        Some(t) if t.is_file() => Kind::File,
        Some(t) if t.is_dir() => Kind::Dir,
        Some(t) if t.is_symlink() => Kind::Link,
        _ => Kind::Other,
    }
}

/// A temp name next to `rel`'s file that nobody else picked: `dir/.name.<pid>.<n><ns>.tmp`
/// (created exclusively, so a clash is only retried).
fn temp_name(rel: &str) -> String {
    match rel.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{}", crate::confined::temp_name(name)),
        None => crate::confined::temp_name(rel),
    }
}

/// A connection that could not be opened: ssh's last words, and whether trying again
/// may help.
#[derive(Debug, thiserror::Error)]
#[error("sftp connection failed: {message}")]
pub struct ConnectError {
    /// ssh's last line on stderr, or what went wrong without one.
    pub message: String,
    /// A passing failure (dropped before authentication, refused, timed out, no route):
    /// worth retrying. A host-key mismatch, a refused login or anything unknown is not.
    pub transient: bool,
}

impl ConnectError {
    fn permanent(message: String) -> ConnectError {
        ConnectError {
            message,
            transient: false,
        }
    }
}

/// Whether a failed `ssh` is worth retrying, from its exit status (`None`: it did not
/// exit by itself, as when the handshake timed out) and every line it printed on stderr:
/// its cause is not always the last one (a banner timeout ends with `Connection to … timed
/// out`, after `Connection timed out during banner exchange`).
///
/// ssh exits 255 for its own failures; anything else is not ssh speaking (a wrapper or
/// ProxyCommand that failed): permanent. Of ssh's own, retried are the connection dropped
/// before authentication (sshd's `MaxStartups` closes it: `Connection closed by …`,
/// `kex_exchange_identification: …`, `Connection reset by …`), refused, timed out, and an
/// unreachable network; never a host-key mismatch or a refused login, which another
/// attempt cannot change, nor anything unknown.
pub fn transient(status: Option<i32>, stderr: &str) -> bool {
    const PERMANENT: &[&str] = &[
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "No matching host key",
        "Permission denied",
        "Too many authentication failures",
        "no matching",
        "Unable to negotiate",
        "Could not resolve hostname",
    ];
    const TRANSIENT: &[&str] = &[
        "Connection closed by",
        "Connection reset by",
        "kex_exchange_identification",
        "Connection refused",
        "Connection timed out",
        "Operation timed out",
        "timed out during banner exchange",
        "No route to host",
        "Network is unreachable",
        "Timeout, server",
    ];
    let any = |markers: &[&str]| stderr.lines().any(|l| markers.iter().any(|m| l.contains(m)));
    match status {
        None => !any(PERMANENT),
        Some(255) => !any(PERMANENT) && any(TRANSIENT),
        Some(_) => false,
    }
}

/// ssh's own last words explain a failed connection best (host key mismatch…); with
/// its exit status they say whether to retry. `failure`: why the sftp handshake ended,
/// `None` when it timed out (ssh is then stopped).
async fn connect_error(child: &mut tokio::process::Child, failure: Option<String>) -> ConnectError {
    use tokio::io::AsyncReadExt;
    if failure.is_none() {
        let _ = child.start_kill();
    }
    // ssh closes stderr when it exits: a failed handshake means it is exiting.
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), err.read_to_string(&mut stderr)).await;
    }
    let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) if failure.is_some() => status.code(),
        _ => {
            let _ = child.start_kill();
            None
        }
    };
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_owned);
    let fallback = failure.unwrap_or_else(|| "timed out".into());
    let transient = transient(status, &stderr);
    ConnectError {
        message: last.unwrap_or(fallback),
        transient,
    }
}

/// A path as an ssh option value: in double quotes when it holds whitespace.
pub(crate) fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// The ssh command line: key pinning, batch mode, the host key as identity.
pub fn ssh_args(t: &SshTarget) -> Vec<String> {
    let opt = |o: String| ["-o".to_owned(), o];
    let mut args = Vec::new();
    for o in [
        "BatchMode=yes".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        // Quoted when it has spaces (a fleet in `~/My Fleet`): ssh splits option values.
        format!("UserKnownHostsFile={}", quoted(&t.known_hosts)),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        format!("ConnectTimeout={}", t.connect_timeout.as_secs().max(1)),
        // A server that stops answering is given up after about 45 s.
        "ServerAliveInterval=15".to_owned(),
        "ServerAliveCountMax=3".to_owned(),
    ] {
        args.extend(opt(o));
    }
    if let Some(identity) = &t.identity {
        args.extend(opt("IdentitiesOnly=yes".to_owned()));
        args.extend(["-i".into(), identity.display().to_string()]);
    }
    args.extend(["-p".into(), t.port.to_string()]);
    args.extend([
        "-l".into(),
        t.user.clone(),
        "-s".into(),
        "--".into(),
        t.address.clone(),
        "sftp".into(),
    ]);
    args
}

/// Copies the regular file `rel` into `sink` (see [`Transport::read_to`]).
async fn read_file(t: &SftpTransport, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
    use tokio::io::AsyncSeekExt;
    let path = t.checked(rel)?;
    let sftp = t.sftp();
    // Looked at before opening: opening a FIFO would block the server for good.
    let meta = sftp.fs().symlink_metadata(&path).await.map_err(to_io)?;
    if !meta.file_type().is_some_and(|t| t.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("refusing `{}`: not a regular file", rel.escape_default()),
        ));
    }
    if meta.len().is_some_and(|len| len > limit) {
        return Err(crate::confined::too_large(rel, limit));
    }
    // Closed when dropped: the request is queued and sent with the next one, without
    // waiting for its answer.
    let mut file = sftp.open(&path).await.map_err(to_io)?;
    let mut copied = 0u64;
    loop {
        let Some(chunk) = file.read(READ_CHUNK, Default::default()).await.map_err(to_io)? else {
            return Ok(copied);
        };
        copied += chunk.len() as u64;
        if copied > limit {
            return Err(crate::confined::too_large(rel, limit));
        }
        sink.write_all(&chunk)?;
        // A short read that reaches the size seen above is the end of a regular file: no
        // round trip to hear so.
        if (chunk.len() as u64) < READ_CHUNK as u64 && meta.len().is_some_and(|len| copied >= len) {
            return Ok(copied);
        }
        // The client library moves its offset by what was asked; a short read must not
        // skip bytes.
        file.seek(io::SeekFrom::Start(copied)).await?;
    }
}

/// How many files [`Transport::read_each`] reads at once over one connection.
const IN_FLIGHT: usize = 8;

/// How much one read request asks for: a reply (data and its 13-byte header) must fit in
/// a packet the framing accepts ([`frame::MAX_PACKET`]).
const READ_CHUNK: u32 = 255 * 1024;

/// Writes `rel` under a fresh temp name, created exclusively, then renamed over it (see
/// [`Transport::write`]).
async fn write_file(t: &SftpTransport, rel: &str, bytes: &[u8]) -> io::Result<()> {
    let path = t.checked(rel)?;
    let failed = format!(
        "{}: no temp file could be created next to it",
        rel.escape_default()
    );
    let (tmp, mut file) = t.create_temp(rel, &failed).await?;
    let posix_rename = t.sftp().support_posix_rename();
    let mut fs = t.sftp().fs();
    let written = async {
        file.write_all(bytes).await?;
        file.close().await?;
        if !posix_rename {
            // A plain sftp rename does not replace: remove the old file first.
            let _ = fs.remove_file(&path).await;
        }
        fs.rename(t.at(&tmp), &path).await
    }
    .await;
    if written.is_err() {
        let _ = fs.remove_file(t.at(&tmp)).await;
    }
    written.map_err(to_io)
}

impl Transport for SftpTransport {
    fn read_to(&mut self, rel: &str, limit: u64, sink: &mut dyn Write) -> io::Result<u64> {
        let copied = self.run(read_file(self, rel, limit, sink))?;
        self.transferred += copied;
        Ok(copied)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        self.run(write_file(self, rel, bytes))?;
        self.transferred += bytes.len() as u64;
        Ok(())
    }

    fn read_link(&mut self, rel: &str) -> io::Result<PathBuf> {
        let path = self.checked(rel)?;
        let mut fs = self.sftp().fs();
        self.block(fs.read_link(&path))
    }

    fn write_and_read(
        &mut self,
        write: (&str, &[u8]),
        read: (&str, u64),
    ) -> (io::Result<()>, io::Result<Vec<u8>>) {
        let mut bytes = Vec::new();
        let both = async {
            Ok(tokio::join!(
                write_file(self, write.0, write.1),
                read_file(self, read.0, read.1, &mut bytes)
            ))
        };
        let (written, copied) = self.run(both).unwrap_or_else(|e| {
            let again = io::Error::new(e.kind(), e.to_string());
            (Err(e), Err(again))
        });
        let written = written.map_err(|e| self.explain(e));
        let copied = copied.map_err(|e| self.explain(e));
        if written.is_ok() {
            self.transferred += write.1.len() as u64;
        }
        let read = copied.map(|n| {
            self.transferred += n;
            bytes
        });
        (written, read)
    }

    fn read_each(&mut self, files: &mut [Download<'_>]) -> Vec<io::Result<u64>> {
        use futures_util::StreamExt;
        let count = files.len();
        let reads = files
            .iter_mut()
            .map(|d| read_file(self, d.rel, d.limit, &mut *d.sink));
        let all = async {
            Ok(futures_util::stream::iter(reads)
                .buffered(IN_FLIGHT)
                .collect::<Vec<_>>()
                .await)
        };
        let results: Vec<io::Result<u64>> = match self.run(all) {
            Ok(results) => results
                .into_iter()
                .map(|r| r.map_err(|e| self.explain(e)))
                .collect(),
            Err(e) => (0..count)
                .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                .collect(),
        };
        self.transferred += results.iter().flatten().sum::<u64>();
        results
    }

    fn bytes_transferred(&self) -> u64 {
        self.transferred
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

impl Drop for SftpTransport {
    fn drop(&mut self) {
        // Bounded: a server that stopped answering must not keep the agent (and its lock).
        let grace = Duration::from_secs(2);
        if let Some(sftp) = self.sftp.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(grace, sftp.close()).await });
        }
        let child = &mut self.child;
        self.runtime.block_on(async {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::{ssh_args, transient, SshTarget};

    #[test]
    fn an_admin_logs_in_with_their_own_keys_a_host_with_its_key_only() {
        let mut target = SshTarget {
            user: "bento-publish".into(),
            address: "bento.example.org".into(),
            port: 22,
            identity: None,
            known_hosts: "/home/a/My Fleet/keys/server_known_hosts".into(),
            connect_timeout: std::time::Duration::from_secs(5),
            ssh: "ssh".into(),
        };
        let args = ssh_args(&target);
        assert!(args.contains(&"UserKnownHostsFile=\"/home/a/My Fleet/keys/server_known_hosts\"".to_owned()));
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_owned()));
        assert!(
            !args.iter().any(|a| a == "-i" || a.starts_with("IdentitiesOnly")),
            "{args:?}"
        );
        target.identity = Some("/etc/ssh/ssh_host_ed25519_key".into());
        target.known_hosts = "/etc/bento/known_hosts".into();
        let args = ssh_args(&target);
        assert!(args.contains(&"UserKnownHostsFile=/etc/bento/known_hosts".to_owned()));
        assert!(args.contains(&"IdentitiesOnly=yes".to_owned()));
        assert!(args
            .windows(2)
            .any(|w| w == ["-i", "/etc/ssh/ssh_host_ed25519_key"]));
    }

    #[test]
    fn passing_failures_are_retried() {
        for line in [
            // sshd's MaxStartups closing an unauthenticated connection.
            "Connection closed by 127.0.0.1 port 2222",
            "kex_exchange_identification: Connection closed by remote host",
            "kex_exchange_identification: read: Connection reset by peer",
            "Connection reset by 10.0.0.1 port 22",
            "ssh: connect to host 10.0.0.1 port 22: Connection refused",
            "ssh: connect to host 10.0.0.1 port 22: Connection timed out",
            "Connection timed out during banner exchange",
            "ssh: connect to host 10.0.0.1 port 22: No route to host",
            "ssh: connect to host 10.0.0.1 port 22: Network is unreachable",
        ] {
            assert!(transient(Some(255), line), "{line}");
        }
        // A banner timeout: the cause is not ssh's last line.
        let banner =
            "Connection timed out during banner exchange\r\nConnection to 127.0.0.1 port 2222 timed out\r\n";
        assert!(transient(Some(255), banner));
        // A refusal anywhere is not retried, whatever came after.
        assert!(!transient(
            Some(255),
            "Host key verification failed.\nConnection closed by 127.0.0.1 port 22"
        ));
        // The handshake timed out and ssh was stopped: no status, maybe no words.
        assert!(transient(None, ""));
        assert!(transient(None, "Connection timed out during banner exchange"));
    }

    #[test]
    fn refusals_and_the_unknown_are_not() {
        for line in [
            "Host key verification failed.",
            "bento-web1@127.0.0.1: Permission denied (publickey).",
            "Received disconnect from 10.0.0.1 port 22:2: Too many authentication failures",
            "Unable to negotiate with 10.0.0.1 port 22: no matching host key type found",
            "ssh: Could not resolve hostname nowhere: Name or service not known",
            "something ssh never said",
            "",
        ] {
            assert!(!transient(Some(255), line), "{line}");
            if !line.is_empty() && line != "something ssh never said" {
                assert!(!transient(None, line), "{line}");
            }
        }
        // Not ssh's own failure (a wrapper, a ProxyCommand that exited 1): not retried,
        // whatever it printed.
        assert!(!transient(Some(1), "Connection refused"));
        assert!(!transient(Some(0), "Connection closed by 127.0.0.1 port 22"));
    }
}
