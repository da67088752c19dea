# The bento package. `pkgs.callPackage ./package.nix { }` builds the checkout this file is
# in (the flake does that); elsewhere, e.g. this directory carried in a host's bundle,
# pass a pinned source and its vendored-crates hash:
#   pkgs.callPackage ./package.nix { src = pkgs.fetchgit { … }; cargoHash = "sha256-…"; }
{ lib, rustPlatform, src ? null, cargoHash ? null }:

let
  fromCheckout = src == null;
  checkout = lib.cleanSourceWith {
    src = ../.;
    # Build outputs and local state are not source.
    filter = path: _type: !(lib.elem (baseNameOf path) [ "target" "result" ".git" ]);
  };
in
assert lib.assertMsg (fromCheckout || cargoHash != null)
  "bento's nix/package.nix: with `src`, pass `cargoHash` too (lib.fakeHash first: the build prints the right one)";
rustPlatform.buildRustPackage ({
  pname = "bento";
  version = "0.1.0";
  src = if fromCheckout then checkout else src;
  doCheck = false; # the end-to-end tests need root, sshd and mounts
  meta = {
    description = "Pull-based deployment for fleets of NixOS machines, with age-encrypted secrets";
    mainProgram = "bento";
    platforms = lib.platforms.linux;
  };
} // (if fromCheckout then { cargoLock.lockFile = ../Cargo.lock; } else { inherit cargoHash; }))
