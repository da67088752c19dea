//! The command line: every command, flag and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Bento: pull-based deployment for fleets of NixOS machines, with age-encrypted secrets.
#[derive(Debug, Parser)]
#[command(name = "bento", version, about, propagate_version = true)]
pub struct Cli {
    /// The fleet repository [default: $BENTO_FLEET, else the nearest directory from here
    /// upwards holding bento.toml or secrets/secrets.toml, as git finds its repository]
    #[arg(long, global = true, value_name = "DIR", env = "BENTO_FLEET", hide_env = true)]
    pub fleet: Option<PathBuf>,

    /// Say more: which attributes of a secrets.nix bento ignores, which secrets it renames
    /// [env: BENTO_VERBOSE=1]
    #[arg(
        short,
        long,
        global = true,
        env = "BENTO_VERBOSE",
        hide_env = true,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Lay out a new fleet repository (bento.toml, hosts/, keys/, secrets/) with comments
    Init,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for bento
    Manpage,
    /// Register, list and remove hosts' public keys (keys/hosts/)
    #[command(subcommand)]
    Host(HostCommand),
    /// Register, list and remove admins: keys/admins/ and `admins` in secrets/secrets.toml
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Create, edit, read, check and re-encrypt secrets
    Secret(SecretArgs),
    /// Decrypt this host's secrets from an installed bundle into a RAM filesystem (run by
    /// the NixOS activation script)
    Activate(ActivateArgs),
    /// Pull this host's bundle: verify, install, rebuild or activate, report (run by a
    /// systemd timer)
    Agent(AgentArgs),
    /// Update this host now through the trigger socket, streaming the run's output (root
    /// and members of trigger_group only); `--listen` / `--inetd` serve that socket
    Trigger(TriggerArgs),
    /// Publish each changed host's signed bundle into the server layout
    ///
    /// Refuses while any secret is stale. Each changed host gets a new generation, written
    /// fully before its `current` pointer is switched; unchanged hosts are not touched.
    Deploy(DeployArgs),
    /// Publish the fleet wave by wave ([rollout] of bento.toml), each wave only once the one
    /// before reports its new generation applied and healthy
    ///
    /// Stops at the first failure or a wave past [rollout] wait (exit 1), naming the hosts
    /// and why; later waves keep their generation. Killed or stopped, it resumes where it
    /// was; `--status` shows where that is.
    Rollout(RolloutArgs),
    /// Review and sign what another admin deployed ([deploy] required_signatures above 1);
    /// once enough admins signed, the generation becomes current
    Approve(ApproveArgs),
    /// Build each host's system with [build] command and record the expected system path
    Build(BuildArgs),
    /// What the central server needs for this fleet
    Server(ServerArgs),
    /// The fleet's state from the hosts' reports: one row per host, problems first
    ///
    /// Exit status 1 when any host failed, rolled back or rejected its current generation.
    Status(StatusArgs),
    /// Closure diff between the system a host runs and the one it should run (nvd, else
    /// `nix store diff-closures`)
    Diff(DiffArgs),
    /// Each host's history: every generation that was current, who signed it and what it
    /// changed, verified link by link
    ///
    /// Exit status 1 when a link is missing or edited, signatures no longer verify, or the
    /// history holds a manifest that current does not descend from (a fork).
    Log(LogArgs),
    /// Run `ssh` to a host with its host key pinned from keys/hosts/HOST.pub (never
    /// trust-on-first-use)
    ///
    /// The address is hosts.HOST.address of bento.toml, else the one the host last
    /// reported in its heartbeat; the port hosts.HOST.ssh_port, else the reported one,
    /// else 22.
    Ssh(SshArgs),
    /// Update the lock file of every flake in the fleet (its own flake.nix and each
    /// hosts/*/flake.nix), or only INPUT; names the hosts whose lock changed
    FlakeUpdate(FlakeUpdateArgs),
}

