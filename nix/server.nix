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
#
# With `publishKeys` (the admins' ssh keys), admins publish from their own machines with
# `bento deploy --target sftp://bento-publish@server/`: the account `bento-publish` is
# sftp only, chrooted to <root>, owns each <root>/H/generations, and <root>/H/current is
# root's link to generations/current, the pointer it replaces. With `cache.enable` too,
# it owns <root>/cache and fills it over the same connection. Each host's own cache,
# <root>/H/cache and cache/nar (what a closure deployment links there from <root>/cache),
# is that account's too, or root's without one.
{ config, lib, ... }:

let
  cfg = config.services.bento-server;
  inherit (lib) mkEnableOption mkIf mkOption types;
  userOf = host: "${cfg.userPrefix}${host}";
  publisher = "bento-publish";
  publishing = cfg.publishKeys != [ ];
  cacheOwner = if publishing then publisher else "root";
  # sftp only, chrooted, no forwarding of any kind (the lines `bento server setup` prints).
  restricted = user: chroot: ''
    Match User ${user}
      ChrootDirectory ${chroot}
      ForceCommand internal-sftp
      DisableForwarding yes
      AllowTcpForwarding no
      AllowStreamLocalForwarding no
      AllowAgentForwarding no
      X11Forwarding no
      PermitTunnel no
      PermitTTY no
      PasswordAuthentication no
  '';
  # As bento checks host names: no `/`, not starting with `.` or `-`.
  # As bento checks server.root: absolute, normalised, one safe word (it is written into
  # sshd_config, tmpfiles rules and shell commands): letters, digits and /._+,:@=- only.
  rootOk = builtins.stringLength cfg.root <= 4095
    && builtins.match "(/[A-Za-z0-9._+,:@=-]+)+" cfg.root != null
    && !(lib.any (c: c == "." || c == "..") (lib.tail (lib.splitString "/" cfg.root)));
  badHosts = lib.filter (h: builtins.match "[A-Za-z0-9_][A-Za-z0-9._-]*" h == null)
    (lib.attrNames cfg.hosts);
