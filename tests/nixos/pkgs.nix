# A stand-in for nixpkgs' package set: only what the bento modules and package use, each
# package a fake derivation (nothing is built or fetched).
{ lib }:

let
  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  withOut = name: drv name // { out = drv name; bin = drv "${name}-bin"; };
  self = {
    system = "x86_64-linux";
    inherit lib;
    callPackage = fn: args:
      let f = if builtins.isFunction fn then fn else import fn;
      in f (builtins.intersectAttrs (builtins.functionArgs f) self // args);
    rustPlatform.buildRustPackage = a: drv "${a.pname}-${a.version}" // {
      passthru = { inherit (a) src; cargoHash = a.cargoHash or null; cargoLock = a.cargoLock or null; };
      meta = a.meta;
    };
    fetchgit = a: drv "source" // { inherit (a) url rev; };
    formats.toml = { }: {
      # The value itself, to be read by the checks.
      generate = name: value: drv name // { inherit value; };
    };
    nix = withOut "nix-2.24";
    openssh = withOut "openssh-9.9";
    gitMinimal = withOut "git-minimal-2.47";
    coreutils = withOut "coreutils-9.5";
    gnutar = withOut "gnutar-1.35";
    xz = withOut "xz-5.6";
    gzip = withOut "gzip-1.13";
    nixos-rebuild = withOut "nixos-rebuild";
  };
in
self
