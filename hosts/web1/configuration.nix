# web1: a plain NixOS configuration. Bento publishes this directory (symlinks resolved);
# the host builds it with `nixos-rebuild switch -I nixos-config=…/configuration.nix`.
{ config, pkgs, ... }:
{
  imports = [ ./hardware-configuration.nix ./bento-client.nix ];
  networking.hostName = "web1";

  services.nginx = {
    enable = true;
    virtualHosts."web1.example.org" = {
      forceSSL = true;
      sslCertificate = ./web1.crt;
      # Decrypted by `bento activate` into RAM; never in the Nix store.
      sslCertificateKey = "/run/bento/secrets/nginx-tls-key";
    };
  };
  system.stateVersion = "24.11";
}
