# edge: a flake-style host. With Nix installed, `bento deploy` lists this flake's
# nixosConfigurations (a flake dir may define several hosts); the host builds it with
# `nixos-rebuild switch --flake …/config#edge`.
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
  outputs = { self, nixpkgs }: {
    nixosConfigurations.edge = nixpkgs.lib.nixosSystem {
      system = "aarch64-linux";
      modules = [
        ./configuration.nix
      ];
    };
  };
}
