//! The sftp transport: one connection through the system OpenSSH client
//! (`ssh -s … sftp`), the server's host key pinned, the host's own key for login.
//!
//! Going through `ssh` means the host's ssh_config applies: ProxyCommand (Tor,
//! corkscrew), ProxyJump, IdentityAgent… The sftp protocol itself is spoken by
//! `openssh-sftp-client` on the child's pipes, inside a small single-threaded runtime.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use openssh_sftp_client::{Sftp, SftpOptions};

use crate::transport::{check_rel, Transport};

/// How to reach the server.
#[derive(Clone, Debug)]
pub struct SshTarget {
    /// sftp user.
    pub user: String,
    /// Server address.
    pub address: String,
    /// sshd port.
    pub port: u16,
    /// The host's private key.
    pub identity: PathBuf,
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
}

fn to_io(e: openssh_sftp_client::Error) -> io::Error {
    match &e {
        openssh_sftp_client::Error::SftpError(openssh_sftp_client::error::SftpErrorKind::NoSuchFile, _) => {
            io::Error::new(io::ErrorKind::NotFound, e.to_string())
        }
        _ => io::Error::other(e.to_string()),
    }
}

impl SftpTransport {
    /// Connects (one `ssh` process for the whole run).
    pub fn connect(target: &SshTarget) -> io::Result<SftpTransport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut cmd = tokio::process::Command::new(&target.ssh);
        cmd.args(ssh_args(target))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let (sftp, child) = runtime.block_on(async {
            let mut child = cmd
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", target.ssh)))?;
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let limit = target.connect_timeout + Duration::from_secs(5);
            match tokio::time::timeout(limit, Sftp::new(stdin, stdout, SftpOptions::default())).await {
                Ok(Ok(sftp)) => Ok((sftp, child)),
                Ok(Err(e)) => Err(connect_error(&mut child, e.to_string()).await),
                Err(_) => Err(connect_error(&mut child, "timed out".into()).await),
            }
        })?;
        Ok(SftpTransport {
            runtime,
            sftp: Some(sftp),
            child,
            transferred: 0,
        })
    }

    fn sftp(&self) -> &Sftp {
        self.sftp.as_ref().expect("open until dropped")
    }
}

/// ssh's own last words explain a failed connection best (host key mismatch…).
async fn connect_error(child: &mut tokio::process::Child, fallback: String) -> io::Error {
    use tokio::io::AsyncReadExt;
    let _ = child.start_kill();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), err.read_to_string(&mut stderr)).await;
    }
    let last = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_owned);
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("sftp connection failed: {}", last.unwrap_or(fallback)),
    )
}

/// The ssh command line: key pinning, batch mode, the host key as identity.
pub fn ssh_args(t: &SshTarget) -> Vec<String> {
    let opt = |o: String| ["-o".to_owned(), o];
    let mut args = Vec::new();
    for o in [
        "BatchMode=yes".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        format!("UserKnownHostsFile={}", t.known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        format!("ConnectTimeout={}", t.connect_timeout.as_secs().max(1)),
        "IdentitiesOnly=yes".to_owned(),
        "ServerAliveInterval=15".to_owned(),
    ] {
        args.extend(opt(o));
    }
    args.extend([
        "-i".into(),
        t.identity.display().to_string(),
        "-p".into(),
        t.port.to_string(),
    ]);
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

impl Transport for SftpTransport {
    fn read(&mut self, rel: &str) -> io::Result<Vec<u8>> {
        check_rel(rel)?;
        let mut fs = self.sftp().fs();
        let bytes = self.runtime.block_on(fs.read(Path::new(rel))).map_err(to_io)?;
        self.transferred += bytes.len() as u64;
        Ok(bytes.to_vec())
    }

    fn list(&mut self, rel: &str) -> io::Result<Vec<(String, bool)>> {
        check_rel(rel)?;
        let mut fs = self.sftp().fs();
        let mut out = self
            .runtime
            .block_on(async {
                let dir = fs.open_dir(Path::new(rel)).await?;
                let mut entries = Vec::new();
                let mut stream = Box::pin(dir.read_dir());
                while let Some(entry) = stream.next().await {
                    let entry = entry?;
                    let name = entry.filename().to_string_lossy().into_owned();
                    if name == "." || name == ".." {
                        continue;
                    }
                    match entry.file_type() {
                        Some(t) if t.is_symlink() => continue,
                        Some(t) => entries.push((name, t.is_dir())),
                        None => entries.push((name, false)),
                    }
                }
                Ok::<_, openssh_sftp_client::Error>(entries)
            })
            .map_err(to_io)?;
        out.sort();
        Ok(out)
    }

    fn write(&mut self, rel: &str, bytes: &[u8]) -> io::Result<()> {
        check_rel(rel)?;
        let mut fs = self.sftp().fs();
        let tmp = format!("{rel}.tmp");
        self.runtime
            .block_on(async {
                fs.write(Path::new(&tmp), bytes).await?;
                let _ = fs.remove_file(Path::new(rel)).await;
                fs.rename(Path::new(&tmp), Path::new(rel)).await
            })
            .map_err(to_io)?;
        self.transferred += bytes.len() as u64;
        Ok(())
    }

    fn bytes_transferred(&self) -> u64 {
        self.transferred
    }
}

impl Drop for SftpTransport {
    fn drop(&mut self) {
        if let Some(sftp) = self.sftp.take() {
            let _ = self.runtime.block_on(sftp.close());
        }
        let _ = self.runtime.block_on(self.child.wait());
    }
}
