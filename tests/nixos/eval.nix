# Evaluates the bento NixOS modules with nixpkgs' own module system (lib.evalModules from
# nixpkgs `lib`) beside nixpkgs' own activation, userborn and systemd-sysusers modules
# and the option stand-ins of stubs.nix, as NixOS would: the assertions are checked
# first (failing as NixOS fails, "Failed assertions: - …"), then NixOS's activation
# script is put together from the scripts and their deps.
#
#   nix-instantiate --eval --strict --json tests/nixos/eval.nix \
#     --arg nixpkgsLib ../shared/nixpkgs-lib/lib \
#     --arg nixosModules ../shared/nixpkgs-nixos/nixos/modules --argstr case default
#
# tests/e2e/nixos.rs runs every case and checks what it prints (or how it fails).
{ nixpkgsLib, nixosModules, case, hostConfig ? null }:

let
  # lib.maintainers reads nixpkgs' maintainers/ (not beside lib/ here): only the names the
  # modules here list.
  lib = (import nixpkgsLib).extend (_: _: { maintainers.nikstur = { name = "nikstur"; }; });
  pkgs = import ./pkgs.nix { inherit lib; };
  stubs = import ./stubs.nix { inherit lib pkgs nixosModules; };
  root = ../..;

  # The flake, its inputs stood in for.
  flake = import (root + "/flake.nix");
  flakeOutputs = flake.outputs {
    self = flakeOutputs // { outPath = root; };
    nixpkgs = {
      inherit lib;
      legacyPackages = { x86_64-linux = pkgs; aarch64-linux = pkgs; };
    };
  };

  key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ/UUji4zvncN+E4Y2WgsnyA3nRR05ETkdiQJTYA+/c alice";
  client = extra: [
    (root + "/nix/client.nix")
    ({ lib, ... }: lib.recursiveUpdate {
      networking.hostName = "web1";
      services.bento = {
        enable = true;
        server = "sftp://web1@bento.example.org:22";
        serverKnownHosts = "bento.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN";
        trustedKeys = [ key ];
      };
    } extra)
  ];
  server = extra: [
    (root + "/nix/server.nix")
    { services.bento-server = { enable = true; hosts.web1 = key; hosts.db1 = key; } // extra; }
  ];
  passwordUser = {
    users.users.app = { isSystemUser = true; group = "app"; hashedPasswordFile = "/run/bento/secrets-for-users/app-password"; };
    users.groups.app = { };
  };

  cases = {
    default = client { };
    userborn = client { services.userborn.enable = true; };
    sysusers = client { systemd.sysusers.enable = true; };
    # The systemd-only way with scripted users; the scripted way with users from services.
    default-systemd = client { services.bento.useSystemdActivation = true; };
    userborn-scripted = client { services.userborn.enable = true; services.bento.useSystemdActivation = false; };
    sysusers-scripted = client { systemd.sysusers.enable = true; services.bento.useSystemdActivation = false; };
    # A host key elsewhere (an immutable /etc, a persisted dir): the identity follows it.
    host-keys = client {
      services.openssh.hostKeys = [
        { type = "rsa"; bits = 4096; path = "/persist/ssh/ssh_host_rsa_key"; }
        { type = "ed25519"; path = "/persist/ssh/ssh_host_ed25519_key"; }
      ];
    };
    # A password hash from Bento: userborn applies it; systemd-sysusers is refused.
    userborn-password = client (passwordUser // { services.userborn.enable = true; });
    sysusers-password = client (passwordUser // { systemd.sysusers.enable = true; });
    settings = client {
      services.bento = {
        activate = "/bin/true";
        keepBundles = 5;
        runTimeout = 600;
        ssh = "/usr/bin/ssh";
        rebootCommand = "systemctl kexec";
        reboot = "kexec";
        triggerGroup = "wheel";
        health = {
          failedUnits = true;
          commands = [ [ "/run/current-system/sw/bin/curl" "-fsS" "http://127.0.0.1:8080/health" ] ];
          settle = "20s";
          timeout = "2min";
        };
      };
      networking.proxy.envVars = { https_proxy = "http://proxy:3128"; };
    };
    server = server { };
    server-prefix = server { userPrefix = "bento-"; };
    server-publish = server { publishKeys = [ key ]; };
    server-publish-clash = server { publishKeys = [ key ]; hosts.bento-publish = key; };
    # 401 hosts: MaxStartups grows with the fleet.
    # Another module's and the host's own global sshd lines, before and after (mkAfter).
    server-extra = server { } ++ [
      { services.openssh.extraConfig = "ClientAliveInterval 60\n"; }
      ({ lib, ... }: { services.openssh.extraConfig = lib.mkAfter "UseDNS yes\n"; })
    ];
    server-many = server { hosts = lib.genAttrs (map (i: "h${toString i}") (lib.range 1 401)) (_: key); };
    flake-client = [ flakeOutputs.nixosModules.default ] ++ builtins.tail (client { });
    flake-server = [ flakeOutputs.nixosModules.server { services.bento-server = { enable = true; hosts.web1 = key; }; } ];
    host-web1 = [ (root + "/hosts/web1/configuration.nix") ];
    host-db1 = [ (root + "/hosts/db1/configuration.nix") ];
    host-edge = [ (root + "/hosts/edge/configuration.nix") ];
    # A host's configuration as its bundle carries it (--arg hostConfig PATH).
    bundle = [ hostConfig ];
    # Refused at evaluation.
    no-trusted-keys = client { services.bento.trustedKeys = lib.mkForce [ ]; };
    trusted-keys-unset = [ (root + "/nix/client.nix") {
      services.bento = { enable = true; server = "file:///srv/bento"; };
    } ];
    sftp-without-known-hosts = client { services.bento.serverKnownHosts = lib.mkForce ""; };
    no-package = client { services.bento.package = lib.mkForce null; };
    server-bad-host = server { hosts."../etc" = key; };
    # A root that would inject sshd_config lines, a tmpfiles specifier, a shell word.
    server-root-newline = server { root = "/srv/bento\nMatch all\n  PermitRootLogin yes"; };
    server-root-percent = server { root = "/srv/%u"; };
    server-root-space = server { root = "/srv/bento x"; };
    server-root-dotdot = server { root = "/srv/../etc"; };
    server-root-relative = server { root = "srv"; };
    # The binary cache: served by the server, trusted by a client.
    server-cache = server { cache.enable = true; };
    server-publish-cache = server { cache.enable = true; publishKeys = [ key ]; };
    server-cache-host-named-cache = server { cache.enable = true; hosts.cache = key; };
    client-cache = client {
      services.bento.cache = {
        url = "http://bento.example.org:8080";
        publicKey = "bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
      };
    };
    client-cache-without-key = client { services.bento.cache.url = "http://bento.example.org:8080"; };
    # Closure mode: the system the admin built, fetched from the host's own cache.
    closure = client {
      services.bento = {
        mode = "closure";
        cache.publicKey = "bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
      };
    };
    closure-switch = client {
      services.bento = {
        mode = "closure";
        cache.publicKey = "bento-1:wS2SGiAuzmxcbLjWVK8BkBc4rcd+IQKjmFk83l2yVxU=";
        switch = "/etc/bento/switch --quiet";
      };
    };
    closure-without-key = client { services.bento.mode = "closure"; };
    health-empty-command = client { services.bento.health.commands = [ [ ] ]; };
    too-many-signatures = client { services.bento.requiredSignatures = 2; };
    # Object storage: the store key's file named by path, never a store value.
    s3 = client {
      services.bento = {
        server = lib.mkForce "s3://bento-{host}?endpoint=https://s3.example.org&region=eu-west-1";
        serverKnownHosts = lib.mkForce "";
        s3CredentialsFile = "/etc/bento/s3-credentials";
      };
    };
    s3-without-credentials = client {
      services.bento = {
        server = lib.mkForce "s3://bento-{host}?endpoint=https://s3.example.org&region=eu-west-1";
        serverKnownHosts = lib.mkForce "";
      };
    };
    s3-credentials-in-store = client {
      services.bento = {
        server = lib.mkForce "s3://bento-{host}?endpoint=https://s3.example.org&region=eu-west-1";
        serverKnownHosts = lib.mkForce "";
        s3CredentialsFile = "/nix/store/00000000000000000000000000000000-s3-credentials";
      };
    };
    closure-bad-key = client { services.bento = { mode = "closure"; cache.publicKey = "bento-1"; }; };
    # A switch for closure mode on a source host: not written, and said so.
    source-switch = client { services.bento.switch = "/etc/bento/switch"; };
  };

  config = (lib.evalModules { modules = [ stubs ] ++ cases.${case}; }).config;

  failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  checked =
    if failed != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failed}"
    else config;

  bentoUnits = lib.filterAttrs (n: _: lib.hasPrefix "bento" n);
  c = checked;
in
{
  activationScripts = lib.mapAttrs (_: v: if builtins.isString v then v else { inherit (v) deps text; })
    (removeAttrs c.system.activationScripts [ "script" ]);
  # NixOS's own, as activation-script.nix puts it together.
  activationScript = c.system.activationScripts.script;
  warnings = c.warnings;
  # Every unit's systemd credentials (a Bento secret handed to a service).
  credentials = lib.mapAttrs (_: u: u.serviceConfig.LoadCredential)
    (lib.filterAttrs (_: u: (u.serviceConfig.LoadCredential or [ ]) != [ ]) c.systemd.services);
  services = bentoUnits c.systemd.services;
  # The units that make users, as userborn.nix and sysusers.nix define them.
  usersServices = lib.filterAttrs (n: _: n == "userborn" || n == "systemd-sysusers") c.systemd.services;
  timers = bentoUnits c.systemd.timers;
  sockets = bentoUnits c.systemd.sockets;
} // lib.optionalAttrs (c ? services.bento && c.services.bento.enable) {
  package = c.services.bento.package.name;
  packageSource = c.services.bento.package.passthru.src.url or "checkout";
  agentToml = c.environment.etc."bento/agent.toml".source.value;
  knownHosts = c.environment.etc."bento/known_hosts".text;
  nixSettings = c.nix.settings;
  stateTmpfiles = builtins.filter (r: lib.hasInfix "/var/bento" r) c.systemd.tmpfiles.rules;
} // lib.optionalAttrs (c ? services.bento-server && c.services.bento-server.enable) {
  users = lib.mapAttrs (_: u: { inherit (u) group home; keys = u.openssh.authorizedKeys.keys; }) c.users.users;
  sshd = c.services.openssh.extraConfig;
  # As NixOS's sshd_config: the settings, then extraConfig.
  sshdConfig = "MaxStartups ${c.services.openssh.settings.MaxStartups}\n" + c.services.openssh.extraConfig;
  maxStartups = c.services.openssh.settings.MaxStartups;
  tmpfiles = c.systemd.tmpfiles.rules;
  nginx = c.services.nginx;
}
