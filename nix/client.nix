# Bento's host side: a timer pulls this host's signed bundle from the Bento server,
# verifies it, runs nixos-rebuild (or only activates secrets; with mode = "closure",
# fetches the system the admin built from the server and switches to it), reports back;
# and two services (or, in the scripted way, activation scripts) decrypt the host's
# secrets into /run/bento with its SSH host key.
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
  inherit (lib) mkEnableOption mkIf mkMerge mkOption types;
  toml = pkgs.formats.toml { };
  agentToml = toml.generate "agent.toml" ({
    inherit (cfg) host server identity rebuild rollback ssh reboot;
    ssh_port = cfg.sshPort;
    known_hosts = "/etc/bento/known_hosts";
    trusted_keys = cfg.trustedKeys;
    required_signatures = cfg.requiredSignatures;
    state_dir = cfg.stateDir;
    secrets_root = cfg.secretsRoot;
    connect_timeout = cfg.connectTimeout;
    run_timeout = cfg.runTimeout;
    keep_bundles = cfg.keepBundles;
    current_system = cfg.currentSystem;
    booted_system = cfg.bootedSystem;
    self_update = cfg.selfUpdate;
    # The services install the secrets: a switch reruns them only when their units changed.
    activate_after_rebuild = servicesInstall;
    trigger_socket = cfg.triggerSocket;
    trigger_tcp = cfg.triggerTcp;
  } // lib.filterAttrs (_: v: v != null) {
    # Where services install the secrets, the agent reruns them (in their order).
    activate = if cfg.activate != null || !servicesInstall then cfg.activate
      else "${systemctl} restart bento-secrets-for-users.service bento-secrets.service";
    reboot_command = cfg.rebootCommand;
    trigger_group = cfg.triggerGroup;
    s3_credentials = cfg.s3CredentialsFile;
  } // lib.optionalAttrs closure ({
    # Only in closure mode: a source host's agent.toml is as older agents read it.
    mode = "closure";
    cache_public_keys = lib.optional (cfg.cache.publicKey != null) cfg.cache.publicKey;
    nix = "${config.nix.package}/bin/nix";
    # NixOS's own: the generations the boot menu and `nixos-rebuild --rollback` know.
    system_profile = "/nix/var/nix/profiles/system";
  } // lib.optionalAttrs (cfg.switch != null) { inherit (cfg) switch; })
  // lib.optionalAttrs healthChecked {
    # Only with a check: without one, agent.toml is as older agents read it.
    health = {
      failed_units = cfg.health.failedUnits;
      inherit (cfg.health) commands settle timeout;
      inherit systemctl;
    };
  });
  healthChecked = cfg.health.failedUnits || cfg.health.commands != [ ];
  closure = cfg.mode == "closure";
  # A Nix binary cache public key: NAME:BASE64 of 32 bytes (Ed25519).
  cacheKeyOk = key: key != null && builtins.match "[^:[:space:]]+:[A-Za-z0-9+/]{43}=" key != null;
  bento = "${cfg.package}/bin/bento";
  activateArgs = "--bundle ${cfg.stateDir}/current --root ${cfg.secretsRoot} -i ${cfg.identity}";

  # Users made by systemd-sysusers or userborn (a service at boot and during a switch)
  # instead of the `users` activation script, which NixOS then leaves empty.
  usersFromServices = config.systemd.sysusers.enable || config.services.userborn.enable;
  systemctl = "${config.systemd.package}/bin/systemctl";
  # Secrets are installed by bento-secrets{-for-users}.service (at boot, at least).
  servicesInstall = cfg.useSystemdActivation || usersFromServices;
  # Users whose password hash is a Bento secret.
  secretPasswords = lib.attrNames (lib.filterAttrs (_: u: u.hashedPasswordFile != null
    && lib.hasPrefix "${cfg.secretsRoot}/" u.hashedPasswordFile) config.users.users);

  # Scripted activation: during a switch (NIXOS_ACTION is set) the units of changed
  # secrets are restarted with `systemctl --no-block` (queued behind the switch); at boot
  # they have not started yet, and start after activation.
  activate = phase: what: ''
    if [ -e ${cfg.stateDir}/current ]; then
      if [ -n "''${NIXOS_ACTION-}" ]; then bento_units=--from-activation; else bento_units=--no-restart; fi
      ${bento} activate --phase ${phase} ${activateArgs} $bento_units || echo "bento: some ${what} failed" >&2
    fi
  '';

  # What the services install: the secrets of the current bundle with this command, for
  # these owners. A change reruns them during a switch, in order (sysinit-reactivation).
  owners = builtins.toJSON {
    users = lib.mapAttrs (_: u: { inherit (u) uid group; }) config.users.users;
    groups = lib.mapAttrs (_: g: g.gid) config.users.groups;
  };

  # One phase as a service, run at boot before sysinit.target and rerun during a switch
  # by sysinit-reactivation.target (NixOS's idiom for units ordered before sysinit.target):
  # in dependency order, before switch-to-configuration restarts the other units. Units
  # of changed secrets are restarted with `systemctl --no-block` (inside a unit).
  phaseService = phase: description: ordering: lib.recursiveUpdate {
    inherit description;
    wantedBy = [ "sysinit.target" ];
    requiredBy = [ "sysinit-reactivation.target" ];
    restartTriggers = [ bento activateArgs owners ];
    unitConfig = {
      DefaultDependencies = false;
      ConditionPathExists = "${cfg.stateDir}/current";
      RequiresMountsFor = [ cfg.stateDir cfg.secretsRoot (dirOf cfg.identity) ];
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      ExecStart = "${bento} activate --phase ${phase} ${activateArgs} --systemctl ${systemctl}";
    };
  } ordering;

  # What system.autoUpgrade gives nixos-rebuild: Nix's search path, root's home, the
  # proxy, and the tools a rebuild calls.
  serviceEnvironment = {
    environment = {
      NIX_PATH = lib.concatStringsSep ":" config.nix.nixPath;
      HOME = "/root";
    } // config.networking.proxy.envVars;
    path = [
      config.nix.package.out
      config.programs.ssh.package
      pkgs.gitMinimal
      pkgs.coreutils
      pkgs.gnutar
      pkgs.xz.bin
      pkgs.gzip
    ];
  };

  blank = text: builtins.match "[[:space:]]*" text != null;
