{
  description = "Bento: pull-based deployment for fleets of NixOS machines, with age-encrypted secrets";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        bento = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.bento;
      });

      nixosModules = {
        client = { pkgs, ... }: {
          imports = [ ./nix/client.nix ];
          services.bento.package = nixpkgs.lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.bento;
        };
        server = ./nix/server.nix;
        default = self.nixosModules.client;
      };
    };
}