in
{
  options.services.bento-server = {
    enable = mkEnableOption "the Bento server: chrooted, sftp-only access for each host to its bundles";

    root = mkOption {
      type = types.str;
      default = "/srv/bento";
      example = "/srv/bento";
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

    publishKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… alice" ];
      description = ''
        SSH public keys of the admins who publish with `bento deploy --target
        sftp://bento-publish@<server>/` (keys/admins/ of the fleet). Non-empty: the account
        `bento-publish` (sftp only, chrooted to `root`, no forwarding, no TTY) owns each
        host's `generations/` and `cache/` (with `cache/nar`), and each host's `current`
        becomes root's link to `generations/current`. It cannot log in as a host, nor
        read outside `root`. With `cache.enable`, it also owns `root`/cache, which
        `bento deploy` fills over sftp.
      '';
    };

    cache = {
      enable = mkEnableOption ''
        serving <root>/cache, the signed Nix binary cache that `bento deploy` fills with
        `[cache] signing_key`, over HTTP with nginx (only nix-cache-info, *.narinfo and
        nar/*, GET and HEAD, no symlink followed). Hosts add it with the client module's
        `cache.url` and `cache.publicKey`'';
      virtualHost = mkOption {
        type = types.str;
        default = "bento-cache";
        description = ''
          The name of the nginx virtual host serving the cache: set its `listen`,
          `serverName`, TLS (`enableACME`, `forceSSL`) under
          `services.nginx.virtualHosts.<this name>`, and open its port in the firewall.
        '';
      };
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
      assertion = rootOk;
      message = "services.bento-server.root ${builtins.toJSON cfg.root} must be an absolute path "
        + "without `.`, `..` or empty components or a trailing `/`, of letters, digits and "
        + "`/._+,:@=-` only (it is written into sshd_config, tmpfiles rules and shell commands)";
    } {
      assertion = !(cfg.cache.enable && cfg.hosts ? cache);
      message = "services.bento-server.hosts.cache: with cache.enable, ${cfg.root}/cache is the "
        + "binary cache, not a host's directory: rename the host";
    } {
      assertion = badHosts == [ ];
      message = "services.bento-server.hosts: "
        + lib.concatMapStringsSep ", " (h: "`${h}`") badHosts
        + " is not a valid host name (letters, digits, `.`, `_`, `-`, not starting with `.` "
        + "or `-`): it names a user and a chroot directory under ${cfg.root}";
    } {
      assertion = !(publishing && lib.any (h: userOf h == publisher) (lib.attrNames cfg.hosts));
      message = "services.bento-server: a host's user would be `${publisher}`, the publishing "
        + "account: rename the host or set userPrefix";
    }];

    users.groups = { bento = { }; } // lib.optionalAttrs publishing { ${publisher} = { }; };

    users.users = lib.mapAttrs' (host: key:
      lib.nameValuePair (userOf host) {
        isSystemUser = true;
        group = "bento";
        home = "/";
        openssh.authorizedKeys.keys = [ key ];
      }) cfg.hosts
      // lib.optionalAttrs publishing {
        # Its own group: never `bento`, whose users are chrooted to their host's directory.
        ${publisher} = {
          isSystemUser = true;
          group = publisher;
          home = "/";
          openssh.authorizedKeys.keys = cfg.publishKeys;
        };
      };

    systemd.tmpfiles.rules = [ "d ${cfg.root} 0755 root root -" ]
      # The cache: the publishing account's when there is one (it fills the cache over
      # sftp), root's otherwise; 0755 either way, for nginx to read.
      ++ lib.optionals cfg.cache.enable [
        "d ${cfg.root}/cache 0755 ${cacheOwner} ${cacheOwner} -"
        "d ${cfg.root}/cache/nar 0755 ${cacheOwner} ${cacheOwner} -"
      ]
      # A host's logs/: its own to write. With a publishing account, readable by it too
      # (`bento status` over sftp): its group, setgid so that what the host writes there
      # gets that group; other hosts are in neither.
      ++ lib.concatLists (lib.mapAttrsToList (host: _: [
        "d ${cfg.root}/${host} 0755 root root -"
        (if publishing
         then "d ${cfg.root}/${host}/logs 2750 ${userOf host} ${publisher} -"
         else "d ${cfg.root}/${host}/logs 0700 ${userOf host} bento -")
      ] ++ lib.optionals publishing [
        # What the host wrote before it had that group (no link is followed).
        "z ${cfg.root}/${host}/logs/*.json - - ${publisher} -"
        "d ${cfg.root}/${host}/generations 0755 ${publisher} ${publisher} -"
        "L+ ${cfg.root}/${host}/current - - - - generations/current"
      ] ++ [
        # The host's own cache (closure deployments fetch from it): as generations/, the
        # publishing account's when there is one (it makes the links into <root>/cache over
        # sftp), root's otherwise; 0755 either way.
        "d ${cfg.root}/${host}/cache 0755 ${cacheOwner} ${cacheOwner} -"
        "d ${cfg.root}/${host}/cache/nar 0755 ${cacheOwner} ${cacheOwner} -"
      ]) cfg.hosts);

    # The binary cache: nginx serves the cache's own files and nothing else from it.
    services.nginx = mkIf cfg.cache.enable {
      enable = true;
      virtualHosts.${cfg.cache.virtualHost} = {
        root = "${cfg.root}/cache";
        extraConfig = ''
          disable_symlinks on;
          autoindex off;
        '';
        locations."/".return = "404";
        locations."= /nix-cache-info".extraConfig = "limit_except GET { deny all; }";
        locations."~ ^/[0-9a-df-np-sv-z]{32}\\.narinfo$".extraConfig = "limit_except GET { deny all; }";
        locations."~ ^/nar/[0-9a-df-np-sv-z]+\\.nar(\\.xz|\\.zst|\\.bz2)?$".extraConfig = "limit_except GET { deny all; }";
      };
    };

    services.openssh.enable = true;
    # Global, not per Match block: sized for the fleet (see maxStartups).
    services.openssh.settings.MaxStartups = lib.mkDefault cfg.maxStartups;
    # One Match block per user: the chroot is named after the host, not the user. sftp
    # only, no forwarding of any kind (the same lines as `bento server setup` prints).
    # Last in sshd_config (after mkAfter definitions too): a Match block runs to the end
    # of the file, so any global line of another module or the host's own config placed
    # after it would apply to the last user only, or be refused inside a Match.
    services.openssh.extraConfig = lib.mkOrder 2000 (lib.optionalString publishing (restricted publisher cfg.root)
      + lib.concatStrings (lib.mapAttrsToList (host: _: restricted (userOf host) "${cfg.root}/${host}") cfg.hosts));
  };
}
