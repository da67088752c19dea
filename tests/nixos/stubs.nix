# NixOS as the bento modules meet it: nixpkgs' own activation-script.nix, userborn.nix
# and sysusers.nix (real code, from shared/nixpkgs-nixos beside the repository), and
# stand-ins, with NixOS's option names and types, for the options they and the bento
# modules read or set and that come from modules not brought here (systemd units,
# users.users, environment.etc, …). The `users` and `groups` activation scripts are
# defined as users-groups.nix defines them: with systemd-sysusers or userborn, `users` is
# the empty string (which both modules assert).
{ lib, pkgs, nixosModules }:

let
  inherit (lib) mkOption types;
  loose = mkOption { type = types.attrsOf types.anything; default = { }; };
  # NixOS's systemd unit option type (systemd-lib.nix `unitOption`): lists concatenate,
  # anything else must be defined once (or equally).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in if lib.any (def: lib.isList def.value) defs'
        then lib.concatMap (def: lib.toList def.value) defs'
        else lib.mergeEqualOption loc defs';
  };
  list = mkOption { type = types.listOf unitOption; default = [ ]; };
  # A systemd service as NixOS declares it (the options the modules here use).
  service = { name, ... }: {
    freeformType = types.attrsOf types.anything;
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.str; default = ""; };
      wantedBy = list; requiredBy = list; upheldBy = list;
      wants = list; requires = list; bindsTo = list; partOf = list; conflicts = list;
      before = list; after = list; aliases = list;
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      reloadTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };
  user = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; };
      enable = mkOption { type = types.bool; default = true; };
      uid = mkOption { type = types.nullOr types.int; default = null; };
      group = mkOption { type = types.str; default = ""; };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
      description = mkOption { type = types.str; default = ""; };
      home = mkOption { type = types.path; default = "/var/empty"; };
      homeMode = mkOption { type = types.strMatching "[0-7]{1,5}"; default = "700"; };
      createHome = mkOption { type = types.bool; default = false; };
      shell = mkOption { type = types.nullOr (types.either types.shellPackage types.path); default = pkgs.shadow; };
      isSystemUser = mkOption { type = types.bool; default = false; };
      isNormalUser = mkOption { type = types.bool; default = false; };
      password = mkOption { type = types.nullOr types.str; default = null; };
      hashedPassword = mkOption { type = types.nullOr types.str; default = null; };
      hashedPasswordFile = mkOption { type = types.nullOr types.str; default = null; };
      initialPassword = mkOption { type = types.nullOr types.str; default = null; };
      initialHashedPassword = mkOption { type = types.nullOr types.str; default = null; };
      openssh.authorizedKeys.keys = mkOption { type = types.listOf types.singleLineStr; default = [ ]; };
    };
  };
  group = { name, ... }: {
    options = {
      name = mkOption { type = types.str; default = name; };
      gid = mkOption { type = types.nullOr types.int; default = null; };
      members = mkOption { type = types.listOf types.str; default = [ ]; };
    };
  };
in
{
  imports = [
    (nixosModules + "/system/activation/activation-script.nix")
    (nixosModules + "/services/system/userborn.nix")
    (nixosModules + "/system/boot/systemd/sysusers.nix")
    ({ config, ... }: {
      options = {
        assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
        meta = mkOption { type = types.attrsOf (types.listOf types.anything); default = { }; };
        warnings = mkOption { type = types.listOf types.str; default = [ ]; };
        # As system/activation/top-level.nix declares it: a freeform set others add to.
        system.build = mkOption {
          type = types.submoduleWith { modules = [{ freeformType = types.lazyAttrsOf (types.uniq types.unspecified); }]; };
          default = { };
        };
        system.stateVersion = mkOption { type = types.str; default = "24.11"; };
        system.activatable = mkOption { type = types.bool; default = true; };
        system.switch.enable = mkOption { type = types.bool; default = true; };
        system.etc.overlay.enable = mkOption { type = types.bool; default = false; };
        system.etc.overlay.mutable = mkOption { type = types.bool; default = true; };
        systemd.package = mkOption { type = types.package; default = pkgs.systemd; };
        systemd.services = mkOption { type = types.attrsOf (types.submodule service); default = { }; };
        systemd.user.services = loose;
        systemd.timers = loose;
        systemd.sockets = loose;
        systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
        systemd.tmpfiles.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
        systemd.additionalUpstreamSystemUnits = mkOption { type = types.listOf types.str; default = [ ]; };
        services.openssh = {
          enable = mkOption { type = types.bool; default = false; };
          ports = mkOption { type = types.listOf types.port; default = [ 22 ]; };
          hostKeys = mkOption {
            type = types.listOf types.attrs;
            default = [
              { type = "rsa"; bits = 4096; path = "/etc/ssh/ssh_host_rsa_key"; }
              { type = "ed25519"; path = "/etc/ssh/ssh_host_ed25519_key"; }
            ];
          };
          settings = mkOption { type = types.submodule { freeformType = types.attrsOf types.anything; }; default = { }; };
          extraConfig = mkOption { type = types.lines; default = ""; };
        };
        services.nginx = loose;
        services.postgresql = loose;
        services.wireguard = loose;
        environment.etc = loose;
        environment.systemPackages = mkOption { type = types.listOf types.anything; default = [ ]; };
        users.mutableUsers = mkOption { type = types.bool; default = true; };
        users.users = mkOption { type = types.attrsOf (types.submodule user); default = { }; };
        users.groups = mkOption { type = types.attrsOf (types.submodule group); default = { }; };
        networking.hostName = mkOption { type = types.str; default = "nixos"; };
        networking.proxy.envVars = mkOption { type = types.attrsOf types.str; default = { }; };
        nix.enable = mkOption { type = types.bool; default = true; };
        nix.package = mkOption { type = types.anything; default = pkgs.nix; };
        nix.settings = loose;
        nix.nixPath = mkOption {
          type = types.listOf types.str;
          default = [ "nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos" "nixos-config=/etc/nixos/configuration.nix" ];
        };
        programs.ssh.package = mkOption { type = types.anything; default = pkgs.openssh; };
        fileSystems = loose;
        boot = loose;
      };

      config = {
        _module.args = {
          inherit pkgs;
          utils.toShellPath = shell: if types.shellPackage.check shell then "/run/current-system/sw${shell.shellPath}" else shell;
        };
        system.build.nixos-rebuild = pkgs.nixos-rebuild;
        system.build.earlyMountScript = pkgs.writeText "mounts.sh" "# mounts /proc, /run…";
        # As users-groups.nix.
        system.activationScripts = {
          users = if !config.systemd.sysusers.enable && !config.services.userborn.enable then {
            supportsDryActivation = true;
            text = "# creates users";
          } else "";
          groups = lib.stringAfter [ "users" ] "";
        };
        users.users.root = { uid = 0; group = "root"; home = "/root"; };
        users.groups.root.gid = 0;
      };
    })
  ];
}
