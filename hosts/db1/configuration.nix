# db1: a plain NixOS configuration.
{ config, pkgs, ... }:
{
  imports = [ ./bento-client.nix ];
  networking.hostName = "db1";
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  boot.loader.grub.device = "/dev/vda";

  services.postgresql.enable = true;
  # The password file lives in RAM, owned by the service user (see secrets/secrets.toml).
  systemd.services.app-migrate.serviceConfig.LoadCredential = "db:/run/bento/secrets/db-password";
  system.stateVersion = "24.11";
}
