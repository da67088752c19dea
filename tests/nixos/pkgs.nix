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
    # As nixpkgs 26.x: the old name is gone.
    system = throw "'system' has been renamed to/replaced by 'stdenv.hostPlatform.system'";
    stdenv = { hostPlatform.system = "x86_64-linux"; cc.libc = withOut "glibc-2.40"; };
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
    systemd = withOut "systemd-258";
    postgresql = withOut "postgresql-16";
    shadow = withOut "shadow-4.16" // { shellPath = "/bin/nologin"; };
    util-linux = withOut "util-linux-2.41";
    getent = withOut "getent";
    gnugrep = withOut "gnugrep-3.11";
    findutils = withOut "findutils-4.10";
    userborn = withOut "userborn-0.4" // { meta.mainProgram = "userborn"; };
    writeText = name: text: drv name // { inherit text; };
    writeTextDir = path: text: drv (baseNameOf path) // { inherit text; };
    writeShellScript = name: text: drv name // { inherit text; };
    runCommand = name: env: script: drv name;
  };
in
self