in
{
  options.services.bento = {
    enable = mkEnableOption "the Bento agent: pull-based updates and secrets for this host";

    package = mkOption {
      type = types.nullOr types.package;
      # This module inside a bento checkout builds that checkout; the flake's
      # nixosModules set the flake's package.
      default =
        if builtins.pathExists ../Cargo.lock then pkgs.callPackage ./package.nix { } else null;
      defaultText = lib.literalExpression "pkgs.callPackage <bento>/nix/package.nix { }";
      description = ''
        The bento package. Outside a bento checkout (e.g. this module copied into a host's
        bundle), set it: the flake's packages.<system>.bento, or
        pkgs.callPackage <bento>/nix/package.nix { src = <a pinned bento source>; }.
      '';
    };

    host = mkOption {
      type = types.strMatching "[A-Za-z0-9_][A-Za-z0-9._-]*";
      default = config.networking.hostName;
      description = "This host's name in the fleet (hosts/<host>, keys/hosts/<host>.pub).";
    };

    server = mkOption {
      type = types.str;
      example = "sftp://web1@bento.example.org:22";
      description = "sftp://user@address:port of the Bento server, file:///dir on the same machine, or s3://BUCKET?endpoint=…&region=… of object storage (with s3CredentialsFile).";
    };

    s3CredentialsFile = mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/etc/bento/s3-credentials";
      description = ''
        With an s3:// `server`: the path of the file holding this host's store key
        (`[default]` with `aws_access_key_id` and `aws_secret_access_key`, root's, 0600).
        A path as a string, never a store path: the key must not enter the Nix store
        (deploy it with the host, e.g. with its SSH host key).
      '';
    };

    serverKnownHosts = mkOption {
      type = types.lines;
      default = "";
      description = "The server's pinned host key line(s), known_hosts format.";
    };

    identity = mkOption {
      type = types.str;
      default =
        let ed25519 = lib.filter (k: (k.type or null) == "ed25519") (config.services.openssh.hostKeys or [ ]);
        in if ed25519 == [ ] then "/etc/ssh/ssh_host_ed25519_key" else (lib.head ed25519).path;
      defaultText = lib.literalExpression
        ''(the first ed25519 key of services.openssh.hostKeys).path, else "/etc/ssh/ssh_host_ed25519_key"'';
      description = "The host key: logs in over sftp and decrypts this host's secrets.";
    };

    useSystemdActivation = mkOption {
      type = types.bool;
      default = usersFromServices;
      defaultText = lib.literalExpression "config.services.userborn.enable || config.systemd.sysusers.enable";
      description = ''
        Install secrets from two systemd services (bento-secrets-for-users,
        bento-secrets) instead of NixOS activation scripts, which nixpkgs is phasing out.
        They run at boot before sysinit.target (after local file systems; the users
        phase before userborn/systemd-sysusers, the rest after them) and again during a
        switch, in that order, through sysinit-reactivation.target. With scripted users
        (neither userborn nor systemd-sysusers), users are made by activation before
        these services run: a changed password hash (needed_for_users) applies at the
        next switch or boot. The default where NixOS already runs without scripted
        users.
      '';
    };

    trustedKeys = mkOption {
      type = types.nonEmptyListOf types.str;
      description = "Admin SSH public keys whose bundle signatures this host accepts.";
    };

    requiredSignatures = mkOption {
      type = types.ints.positive;
      default = 1;
      description = ''
        How many distinct admins of trustedKeys must have signed a bundle before this host
        applies it (the two-person rule); at most the number of trustedKeys.
      '';
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

    mode = mkOption {
      type = types.enum [ "source" "closure" ];
      default = "source";
      description = ''
        How this host gets its system, as bento.toml says for it (`[deploy] mode`,
        `[hosts.<host>] mode`). `source`: the bundle carries the configuration, which
        the host builds with `rebuild`. `closure`: the admin built the system; the host
        fetches the store paths it lacks from its own cache on the server, imports only
        those signed by `cache.publicKey` (required), makes the system the current
        generation of /nix/var/nix/profiles/system and runs `switch`, with
        `nix.package`'s nix.
      '';
    };

    health = {
      failedUnits = mkOption {
        type = types.bool;
        default = false;
        description = ''
          After a switch (or a secrets-only update), no systemd unit may be failed
          (`systemctl --failed`); else the generation is rolled back and reported
          `rolled-back` with the failed units.
        '';
      };
      commands = mkOption {
        type = types.listOf (types.addCheck (types.listOf types.str) (words: words != [ ] && builtins.head words != ""));
        default = [ ];
        example = [ [ "/run/current-system/sw/bin/curl" "-fsS" "http://127.0.0.1:8080/health" ] ];
        description = ''
          Commands (argument lists, the program first, run without a shell) that must
          all exit 0 after a switch or a secrets-only update; each is stopped at the
          run's deadline. A failure rolls the generation back, reports the command and
          its first output line, and the generation is not tried again.
        '';
      };
      settle = mkOption {
        type = types.str;
        default = "10s";
        description = "How long to wait after the switch before the first check (a systemd time span, 1s to 1d).";
      };
      timeout = mkOption {
        type = types.str;
        default = "5min";
        description = "How long the checks may keep failing before the generation is rolled back (1s to 1d).";
      };
    };

    switch = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        Closure mode: what activates the fetched system (split into words as a shell
        would, quotes honoured; run without a shell); bento appends the system's path.
        null: `<system>/bin/switch-to-configuration switch`. Not written in source mode.
      '';
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

    activate = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        Activates secrets alone, when only secrets changed (split into words as a shell
        would, quotes honoured; run without a shell). null: where services install the
        secrets (useSystemdActivation, userborn, systemd-sysusers), `systemctl restart
        bento-secrets-for-users.service bento-secrets.service`; otherwise bento's own
        `activate` with this module's bundle, root and identity, the users phase first,
        then the other secrets.
      '';
    };

    keepBundles = mkOption {
      type = types.ints.unsigned;
      default = 3;
      description = "How many installed bundles to keep under <stateDir>/bundles.";
    };

    runTimeout = mkOption {
      type = types.ints.positive;
      default = 3600;
      description = "Seconds a whole run may take, the rebuild included; past it, it is stopped.";
    };

    ssh = mkOption {
      type = types.str;
      default = "ssh";
      description = "The ssh client the agent reaches the server with.";
    };

    sshPort = mkOption {
      type = types.port;
      default =
        let ports = config.services.openssh.ports or [ ];
        in if ports == [ ] then 22 else lib.head ports;
      defaultText = lib.literalExpression "lib.head config.services.openssh.ports";
      description = "The port this host's sshd listens on, reported to the server for `bento ssh`.";
    };

    currentSystem = mkOption {
      type = types.str;
      default = "/run/current-system";
      description = "The symlink naming the running system, reported before and after a run.";
    };

    bootedSystem = mkOption {
      type = types.str;
      default = "/run/booted-system";
      description = "The symlink naming the booted system, to see whether a switch changed the kernel.";
    };

    rebootCommand = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The command for `reboot`; null: `systemctl kexec` or `systemctl reboot`.";
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

    cache = {
      url = mkOption {
        type = types.nullOr (types.strMatching "(https?|file)://.+");
        default = null;
        example = "http://bento.example.org:8080";
        description = ''
          The Bento server's binary cache (`[cache]` of bento.toml, served by the server
          module's `cache.enable`): added to `nix.settings.substituters`, beside the
          others, so this host substitutes its system from it instead of building it.
        '';
      };
      publicKey = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
        description = ''
          The cache's public key (the `.pub` made with its signing key by
          `nix-store --generate-binary-cache-key`), added to
          `nix.settings.trusted-public-keys`. Required with `url`, and with
          `mode = "closure"`, where the agent imports only the store paths signed by it.
        '';
      };
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
    # Root's alone: installed bundles name the secrets, the outbox holds reports, and the
    # run lock must not be reachable by another user (the agent tightens it too).
    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0700 root root -" ];
    environment.systemPackages = [ cfg.package ];

    nix.settings = mkIf (cfg.cache.url != null) {
      substituters = [ cfg.cache.url ];
      trusted-public-keys = [ cfg.cache.publicKey ];
    };

    warnings = lib.optional (!closure && cfg.switch != null)
      "services.bento.switch is set but services.bento.mode is \"source\": it applies in closure mode only and is not written to agent.toml";

    assertions = [
      {
        assertion = !config.systemd.sysusers.enable || secretPasswords == [ ];
        message = "services.bento: with systemd.sysusers.enable, users.users."
          + lib.concatStringsSep ", users.users." secretPasswords
          + ".hashedPasswordFile is a Bento secret under ${cfg.secretsRoot}: systemd-sysusers "
          + "reads it only when it creates the user (a rotated password never applies) and fails "
          + "the boot while the file is absent; use services.userborn.enable = true instead of "
          + "systemd.sysusers.enable (userborn applies each change)";
      }
      {
        assertion = cfg.cache.url == null || cacheKeyOk cfg.cache.publicKey;
        message = "services.bento.cache.publicKey must be the cache's public key (NAME:BASE64, the "
          + ".pub made with cache.signing_key by nix-store --generate-binary-cache-key) when "
          + "cache.url is set: without it Nix would not trust what the cache serves";
      }
      {
        assertion = lib.hasPrefix "s3://" cfg.server -> cfg.s3CredentialsFile != null;
        message = "services.bento.server is an s3:// URL: set services.bento.s3CredentialsFile to the path of the host's store key file";
      }
      {
        assertion = cfg.s3CredentialsFile == null || !(lib.hasPrefix builtins.storeDir cfg.s3CredentialsFile);
        message = "services.bento.s3CredentialsFile is in the Nix store, readable by every user: give the path of a root-only file instead";
      }
      {
        assertion = cfg.requiredSignatures <= builtins.length cfg.trustedKeys;
        message = "services.bento.requiredSignatures = ${toString cfg.requiredSignatures} is more than the "
          + "${toString (builtins.length cfg.trustedKeys)} services.bento.trustedKeys: no bundle could ever be applied";
      }
      {
        assertion = !closure || cacheKeyOk cfg.cache.publicKey;
        message = "services.bento.cache.publicKey must be set to the fleet's cache public key (NAME:BASE64, "
          + "the .pub made with cache.signing_key by nix-store --generate-binary-cache-key) when "
          + "services.bento.mode is \"closure\": the agent imports only store paths signed by it";
      }
      {
        assertion = cfg.package != null;
        message = "services.bento.package is not set (this module is not inside a bento checkout): "
          + "use the bento flake's nixosModules.default, or set it to "
          + "pkgs.callPackage <bento>/nix/package.nix { src = <a pinned bento source>; }";
      }
      {
        assertion = !(lib.hasPrefix "sftp://" cfg.server) || !(blank cfg.serverKnownHosts);
        message = "services.bento.serverKnownHosts is empty, but server ${cfg.server} is reached over "
          + "sftp and its host key is pinned: set it to the server's known_hosts line(s) "
          + "(keys/server_known_hosts of the fleet)";
      }
    ];

    system.activationScripts = mkIf (!cfg.useSystemdActivation) (mkMerge [
      # Users from the `users` activation script: secrets for users (password hashes)
      # before it, the rest after users and groups exist.
      (mkIf (!usersFromServices) {
        bentoSecretsForUsers = {
          text = activate "users" "secrets for users";
          deps = [ "specialfs" ];
        };
        users.deps = [ "bentoSecretsForUsers" ];
        bentoSecrets = {
          text = activate "secrets" "secrets";
          deps = [ "specialfs" "users" "groups" ];
        };
      })
      # Users from systemd-sysusers or userborn: at boot (NIXOS_ACTION unset) the services
      # below do it; during a switch, both phases here too, and the services again, after
      # userborn/sysusers, when users or the command changed.
      (mkIf usersFromServices {
        bentoSecrets = {
          text = ''
            if [ -n "''${NIXOS_ACTION-}" ]; then
              ${activate "users" "secrets for users"}
              ${activate "secrets" "secrets"}
            fi
          '';
          deps = [ "specialfs" ];
        };
      })
    ]);

    systemd.services = mkMerge [
      # The systemd-only way, and users from systemd-sysusers or userborn (at boot,
      # activation runs before those): the users phase before users are made, the rest
      # after them and after local file systems (`path` links may point into them).
      (mkIf servicesInstall {
        bento-secrets-for-users = phaseService "users" "Bento: secrets needed before users exist" {
          before = [ "systemd-sysusers.service" "userborn.service" "sysinit.target"
            "sysinit-reactivation.target" "bento-secrets.service" ];
          # userborn applies a changed password hash only when it runs: run it again
          # (queued, after this unit; a no-op at boot, where it has not run yet).
          serviceConfig.ExecStartPost = mkIf config.services.userborn.enable
            [ "${systemctl} --no-block try-restart userborn.service" ];
        };
        bento-secrets = phaseService "secrets" "Bento: secrets" {
          after = [ "local-fs.target" "systemd-sysusers.service" "userborn.service" "bento-secrets-for-users.service" ];
          before = [ "sysinit.target" "sysinit-reactivation.target" ];
        };
      })
      {
        bento-agent = serviceEnvironment // {
          description = "Bento: pull this host's configuration and secrets";
          after = [ "network-online.target" ];
          wants = [ "network-online.target" ];
          restartIfChanged = false; # it may be the one running nixos-rebuild
          unitConfig.X-StopOnRemoval = false;
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${bento} agent --once --config /etc/bento/agent.toml";
            MemoryMax = lib.mkDefault "4G"; # the agent and the rebuild it runs; override if larger
          };
        };
      }
      (mkIf cfg.trigger {
        "bento-trigger@" = serviceEnvironment // {
          description = "Bento: update now, streaming the output";
          restartIfChanged = false;
          serviceConfig = {
            ExecStart = "${bento} trigger --inetd --config /etc/bento/agent.toml";
            StandardInput = "socket";
            StandardOutput = "socket";
            StandardError = "journal";
          };
        };
      })
    ];
    systemd.timers.bento-agent = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "2min";
        OnUnitActiveSec = cfg.interval;
        # Drawn anew per host and per run: a fleet booted or switched together does not
        # hit the server in the same second (sshd's MaxStartups drops the excess, and
        # the agents then retry with backoff).
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
  };
}
