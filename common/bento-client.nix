# Shared by the example hosts (each links it into its own directory, so that it travels
# in the host's bundle): the Bento agent, pointed at the example server.
{ config, ... }:
{
  services.bento = {
    enable = true;
    server = "sftp://${config.networking.hostName}@bento.example.org:22";
    serverKnownHosts = "bento.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN (example server key)";
    trustedKeys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ/UUji4zvncN+E4Y2WgsnyA3nRR05ETkdiQJTYA+/c alice (bento example fleet, TEST ONLY)" ];
  };
}
