//! What the publishing account does over sftp besides reading: directories, new files,
//! streamed uploads, renames, removals ([`SftpTransport`]'s methods for [`crate::publish::remote`]).

use std::io;

use futures_util::StreamExt;

use super::{kind_of, Kind, SftpTransport};
use crate::transport::check_rel;

/// The longest name a directory entry may have (Linux's `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Refused (kind `Unsupported`) unless the server has the extension `name`.
fn require(supported: bool, name: &str) -> io::Result<()> {
    match supported {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the sftp server lacks {name} (OpenSSH has it)"),
        )),
    }
}

/// What a publisher does besides reading: directories, new files, renames, removals. Paths
/// are relative to the base ([`SftpTransport::with_base`]).
impl SftpTransport {
    /// What `rel` is, without following a link; `None` when nothing is there.
    pub fn kind(&mut self, rel: &str) -> io::Result<Option<Kind>> {
        let path = self.at_or_base(rel)?;
        let mut fs = self.sftp().fs();
        match self.block(fs.symlink_metadata(&path)) {
            Ok(meta) => Ok(Some(kind_of(meta.file_type()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `rel` on the server (checked), or the base itself for `""`.
    fn at_or_base(&self, rel: &str) -> io::Result<std::path::PathBuf> {
        match (rel, self.base.as_os_str().is_empty()) {
            ("", true) => Ok(".".into()),
            ("", false) => Ok(self.base.clone()),
            _ => self.checked(rel),
        }
    }

    /// Every entry of directory `rel` with its kind (links are listed, never followed),
    /// refused (error [`io::ErrorKind::InvalidData`]) past `limit` entries or at a name
    /// longer than [`NAME_MAX`] bytes (no file system makes one): a directory someone
    /// filled without end is not read to the end.
    pub fn entries_at_most(&mut self, rel: &str, limit: usize) -> io::Result<Vec<(String, Kind)>> {
        let path = self.at_or_base(rel)?;
        let mut fs = self.sftp().fs();
        let result = self.block(async {
            let dir = fs.open_dir(&path).await?;
            let mut entries = Vec::new();
            let mut stream = Box::pin(dir.read_dir());
            while let Some(entry) = stream.next().await {
                let entry = entry?;
                let raw = entry.filename().as_os_str();
                if raw.len() > NAME_MAX {
                    return Ok(Err(format!("holds a name longer than {NAME_MAX} bytes")));
                }
                let name = raw.to_string_lossy().into_owned();
                if name != "." && name != ".." {
                    if entries.len() == limit {
                        return Ok(Err(format!("holds more than {limit} entries")));
                    }
                    entries.push((name, kind_of(entry.file_type())));
                }
            }
            Ok(Ok(entries))
        })?;
        result.map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))
    }

    /// Creates the directory `rel` with `mode`.
    pub fn mkdir(&mut self, rel: &str, mode: u16) -> io::Result<()> {
        let path = self.checked(rel)?;
        let mut fs = self.sftp().fs();
        self.block(async {
            fs.dir_builder()
                .permissions(openssh_sftp_client::metadata::Permissions::from(mode))
                .create(&path)
                .await
        })
    }

    /// Creates the new file `rel` (refused when anything is there, a link included)
    /// holding `bytes`, with `mode`, flushed to disk when the server can
    /// (`fsync@openssh.com`).
    pub fn create(&mut self, rel: &str, bytes: &[u8], mode: u16) -> io::Result<()> {
        let path = self.checked(rel)?;
        let sftp = self.sftp();
        let fsync = sftp.support_fsync();
        self.block(async {
            let mut file = sftp.options().write(true).create_new(true).open(&path).await?;
            file.set_permissions(openssh_sftp_client::metadata::Permissions::from(mode))
                .await?;
            file.write_all(bytes).await?;
            if fsync {
                file.sync_all().await?;
            }
            file.close().await
        })?;
        self.transferred += bytes.len() as u64;
        Ok(())
    }

    /// Renames `from` to `to` with `posix-rename@openssh.com`: atomic, and replacing a
    /// file at `to` (a directory only when empty). Refused by a server without it.
    pub fn posix_rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.checked(from)?, self.checked(to)?);
        require(self.sftp().support_posix_rename(), "posix-rename@openssh.com")?;
        let mut fs = self.sftp().fs();
        self.block(fs.rename(&from, &to))
    }

    /// Replaces the file `rel` with the content of `from` (mode `mode`): streamed into a
    /// fresh temp name next to it (created exclusively: never an existing file, never
    /// through a link), flushed when the server can (`fsync@openssh.com`), then renamed over
    /// `rel` with `posix-rename@openssh.com`, which replaces whatever `rel` was (a planted
    /// link included) without following it. The temp file is removed on failure. Returns
    /// the bytes sent.
    pub fn upload(&mut self, rel: &str, from: &mut dyn io::Read, mode: u16) -> io::Result<u64> {
        check_rel(rel)?;
        require(self.sftp().support_posix_rename(), "posix-rename@openssh.com")?;
        let sftp = self.sftp();
        let (tmp, mut file) = self
            .runtime
            .block_on(self.create_temp(rel, "no temp file could be created"))?;
        let fsync = sftp.support_fsync();
        let (path, tmp_path) = (self.at(rel), self.at(&tmp));
        let mut sent = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        let written = (|| {
            self.block(file.set_permissions(openssh_sftp_client::metadata::Permissions::from(mode)))?;
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.block(file.write_all(&buf[..n]))?;
                sent += n as u64;
            }
            self.block(async {
                if fsync {
                    file.sync_all().await?;
                }
                file.close().await
            })?;
            let mut fs = sftp.fs();
            self.block(fs.rename(&tmp_path, &path))
        })();
        if let Err(e) = written {
            let mut fs = sftp.fs();
            let _ = self.block(fs.remove_file(&tmp_path));
            return Err(e);
        }
        self.transferred += sent;
        Ok(sent)
    }

