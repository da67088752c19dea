# Shared by the example hosts (each links it, and the module directory `bento` -> nix/,
# into its own directory, so that both travel in the host's bundle): the Bento agent,
# pointed at the example server.
{ config, lib, pkgs, ... }:
{
  imports = [ ./bento/client.nix ];

  services.bento = {
    enable = true;
    # The bento this fleet runs. The bundle carries the module, not bento's source: pin
    # a release here (the build prints the right hashes in place of lib.fakeHash).
    package = pkgs.callPackage ./bento/package.nix {
      src = pkgs.fetchgit {
        url = "https://git.example.org/bento.git";
        rev = "v0.1.0";
        hash = lib.fakeHash;
      };
      cargoHash = lib.fakeHash;
    };
    server = "sftp://${config.networking.hostName}@bento.example.org:22";
    serverKnownHosts = "bento.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN (example server key)";
    trustedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ/UUji4zvncN+E4Y2WgsnyA3nRR05ETkdiQJTYA+/c alice (bento example fleet, TEST ONLY)" ];
  };
}
