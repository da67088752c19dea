//! Reaching a host: the addresses its agent reports in the heartbeat (`logs/seen.json`),
//! and the `ssh` command that reaches it with its host key pinned from
//! `keys/hosts/<host>.pub` — never trust-on-first-use.

use std::net::IpAddr;
use std::path::Path;

/// The most addresses a heartbeat carries, and that status keeps from one.
pub const MAX_ADDRESSES: usize = 16;

/// Whether an address is worth reporting: not loopback, unspecified, multicast or
/// link-local (a link-local IPv6 address needs an interface name to be used).
fn reachable(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// This machine's IP addresses (`getifaddrs`) that another machine could use: IPv4
/// first, no duplicates, at most [`MAX_ADDRESSES`]. Empty when they cannot be listed.
pub fn local_addresses() -> Vec<String> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = interfaces
        .filter_map(|i| {
            let address = i.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .filter(reachable)
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    let mut seen = Vec::new();
    for ip in ips {
        if !seen.contains(&ip) {
            seen.push(ip);
        }
    }
    seen.into_iter()
        .take(MAX_ADDRESSES)
        .map(|ip| ip.to_string())
        .collect()
}

/// The addresses a heartbeat claims, kept only when each is a reachable IP address (the
/// host writes its heartbeat: anything else is dropped), in canonical form, at most
/// [`MAX_ADDRESSES`].
pub fn valid_addresses(claimed: &serde_json::Value) -> Vec<String> {
    let Some(list) = claimed.as_array() else {
        return Vec::new();
    };
    let mut kept: Vec<String> = Vec::new();
    for ip in list
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|s| s.len() <= 64)
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(reachable)
    {
        let ip = ip.to_string();
        if !kept.contains(&ip) {
            kept.push(ip);
        }
        if kept.len() == MAX_ADDRESSES {
            break;
        }
    }
    kept
}

/// The sshd port a heartbeat claims, when it is one (1–65535).
pub fn valid_port(claimed: &serde_json::Value) -> Option<u16> {
    claimed
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// Where and as whom to reach a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host's fleet name: the alias its pinned key is filed under.
    pub host: String,
    /// A host name or IP address (never starting with `-`).
    pub address: String,
    /// The sshd port.
    pub port: u16,
    /// The remote user, when not the admin's own (or their ssh config's).
    pub user: Option<String>,
}

/// The known_hosts line pinning `key` (an ssh public key line) for `host`: filed under
/// the host's fleet name, which the command sets as `HostKeyAlias`, so the pin applies
/// whatever address is used.
pub fn known_hosts_line(host: &str, key: &str) -> String {
    let mut fields = key.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    let blob = fields.next().unwrap_or_default();
    format!("{host} {kind} {blob}\n")
}

/// The arguments of `ssh` (without the program) that reach `target` with only the key in
/// `known_hosts` accepted, then run `remote` there (a login shell when empty). The
/// address follows `--`, so neither it nor `remote` is read as an option.
pub fn ssh_args(target: &Target, known_hosts: &Path, remote: &[String]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for option in [
        "StrictHostKeyChecking=yes".to_owned(),
        format!("UserKnownHostsFile={}", crate::sftp::quoted(known_hosts)),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        format!("HostKeyAlias={}", target.host),
        "UpdateHostKeys=no".to_owned(),
        "CheckHostIP=no".to_owned(),
    ] {
        args.push("-o".into());
        args.push(option);
    }
    args.push("-p".into());
    args.push(target.port.to_string());
    if let Some(user) = &target.user {
        args.push("-l".into());
        args.push(user.clone());
    }
    args.push("--".into());
    args.push(target.address.clone());
    args.extend(remote.iter().cloned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_reachable_ip_addresses() {
        let claimed = serde_json::json!([
            "192.0.2.7",
            "-oProxyCommand=x",
            "127.0.0.1",
            "::1",
            "fe80::1",
            "2001:db8::1",
            "192.0.2.7",
            7,
            "host.example.org",
            "0.0.0.0"
        ]);
        assert_eq!(valid_addresses(&claimed), ["192.0.2.7", "2001:db8::1"]);
        let many: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
        assert_eq!(valid_addresses(&serde_json::json!(many)).len(), MAX_ADDRESSES);
        assert!(valid_addresses(&serde_json::json!("10.0.0.1")).is_empty());
        assert_eq!(valid_port(&serde_json::json!(2222)), Some(2222));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(70000),
            serde_json::json!("22"),
        ] {
            assert_eq!(valid_port(&bad), None);
        }
    }

    #[test]
    fn local_addresses_are_reachable_ips() {
        for a in local_addresses() {
            let ip: IpAddr = a.parse().unwrap();
            assert!(reachable(&ip), "{a}");
        }
    }

    #[test]
    fn the_address_follows_double_dash() {
        let target = Target {
            host: "web1".into(),
            address: "192.0.2.7".into(),
            port: 2222,
            user: Some("root".into()),
        };
        let args = ssh_args(&target, Path::new("/f/known"), &["-v".into()]);
        let dash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dash + 1..], ["192.0.2.7", "-v"]);
        assert!(args.contains(&"HostKeyAlias=web1".to_owned()));
        // ssh splits an option's value on whitespace: a fleet path with a space is quoted.
        let args = ssh_args(&target, Path::new("/My Fleet/known"), &[]);
        assert!(
            args.contains(&"UserKnownHostsFile=\"/My Fleet/known\"".to_owned()),
            "{args:?}"
        );
        assert_eq!(
            known_hosts_line("web1", "ssh-ed25519 AAAA comment"),
            "web1 ssh-ed25519 AAAA\n"
        );
    }
}