    /// Removes the file or link `rel`.
    pub fn remove_file(&mut self, rel: &str) -> io::Result<()> {
        let path = self.checked(rel)?;
        let mut fs = self.sftp().fs();
        self.block(fs.remove_file(&path))
    }

    /// Removes the empty directory `rel`.
    pub fn remove_dir(&mut self, rel: &str) -> io::Result<()> {
        let path = self.checked(rel)?;
        let mut fs = self.sftp().fs();
        self.block(fs.remove_dir(&path))
    }

    /// Sets the mode of `rel` (`""`: the base itself).
    pub fn set_mode(&mut self, rel: &str, mode: u16) -> io::Result<()> {
        let path = self.at_or_base(rel)?;
        let mut fs = self.sftp().fs();
        self.block(fs.set_permissions(&path, openssh_sftp_client::metadata::Permissions::from(mode)))
    }

    /// Makes `to` a new name of the file `from` with `hardlink@openssh.com` (the server's
    /// `link(2)`, which follows no link); refused by a server without it.
    pub fn hard_link(&mut self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (self.checked(from)?, self.checked(to)?);
        require(self.sftp().support_hardlink(), "hardlink@openssh.com")?;
        let mut fs = self.sftp().fs();
        self.block(fs.hard_link(&from, &to))
    }

    /// Removes `rel` and, when it is a directory, all it holds (links are removed, never
    /// followed); nothing there is no error. Whoever else writes here chose the tree: it is
    /// refused past 64 levels or a million entries in one directory.
    pub fn remove_tree(&mut self, rel: &str) -> io::Result<()> {
        self.remove_tree_at(rel, 0)
    }

    fn remove_tree_at(&mut self, rel: &str, depth: usize) -> io::Result<()> {
        match self.kind(rel)? {
            None => Ok(()),
            Some(Kind::Dir) if depth > 64 => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: refused: nested more than 64 levels deep",
                    rel.escape_default()
                ),
            )),
            Some(Kind::Dir) => {
                for (name, _) in self.entries_at_most(rel, 1_000_000)? {
                    self.remove_tree_at(&format!("{rel}/{name}"), depth + 1)?;
                }
                self.remove_dir(rel)
            }
            Some(_) => self.remove_file(rel),
        }
    }
}
