# Bento's central server: every host of the fleet reaches only its own directory under
# `root`, over sftp, authenticated by its SSH host key.
#
#   services.bento-server = {
#     enable = true;
#     root = "/srv/bento";
#     hosts.web1 = "ssh-ed25519 AAAA…";   # keys/hosts/web1.pub
#   };
#
# Each host H gets a system user <userPrefix>H in group `bento`, chrooted to <root>/H
# (root-owned, 0755, as OpenSSH requires), sftp only, able to write <root>/H/logs only.
# `bento deploy` publishes into <root>; `bento server setup` prints this for a fleet.
{ config, lib, ... }:

let
  cfg = config.services.bento-server;
  inherit (lib) mkEnableOption mkIf mkOption types;
  userOf = host: "${cfg.userPrefix}${host}";
  # As bento checks host names: no `/`, not starting with `.` or `-`.
  badHosts = lib.filter (h: builtins.match "[A-Za-z0-9_][A-Za-z0-9._-]*" h == null)
    (lib.attrNames cfg.hosts);
in
{
  options.services.bento-server = {
    enable = mkEnableOption "the Bento server: chrooted, sftp-only access for each host to its bundles";

    root = mkOption {
      type = types.str;
      default = "/srv/bento";
      description = "Where `bento deploy` publishes: one directory per host (server.root of bento.toml).";
    };

    userPrefix = mkOption {
      type = types.strMatching "[A-Za-z0-9_-]*";
      default = "";
      description = "Host H logs in as user <userPrefix>H (server.user_prefix of bento.toml).";
    };

    maxStartups = mkOption {
      type = types.strMatching "[0-9]+(:[0-9]+:[0-9]+)?";
      default = let n = lib.max 10 ((builtins.length (lib.attrNames cfg.hosts) + 3) / 4);
        in "${toString n}:30:${toString (lib.max 100 (2 * n))}";
      defaultText = lib.literalExpression ''"N:30:max(100, 2N)", N = max(10, ceil(hosts / 4))'';
      description = ''
        sshd's MaxStartups (as `bento server setup` prints it): past N unauthenticated
        connections at once, sshd drops 30 % of new ones, and all past the last number.
        Never below OpenSSH's default 10:30:100; raised with the fleet so that a quarter of
        it may be mid-handshake together. Agents that are dropped retry with backoff.
        Each unauthenticated connection is one sshd process (a few MB).
      '';
    };

    hosts = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { web1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… root@web1"; };
      description = "Host name to its SSH host public key (keys/hosts/<host>.pub of the fleet).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = badHosts == [ ];
      message = "services.bento-server.hosts: "
        + lib.concatMapStringsSep ", " (h: "`${h}`") badHosts
        + " is not a valid host name (letters, digits, `.`, `_`, `-`, not starting with `.` "
        + "or `-`): it names a user and a chroot directory under ${cfg.root}";
    }];

    users.groups.bento = { };

    users.users = lib.mapAttrs' (host: key:
      lib.nameValuePair (userOf host) {
        isSystemUser = true;
        group = "bento";
        home = "/";
        openssh.authorizedKeys.keys = [ key ];
      }) cfg.hosts;

    systemd.tmpfiles.rules = [ "d ${cfg.root} 0755 root root -" ]
      ++ lib.concatLists (lib.mapAttrsToList (host: _: [
        "d ${cfg.root}/${host} 0755 root root -"
        "d ${cfg.root}/${host}/logs 0700 ${userOf host} bento -"
      ]) cfg.hosts);

    services.openssh.enable = true;
    # Global, not per Match block: sized for the fleet (see maxStartups).
    services.openssh.settings.MaxStartups = lib.mkDefault cfg.maxStartups;
    # One Match block per user: the chroot is named after the host, not the user. sftp
    # only, no forwarding of any kind (the same lines as `bento server setup` prints).
    services.openssh.extraConfig = lib.concatStrings (lib.mapAttrsToList (host: _: ''
      Match User ${userOf host}
        ChrootDirectory ${cfg.root}/${host}
        ForceCommand internal-sftp
        DisableForwarding yes
        AllowTcpForwarding no
        AllowStreamLocalForwarding no
        AllowAgentForwarding no
        X11Forwarding no
        PermitTunnel no
        PermitTTY no
        PasswordAuthentication no
    '') cfg.hosts);
  };
}
