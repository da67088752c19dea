//! What bento writes to stdout, when nobody reads it: `bento manpage | head -1`.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;

use crate::harness::{example, s};

/// Runs `bento ARGS` with a stdout whose reader is already gone, so the first write
/// fails with EPIPE (deterministically: no race with a reader closing early).
fn into_closed_pipe(fleet: &crate::harness::Fleet, args: &[&str]) -> std::process::Output {
    let (write_end, read_end) = UnixStream::pair().unwrap();
    drop(read_end);
    fleet
        .cmd(args)
        .stdout(Stdio::from(OwnedFd::from(write_end)))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let (fleet, keys) = example();
    assert!(fleet
        .bento_stdin(&["secret", "edit", "web-only"], b"x")
        .status
        .success());
    let server = fleet.home.join("server");
    std::fs::create_dir_all(&server).unwrap();
    let commands: &[&[&str]] = &[
        &["manpage"],
        &["completions", "bash"],
        &["host", "list"],
        &["host", "list", "--json"],
        &["admin", "list"],
        &["secret", "list"],
        &["secret", "list", "--json"],
        &["secret", "verify", "--json"],
        &["secret", "show", "web-only", "-i", s(&keys.web1)],
        &["status", "--json", "--server-root", s(&server)],
        &["server", "setup"],
    ];
    for args in commands {
        let out = into_closed_pipe(&fleet, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?} ends with 128 + SIGPIPE: {stderr}"
        );
        assert!(
            !stderr.contains("error") && !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?} ends quietly: {stderr}"
        );
    }
}

/// The host commands' help shows only what a host uses: no fleet repository options.
#[test]
fn host_commands_help_leaves_out_the_admins_options() {
    let fleet = crate::harness::Fleet::new();
    for host_side in ["agent", "activate", "trigger"] {
        let help = crate::harness::ok(&fleet.bento(&[host_side, "--help"]));
        assert!(
            !help.contains("--fleet") && !help.contains("--verbose"),
            "{host_side}: {help}"
        );
    }
    let help = crate::harness::ok(&fleet.bento(&["deploy", "--help"]));
    assert!(help.contains("--fleet") && help.contains("--verbose"), "{help}");
}
