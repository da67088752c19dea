//! Reaching a host: the addresses its agent reports in the heartbeat (`logs/seen.json`),
//! and the `ssh` command that reaches it with its host key pinned from
//! `keys/hosts/<host>.pub` — never trust-on-first-use.

use std::net::IpAddr;
use std::path::Path;

/// The most addresses a heartbeat carries, and that status keeps from one.
pub const MAX_ADDRESSES: usize = 16;

/// An address in the one form Bento compares and shows: an IPv4 address written as IPv6
/// (IPv4-mapped `::ffff:a.b.c.d`, SIIT's IPv4-translated `::ffff:0:a.b.c.d`, or the
/// deprecated IPv4-compatible `::a.b.c.d`) is the IPv4 address it carries, so that
/// `::ffff:127.0.0.1` is loopback like `127.0.0.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let s = v6.segments();
    let embedded = std::net::Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s[..6] {
        // IPv4-mapped and IPv4-translated.
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0xffff, 0] => IpAddr::V4(embedded),
        // IPv4-compatible (`::` and `::1` are IPv6's own unspecified and loopback).
        [0, 0, 0, 0, 0, 0] if s[6] != 0 => IpAddr::V4(embedded),
        _ => ip,
    }
}

/// Whether an address (in [`canonical`] form) is worth reporting and may be used to reach
/// a host: never loopback (all of 127.0.0.0/8), unspecified or "this network"
/// (0.0.0.0/8), link-local (169.254.0.0/16, fe80::/10: a link-local address needs an
/// interface name), multicast of any scope (224.0.0.0/4, ff00::/8), reserved or broadcast
/// (240.0.0.0/4), nor IPv6 site-local (fec0::/10, deprecated).
fn reachable(ip: &IpAddr) -> bool {
    match canonical(*ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(a == 0 || a == 127 || (a == 169 && b == 254) || a >= 224)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || first & 0xff00 == 0xff00
                || first & 0xffc0 == 0xfe80
                || first & 0xffc0 == 0xfec0)
        }
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
        .map(canonical)
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
        .map(canonical)
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
    fn loopback_and_other_unusable_addresses_are_refused_in_every_form() {
        let refused = [
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::FFFF:127.1.2.3",
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "127.8.9.10",
            "::ffff:0.0.0.0",
            "0.1.2.3",
            "::ffff:169.254.1.1",
            "169.254.1.1",
            "::ffff:224.0.0.1",
            "ff02::1",
            "ff05::2",
            "ff0e::1",
            "::ffff:255.255.255.255",
            "240.0.0.1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::",
            "::1",
            "0:0:0:0:0:0:0:1",
        ];
        for ip in refused {
            let claimed = serde_json::json!([ip]);
            assert!(valid_addresses(&claimed).is_empty(), "{ip} was kept");
        }
        // A mapped public address is kept, as the IPv4 address it carries (once).
        let claimed = serde_json::json!(["::ffff:192.0.2.7", "192.0.2.7", "::192.0.2.8", "2001:db8::7"]);
        assert_eq!(
            valid_addresses(&claimed),
            ["192.0.2.7", "192.0.2.8", "2001:db8::7"]
        );
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
