//! `bento ssh HOST`: the system `ssh` to a host, its host key pinned from
//! `keys/hosts/HOST.pub` through a known_hosts file of its own (planned by
//! [`bento_deploy::fleet::ssh`]).

use std::path::Path;
use std::process::ExitCode;

use bento_deploy::fleet::location::Location;
use bento_deploy::fleet::ssh::{self, SshPlan};
use bento_deploy::Config;

use crate::cli::SshArgs;

/// ssh's own exit status when it fails (connection, host key, authentication); any other
/// status is the remote command's.
const SSH_FAILED: i32 = 255;

pub fn run(fleet: &Path, args: SshArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(fleet)?;
    let host = &args.host;
    let location = || {
        Location::choose(
            &config,
            args.server.server_root.as_deref(),
            args.server.target.as_deref(),
        )
    };
    let SshPlan {
        target,
        key_rel,
        args: ssh_args,
    } = ssh::plan(fleet, &config, host, &location, &args.args)?;
    if args.print {
        let words: Vec<String> = std::iter::once("ssh".to_owned())
            .chain(ssh_args.iter().map(|a| shell_word(a)))
            .collect();
        crate::output::outln!("{}", words.join(" "))?;
        return Ok(ExitCode::SUCCESS);
    }
    let ran = std::process::Command::new("ssh")
        .args(&ssh_args)
        .status()
        .map_err(|e| anyhow::anyhow!("running ssh: {e} (install the OpenSSH client)"))?;
    match ran.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(SSH_FAILED) => anyhow::bail!(
            "ssh to {host} at {}:{} failed (see ssh's message above); if the host key differs, \
             this is not the host registered in {key_rel}: check it before anything else \
             (after a reinstall: `bento host add {host} --key FILE --replace`)",
            target.address,
            target.port
        ),
        Some(code) => Ok(ExitCode::from(u8::try_from(code).unwrap_or(1))),
        None => anyhow::bail!("ssh to {host} ended by a signal ({ran})"),
    }
}

/// `word` as one shell word: bare when safe, else single-quoted.
fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
