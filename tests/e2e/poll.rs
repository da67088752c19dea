//! The cost of a no-change poll in round trips to the server: the heartbeat is written
//! side by side with the read of `current`, and a read does not wait for answers it does
//! not need. Observed through the requests an OpenSSH `sftp-server` logs.

use crate::agent::Loop;
use crate::harness::ok;

const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// The agent's `ssh`, replaced by a program that speaks sftp at once: OpenSSH's own
/// `sftp-server`, in web1's directory on the server, logging every request to `log`.
fn logging_sftp(l: &Loop, log: &std::path::Path) {
    let fake = l.fleet.script(
        "ssh",
        &format!(
            "exec {SFTP_SERVER} -e -l DEBUG3 -d {dir} 2>>{log}",
            dir = l.server.join("web1").display(),
            log = log.display()
        ),
    );
    let rebuild = l.fleet.keys.join("nixos-rebuild");
    let kh = l.fleet.home.join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    l.write_config("sftp://bento-web1@127.0.0.1:22", &rebuild, Some(&kh));
    let mut config = std::fs::read_to_string(&l.config).unwrap();
    config.push_str(&format!("ssh = \"{}\"\n", fake.display()));
    std::fs::write(&l.config, config).unwrap();
}

#[test]
fn a_no_change_poll_reads_current_while_the_heartbeat_is_written() {
    crate::harness::require(SFTP_SERVER);
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let log = l.fleet.home.join("sftp-server.log");
    logging_sftp(&l, &log);
    let out = l.agent(&[]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date (bundle generation 1)"));
    let log = std::fs::read_to_string(&log).unwrap();
    let at = |what: &str| {
        log.lines()
            .position(|line| line.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` in the sftp-server log:\n{log}"))
    };
    let beat: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.server.join("web1/logs/seen.json")).unwrap()).unwrap();
    assert_eq!(beat["applied"], 1, "the heartbeat was written");
    // Side by side: `current` is looked at before the heartbeat's rename is asked for;
    // one after the other, the read would start only once the rename was answered.
    assert!(
        at("lstat name \"current\"") < at("rename old \"logs/.seen.json."),
        "the read of current waited for the heartbeat:\n{log}"
    );
    // One read request for a file that fits in one: no second one to hear the end.
    let reads = log.lines().filter(|l| l.contains(": read \"current\"")).count();
    assert_eq!(reads, 1, "{log}");
    assert!(
        log.contains("close \"current\""),
        "its handle is still closed:\n{log}"
    );
}
