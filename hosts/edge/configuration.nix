{ ... }:
{
  imports = [ ./bento-client.nix ];
  networking.hostName = "edge";
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  boot.loader.generic-extlinux-compatible.enable = true;
  services.wireguard.enable = false;
  system.stateVersion = "24.11";
}
