# Bento's host side: a timer pulls this host's signed bundle from the Bento server,
# verifies it, runs nixos-rebuild (or only activates secrets), reports back; and the
# activation script decrypts the host's secrets into /run/bento with its SSH host key.
#
#   services.bento = {
#     enable = true;
#     host = "web1";
#     server = "sftp://web1@bento.example.org:22";
#     serverKnownHosts = "bento.example.org ssh-ed25519 AAAA…";  # keys/server_known_hosts
#     trustedKeys = [ "ssh-ed25519 AAAA… alice" ];                # admin keys that sign bundles
#   };
#
# Every option mirrors a key of /etc/bento/agent.toml (see docs/reference.md).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.bento;
  inherit (lib) mkEnableOption mkIf mkOption types;
  toml = pkgs.formats.toml { };
  agentToml = toml.generate "agent.toml" ({
    inherit (cfg) host server identity rebuild rollback;
    known_hosts = "/etc/bento/known_hosts";
    trusted_keys = cfg.trustedKeys;
    state_dir = cfg.stateDir;
    secrets_root = cfg.secretsRoot;
    connect_timeout = cfg.connectTimeout;
    self_update = cfg.selfUpdate;
    reboot = cfg.reboot;
    trigger_socket = cfg.triggerSocket;
    trigger_tcp = cfg.triggerTcp;
  } // lib.optionalAttrs (cfg.triggerGroup != null) {
    trigger_group = cfg.triggerGroup;
  });
  bento = "${cfg.package}/bin/bento";
  activateArgs = "--bundle ${cfg.stateDir}/current --root ${cfg.secretsRoot} -i ${cfg.identity}";
in
{
  options.services.bento = {
    enable = mkEnableOption "the Bento agent: pull-based updates and secrets for this host";

    package = mkOption {
      type = types.package;
      description = "The bento package.";
    };

    host = mkOption {
      type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9._-]*";
      default = config.networking.hostName;
      description = "This host's name in the fleet (hosts/<host>, keys/hosts/<host>.pub).";
    };

    server = mkOption {
      type = types.str;
      example = "sftp://web1@bento.example.org:22";
      description = "sftp://user@address:port of the Bento server, or file:///dir on the same machine.";
    };

    serverKnownHosts = mkOption {
      type = types.lines;
      default = "";
      description = "The server's pinned host key line(s), known_hosts format.";
    };

    identity = mkOption {
      type = types.str;
      default = "/etc/ssh/ssh_host_ed25519_key";
      description = "The host key: logs in over sftp and decrypts this host's secrets.";
    };

    trustedKeys = mkOption {
      type = types.listOf types.str;
      description = "Admin SSH public keys whose bundle signatures this host accepts.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/bento";
      description = "Installed bundles; <stateDir>/current is the active one.";
    };

    secretsRoot = mkOption {
      type = types.str;
      default = "/run/bento";
      description = "Where secrets are activated: <secretsRoot>/secrets/<name>.";
    };

    rebuild = mkOption {
      type = types.str;
      default = "${config.system.build.nixos-rebuild}/bin/nixos-rebuild switch";
      defaultText = "nixos-rebuild switch";
      description = "Applies a new configuration; bento appends --flake …#host or -I nixos-config=….";
    };

    rollback = mkOption {
      type = types.str;
      default = "${config.system.build.nixos-rebuild}/bin/nixos-rebuild switch --rollback";
      defaultText = "nixos-rebuild switch --rollback";
      description = "Undoes a switch after which the server cannot be reached.";
    };

    connectTimeout = mkOption {
      type = types.ints.positive;
      default = 10;
      description = "Seconds before giving up connecting to the server.";
    };

    selfUpdate = mkOption {
      type = types.bool;
      default = false;
      description = "When nothing new was published, rebuild a flake configuration with fresh inputs.";
    };

    reboot = mkOption {
      type = types.enum [ "never" "kexec" "reboot" ];
      default = "never";
      description = "What to do when a switch changed the kernel, initrd or kernel modules.";
    };

    interval = mkOption {
      type = types.str;
      default = "15min";
      description = "How often the timer polls (with up to 5 minutes of random delay).";
    };

    trigger = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Listen on the unix socket triggerSocket: a connection from root (or a member of
        triggerGroup) starts an update and streams its output (`bento trigger`).
      '';
    };

    triggerSocket = mkOption {
      type = types.strMatching "/run/.+";
      default = "/run/bento/trigger.sock";
      description = "The trigger's unix socket (under /run).";
    };

    triggerGroup = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "wheel";
      description = ''
        Members of this group may use the trigger besides root: the socket is 0660
        root:<group>. null: root only (0600). Each connection's credentials are checked too.
      '';
    };

    triggerTcp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Also listen on TCP 127.0.0.1:51337. This lets ANY local user (any process on this
        host, whatever its uid) start an update and read its output; off by default.
      '';
    };
  };

  config = mkIf cfg.enable {
    environment.etc."bento/agent.toml".source = agentToml;
    environment.etc."bento/known_hosts".text = cfg.serverKnownHosts;
    environment.systemPackages = [ cfg.package ];

    # Secrets for users (password hashes) before users exist, the rest after.
    system.activationScripts.bentoSecretsForUsers = {
      text = ''
        if [ -e ${cfg.stateDir}/current ]; then
          ${bento} activate --phase users ${activateArgs} || echo "bento: some secrets for users failed" >&2
        fi
      '';
      deps = [ "specialfs" ];
    };
    system.activationScripts.users.deps = [ "bentoSecretsForUsers" ];
    system.activationScripts.bentoSecrets = {
      text = ''
        if [ -e ${cfg.stateDir}/current ]; then
          ${bento} activate ${activateArgs} || echo "bento: some secrets failed" >&2
        fi
      '';
      deps = [ "specialfs" "users" "groups" ];
    };

    systemd.services.bento-agent = {
      description = "Bento: pull this host's configuration and secrets";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      restartIfChanged = false; # it may be the one running nixos-rebuild
      path = [ pkgs.openssh pkgs.nix pkgs.git ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${bento} agent --once --config /etc/bento/agent.toml";
      };
    };

    systemd.timers.bento-agent = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "2min";
        OnUnitActiveSec = cfg.interval;
        RandomizedDelaySec = "5min";
      };
    };

    # One connection, one `bento trigger --inetd` (which checks the peer's credentials
    # against agent.toml again).
    systemd.sockets.bento-trigger = mkIf cfg.trigger {
      wantedBy = [ "sockets.target" ];
      listenStreams = [ cfg.triggerSocket ] ++ lib.optional cfg.triggerTcp "127.0.0.1:51337";
      socketConfig = {
        Accept = true;
        SocketUser = "root";
        SocketMode = if cfg.triggerGroup == null then "0600" else "0660";
        DirectoryMode = "0755";
      } // lib.optionalAttrs (cfg.triggerGroup != null) {
        SocketGroup = cfg.triggerGroup;
      };
    };
    systemd.services."bento-trigger@" = mkIf cfg.trigger {
      description = "Bento: update now, streaming the output";
      restartIfChanged = false;
      path = [ pkgs.openssh pkgs.nix pkgs.git ];
      serviceConfig = {
        ExecStart = "${bento} trigger --inetd --config /etc/bento/agent.toml";
        StandardInput = "socket";
        StandardOutput = "socket";
        StandardError = "journal";
      };
    };
  };
}