#[derive(Debug, Args)]
pub struct SshArgs {
    /// The host
    pub host: String,
    /// Print the ssh command instead of running it (it names a known_hosts file written
    /// under .bento/known_hosts/)
    #[arg(long)]
    pub print: bool,
    /// Where the host's reported address is read
    #[command(flatten)]
    pub server: SourceArgs,
    /// The command to run on the host (after `--`); a login shell without one
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FlakeUpdateArgs {
    /// Update only this input (else every input)
    pub input: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the hosts' state is read
    #[command(flatten)]
    pub server: SourceArgs,
    /// Print as JSON
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print in the Prometheus text format (for the node exporter's textfile collector)
    #[arg(long)]
    pub prometheus: bool,
    /// Write the fleet as one self-contained HTML page to FILE (atomically) instead of
    /// printing; with --watch, rewrite it on every change
    #[arg(long, value_name = "FILE", conflicts_with_all = ["json", "prometheus"])]
    pub html: Option<PathBuf>,
    /// Redraw whenever the server root changes, until Ctrl-C
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The host
    pub host: String,
    /// Where the host's state is read
    #[command(flatten)]
    pub server: SourceArgs,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only these hosts [default: every host in hosts/]
    pub hosts: Vec<String>,
    /// Where the history is read
    #[command(flatten)]
    pub server: SourceArgs,
    /// As JSON
    #[arg(long)]
    pub json: bool,
}

/// The server a command reads: `--target`, else `--server-root`, else bento.toml's
/// deploy.target, else its server.root.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Read this local directory instead of deploy.target or server.root of bento.toml
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub server_root: Option<PathBuf>,
    /// Read over sftp from this server root instead of deploy.target of bento.toml
    /// (sftp://bento-publish@server:port/abs/root; the server's key pinned from
    /// keys/server_known_hosts)
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Run once and exit (what the systemd timer does; also the default)
    #[arg(long)]
    pub once: bool,
    /// The agent's configuration
    #[arg(long, value_name = "FILE", default_value = bento_deploy::agent::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Retry a generation that failed before
    #[arg(long)]
    pub force: bool,
    /// Print the run's report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The agent's configuration
    #[arg(long, value_name = "FILE", default_value = bento_deploy::agent::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The trigger's unix socket [default: trigger_socket of agent.toml,
    /// /run/bento/trigger.sock]
    #[arg(long, value_name = "PATH", conflicts_with = "inetd")]
    pub socket: Option<PathBuf>,
    /// Serve: create the socket (mode 0600, or 0660 with trigger_group), plus TCP
    /// 127.0.0.1:51337 when trigger_tcp = true, and start a run for each allowed connection
    #[arg(long, conflicts_with = "inetd")]
    pub listen: bool,
    /// Serve the one connection on stdin/stdout (systemd socket activation, Accept=yes)
    #[arg(long)]
    pub inetd: bool,
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The installed bundle, holding manifest.json and secrets/
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// The host's private key (repeatable)
    /// [default: /etc/ssh/ssh_host_ed25519_key and /etc/ssh/ssh_host_rsa_key]
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Where secrets land: <ROOT>/secrets/<name>
    #[arg(long, value_name = "DIR", default_value = "/run/bento")]
    pub root: PathBuf,
    /// `users`: only secrets marked needed_for_users (before users exist), root-only,
    /// into <ROOT>/secrets-for-users; `secrets`: all the others
    #[arg(long, value_enum, default_value = "secrets")]
    pub phase: PhaseArg,
    /// Print what would change and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// How many previous generations to keep
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub keep: usize,
    /// The RAM filesystem to mount at <ROOT>/secrets.d
    #[arg(long, value_enum, default_value = "ramfs")]
    pub fs: FsArg,
    /// Do not mount a RAM filesystem (unprivileged test or demo runs only)
    #[arg(long)]
    pub no_mount: bool,
    /// The program that restarts and reloads the units of changed secrets and templates
    /// (`PROGRAM try-restart UNIT...`, `PROGRAM try-reload-or-restart UNIT...`; inside a
    /// systemd unit, INVOCATION_ID set, with `--no-block`: the jobs are queued) [default:
    /// /run/current-system/sw/bin/systemctl if it exists, else systemctl from PATH]
    #[arg(long, value_name = "PROGRAM", conflicts_with = "no_restart")]
    pub systemctl: Option<String>,
    /// Run from NixOS activation during a switch: queue the restarts and reloads with
    /// `systemctl --no-block` even outside a unit (nothing is handed to
    /// switch-to-configuration any more)
    #[arg(long, conflicts_with = "no_restart")]
    pub from_activation: bool,
    /// Restart no units (e.g. at boot, where they start after activation); they are
    /// listed as not restarted
    #[arg(long)]
    pub no_restart: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Only these hosts [default: every host in hosts/]
    pub hosts: Vec<String>,
    /// Publish into this local directory instead of server.root (or deploy.target) of bento.toml
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub server_root: Option<PathBuf>,
    /// Publish over sftp to this server root instead of deploy.target of bento.toml
    /// (sftp://user@host:port/abs/root; the server's key pinned from keys/server_known_hosts)
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Print the per-host summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// Only these hosts [default: every host with a pending generation]
    pub hosts: Vec<String>,
    /// Read the server in this local directory instead of server.root (or deploy.target)
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub server_root: Option<PathBuf>,
    /// Read the server over sftp instead of deploy.target of bento.toml
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Sign without asking (after showing what changes)
    #[arg(long)]
    pub yes: bool,
    /// List what is pending and who signed it; sign nothing
    #[arg(long)]
    pub list: bool,
    /// With --list: as JSON
    #[arg(long, requires = "list")]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// Publish into this local directory instead of server.root (or deploy.target) of bento.toml
    #[arg(long, value_name = "DIR", conflicts_with = "target")]
    pub server_root: Option<PathBuf>,
    /// Publish over sftp to this server root instead of deploy.target of bento.toml
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Start over from the first wave (a rollout of content that changed since)
    #[arg(long, conflicts_with = "status")]
    pub restart: bool,
    /// Show where the rollout is, each wave and host, and change nothing
    #[arg(long)]
    pub status: bool,
    /// With --status: as JSON
    #[arg(long, requires = "status")]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PhaseArg {
    Users,
    Secrets,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FsArg {
    /// Never swapped (default)
    Ramfs,
    /// tmpfs with noswap where the kernel supports it
    Tmpfs,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Only these hosts [default: every host in hosts/]
    pub hosts: Vec<String>,
    /// Evaluate and show what would be built (dry-build); records nothing
    #[arg(long)]
    pub dry: bool,
    /// Print the per-host summary as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(subcommand)]
    pub command: ServerCommand,
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Print the NixOS module, or the sshd_config block and commands, that the server needs;
    /// with --s3, what an object store needs instead (deploy.target or --target s3://…)
    Setup {
        /// The store-side setup of an s3:// target: Garage's CLI commands (the default), or
        /// the IAM policies of AWS-style stores (`--s3 aws`)
        #[arg(long, value_name = "STORE", num_args = 0..=1, default_missing_value = "garage")]
        s3: Option<S3Store>,
        /// The s3:// URL, instead of bento.toml's deploy.target
        #[arg(long, value_name = "URL", requires = "s3")]
        target: Option<String>,
    },
}

/// The kind of object store `server setup --s3` prints for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum S3Store {
    /// Garage: per-host buckets and keys (its CLI)
    Garage,
    /// AWS, Ceph RGW, MinIO: IAM policies per prefix (JSON)
    Aws,
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Register a host's SSH host public key as keys/hosts/NAME.pub
    Add {
        /// The host's name (hosts/NAME, keys/hosts/NAME.pub)
        name: String,
        /// The host's public key file (its /etc/ssh/ssh_host_ed25519_key.pub)
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "scan",
            required_unless_present = "scan"
        )]
        key: Option<PathBuf>,
        /// Fetch the ed25519 host key from this address with ssh-keyscan (check its
        /// fingerprint out of band!)
        #[arg(long, value_name = "ADDR")]
        scan: Option<String>,
        /// Replace an existing key (rotation); then `bento secret rekey`
        #[arg(long)]
        replace: bool,
    },
    /// List hosts: key type and fingerprint, groups, configuration
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a host's key (refused while the rules still name it)
    Remove {
        /// The host's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Register an admin: keys/admins/NAME.pub, and NAME in `admins` of secrets/secrets.toml
    /// (so every secret is encrypted to them after `bento secret rekey`)
    Add {
        /// The admin's name
        name: String,
        /// Their recipient line(s): an ssh-ed25519 or ssh-rsa .pub, an age1… recipient
        /// (`age-keygen -y`), or an age plugin recipient; one per line
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// List admins: keys (type and fingerprint) and whether `admins` lists them
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove an admin from `admins` and delete their key file (refused while a secret's
    /// `recipients` names them); then `bento secret rekey`
    Remove {
        /// The admin's name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct SecretArgs {
    /// Rules file to use instead of secrets/secrets.toml: another secrets.toml, or an
    /// agenix secrets.nix (read with nix-instantiate; ciphertexts relative to it)
    #[arg(long, global = true, value_name = "FILE")]
    pub rules: Option<PathBuf>,

    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Edit a secret in $VISUAL/$EDITOR (or set it from stdin when stdin is not a terminal)
    ///
    /// The plaintext is decrypted into a private 0600 file on a RAM filesystem, the editor
    /// runs, and the secret is re-encrypted to exactly the recipients its rule names, only
    /// if the content changed. The file is replaced atomically; on any failure it is left
    /// untouched and no plaintext remains. The fleet lock (.bento/lock) is held throughout,
    /// editor included.
    Edit {
        /// The secret's name, as in secrets/secrets.toml (with --rules secrets.nix, also
        /// its file name: secret1.age)
        name: String,
        #[command(flatten)]
        identities: IdentityArgs,
        /// Allow the temporary plaintext file on a disk-backed directory
        #[arg(long)]
        unsafe_tmp: bool,
        /// Accept an empty stdin as the new (empty) content; without it, empty stdin is
        /// refused and the secret left unchanged
        #[arg(long)]
        allow_empty: bool,
    },
    /// Decrypt a secret to stdout
    Show {
        /// The secret's name, as in secrets/secrets.toml (with --rules secrets.nix, also
        /// its file name: secret1.age)
        name: String,
        #[command(flatten)]
        identities: IdentityArgs,
    },
    /// Check, without any private key, that every secret is encrypted to exactly the
    /// recipients its rule names (exit 1 when not): the CI check
    Verify {
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt the secrets whose recipients differ from their rules (all with --all)
    Rekey {
        /// Only these secrets (with --rules secrets.nix, also by file name) [default: every
        /// stale secret]
        names: Vec<String>,
        /// Re-encrypt even secrets that are not stale
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        identities: IdentityArgs,
    },
    /// Make the secrets that have a `generate` kind (passwords, random bytes, key pairs)
    ///
    /// Without NAMEs: every secret with a `generate` kind and no file yet. An existing
    /// secret is never replaced without --force; without it, only a key pair's missing or
    /// altered secrets/NAME.pub is written again, from the secret (decrypted with -i).
    /// The plaintext stays in memory; the fleet lock (.bento/lock) is held throughout.
    Generate {
        /// Only these secrets [default: every generated secret without a file]
        names: Vec<String>,
        /// Replace secrets that exist (a new password or key: rotate it)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        identities: IdentityArgs,
    },
    /// Show every secret and its recipients, with stale marks
    List {
        /// Print as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write secrets/secrets.toml and keys/ from an agenix secrets.nix (a migration)
    ///
    /// Secret names that are not valid bento names (a leading `-`, a `/`) are changed, the
    /// file keeping its name through `file`; each rename is printed. Ciphertexts already in
    /// secrets/ stay there; others are copied into it.
    ImportAgenix {
        /// The agenix secrets.nix
        secrets_nix: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// Identity to decrypt with: an OpenSSH private key or an age identity file (repeatable)
    /// [default: $BENTO_IDENTITY, else ~/.ssh/id_ed25519 and ~/.ssh/id_rsa]
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
}

impl Cli {
    /// The command line as parsed, with the admin's global options (`--fleet`,
    /// `--verbose`) left out of the host commands' help: `agent`, `activate` and `trigger`
    /// run on a host, where no fleet repository is.
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        for host_side in ["agent", "activate", "trigger"] {
            // A hidden option of the same name in the subcommand takes the global one's place.
            command = command.mut_subcommand(host_side, |sub| {
                sub.arg(clap::Arg::new("fleet").long("fleet").value_name("DIR").hide(true))
                    .arg(
                        clap::Arg::new("verbose")
                            .short('v')
                            .long("verbose")
                            .action(clap::ArgAction::SetTrue)
                            .hide(true),
                    )
            });
        }
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}
