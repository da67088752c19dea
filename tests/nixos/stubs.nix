# Stand-ins for the NixOS options the bento modules (and the example hosts) set, loosely
# typed, except system.activationScripts, typed as NixOS types it, and the `users` and
# `groups` activation scripts, defined as NixOS defines them: with systemd-sysusers or
# userborn, `users` is the empty string (and userborn asserts that it stays so).
{ lib, pkgs }:
{ config, ... }:

let
  inherit (lib) mkOption types;
  loose = mkOption { type = types.attrsOf types.anything; default = { }; };
  scriptOptions = {
    deps = mkOption { type = types.listOf types.str; default = [ ]; };
    text = mkOption { type = types.lines; };
    supportsDryActivation = mkOption { type = types.bool; default = false; };
  };
  usersFromServices = config.systemd.sysusers.enable || config.services.userborn.enable;
in
{
  options = {
    assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; };
    system.activationScripts = mkOption {
      type = types.attrsOf (types.either types.str (types.submodule { options = scriptOptions; }));
      default = { };
    };
    system.build = loose;
    system.stateVersion = mkOption { type = types.str; default = "24.11"; };
    systemd.services = loose;
    systemd.timers = loose;
    systemd.sockets = loose;
    systemd.tmpfiles = loose;
    systemd.sysusers.enable = mkOption { type = types.bool; default = false; };
    services.userborn.enable = mkOption { type = types.bool; default = false; };
    services.openssh = loose;
    services.nginx = loose;
    services.postgresql = loose;
    services.wireguard = loose;
    environment.etc = loose;
    environment.systemPackages = mkOption { type = types.listOf types.anything; default = [ ]; };
    users.users = loose;
    users.groups = loose;
    networking.hostName = mkOption { type = types.str; default = "nixos"; };
    networking.proxy.envVars = mkOption { type = types.attrsOf types.str; default = { }; };
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
    _module.args.pkgs = pkgs;
    system.build.nixos-rebuild = pkgs.nixos-rebuild;
    system.activationScripts = {
      specialfs = "# mounts /proc, /run…";
      users = if usersFromServices then "" else {
        supportsDryActivation = true;
        text = "# creates users";
      };
      groups = "# groups";
    };
    assertions = [{
      assertion = !config.services.userborn.enable || config.system.activationScripts.users == "";
      message = "system.activationScripts.users has to be empty to use userborn";
    }];
  };
}
