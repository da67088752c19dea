# db1: a plain NixOS configuration.
{ config, pkgs, ... }:
{
  imports = [ ./bento-client.nix ];
  networking.hostName = "db1";
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  boot.loader.grub.device = "/dev/vda";

  services.postgresql.enable = true;
  # A Bento secret handed to a service as a systemd credential: systemd copies
  # /run/bento/secrets/db-password (in RAM) into the unit's own credentials directory when
  # it starts, readable by the unit whatever user it runs as.
  systemd.services.app-migrate = {
    after = [ "bento-secrets.service" "postgresql.service" ];
    serviceConfig.LoadCredential = [ "db:/run/bento/secrets/db-password" ];
    path = [ pkgs.postgresql ];
    script = ''
      PGPASSWORD="$(cat "$CREDENTIALS_DIRECTORY/db")" \
        exec psql --host=localhost --username=app --file=/etc/app/migrate.sql app
    '';
  };
  system.stateVersion = "24.11";
}
