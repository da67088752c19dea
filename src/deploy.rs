//! `bento deploy`, `bento build`, `bento server setup`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use bento_deploy::fleet::build::BuildResult;
use bento_deploy::fleet::hosts;
use bento_deploy::fleet::server;
use bento_deploy::fleet::workspace::Workspace;
use bento_deploy::publish::{self, HostReport, Progress};
use bento_deploy::sign::Signer;
use bento_secrets::Fleet;
use indicatif::ProgressBar;

use crate::cli::{ApproveArgs, BuildArgs, DeployArgs, RolloutArgs, ServerArgs, ServerCommand};
use crate::output::{self, out, outln};

/// The program that lists flakes' configurations.
const NIX: &str = "nix";

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, hosts: usize) {
        self.0.set_length(hosts as u64);
    }
    fn done(&self, _: &HostReport) {
        self.0.inc(1);
    }
}

pub fn deploy(root: &Path, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load(root)?;
    let config = &workspace.config;
    workspace
        .fleet
        .rules
        .warnings
        .iter()
        .for_each(|w| output::warn(w));
    let options = publishing(&workspace, &args.server_root, &args.target, args.hosts)?;
    let shown = options.location.shown();
    let progress = Bar(output::progress("hosts"));
    let reports = publish::deploy(&workspace, &options, &signer(config), &progress);
    progress.0.finish_and_clear();
    let reports = reports?;
    if args.json {
        output::json(&serde_json::json!({ "hosts": reports }))?;
    } else {
        print_deploy_table(&reports)?;
    }
    if options.hosts.is_empty() {
        say_unconfigured(
            &workspace.fleet,
            reports.iter().map(|r| r.host.as_str()),
            "deployed",
        );
    }
    for r in &reports {
        if let Some(why) = r.cache.as_ref().and_then(|c| c.skipped.as_ref()) {
            output::warn(&format!("{}: {why}", r.host));
        }
    }
    if config.cache.signing_key.is_some() {
        let copied: usize = reports
            .iter()
            .filter_map(|r| r.cache.as_ref())
            .map(|c| c.copied)
            .sum();
        // The target's cache: `<root>/cache`, local or over sftp.
        let cache = format!(
            "{}/{}",
            shown.trim_end_matches('/'),
            bento_deploy::publish::cache_dir::CACHE_DIR
        );
        output::note(&format!(
            "binary cache {cache}: {copied} store path{} added",
            output::plural(copied)
        ));
    }
    for r in reports.iter().filter(|r| r.changed && r.build_outdated) {
        output::warn(&format!(
            "{}: its configuration changed since `bento build`, so it was published without an \
             expected system (`bento status` cannot tell whether it runs what you built); run \
             `bento build {}` and deploy again",
            r.host, r.host
        ));
    }
    let published = reports.iter().filter(|r| r.changed).count();
    output::ok(&format!(
        "{} host{}: {published} published, {} unchanged ({})",
        reports.len(),
        output::plural(reports.len()),
        reports.len() - published,
        shown
    ));
    Ok(ExitCode::SUCCESS)
}

/// What publishing needs: where to (`--target`, else, unless `--server-root` names a local
/// root, `[deploy] target`), and for which hosts.
fn publishing(
    workspace: &Workspace,
    server_root: &Option<std::path::PathBuf>,
    target: &Option<String>,
    hosts: Vec<String>,
) -> anyhow::Result<publish::Options> {
    Ok(publish::Options {
        location: workspace.location(server_root.as_deref(), target.as_deref())?,
        ssh: "ssh".into(),
        hosts,
        nix: NIX.into(),
    })
}

/// The admin's signing key, loaded when called.
fn signer(config: &bento_deploy::Config) -> impl Fn() -> Result<Signer, bento_deploy::Error> + Sync + '_ {
    let key = config.signing_key_path();
    move || Signer::load(&key, &config.deploy.signing_key).map_err(bento_deploy::Error::from)
}

pub fn approve(root: &Path, args: ApproveArgs) -> anyhow::Result<ExitCode> {
    use bento_deploy::publish::approve;
    use bento_deploy::publish::target::Target;
    use bento_deploy::sign::AdminKeys;
    let workspace = Workspace::load(root)?;
    let config = &workspace.config;
    let location = workspace.location(args.server_root.as_deref(), args.target.as_deref())?;
    let target = Target::open(&location, root, config, "ssh")?;
    let admins = AdminKeys::new(&workspace.fleet.admins);
    let hosts: Vec<String> = match args.hosts.is_empty() {
        true => workspace.hosts(&[], NIX)?.into_iter().map(|h| h.name).collect(),
        false => args.hosts.clone(),
    };
    let fleet = &workspace.fleet;
    let names = bento_deploy::changes::KeyNames::new(fleet.hosts.iter().chain(&fleet.admins));
    let pending = approve::pending(&target, &hosts, &admins, &names)?;
    if args.list && args.json {
        output::json(&serde_json::json!({ "pending": pending }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if pending.is_empty() {
        output::note("nothing is pending");
        return Ok(ExitCode::SUCCESS);
    }
    if args.list {
        for p in &pending {
            outln!(
                "{}  generation {} (current {})  signed by {}",
                p.host,
                p.generation,
                output::dash(p.current),
                p.signers.join(", ")
            )?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let signer = signer(config)()?;
    admins.check(&signer, &config.deploy.signing_key)?;
    let me = admins.name_of(&signer).unwrap_or_default().to_owned();
    let required = config.deploy.required_signatures;
    let mut refused = false;
    for p in &pending {
        outln!(
            "{}: generation {} (current {}), signed by {}",
            p.host,
            p.generation,
            p.current.map_or("none".into(), |g| g.to_string()),
            p.signers.join(", ")
        )?;
        let c = &p.changes;
        for line in &c.files {
            outln!("  {}", output::escaped(line))?;
        }
        for (what, names) in [
            ("secret added", &c.secrets_added),
            ("secret changed", &c.secrets_changed),
            ("secret removed", &c.secrets_removed),
        ] {
            for name in names {
                outln!("  {what}: {name}")?;
                if let Some(r) = c.recipients.get(name) {
                    let after = output::escaped(&r.after.join(", ")).into_owned();
                    match &r.before {
                        Some(before) if *before == r.after => outln!("    recipients: {after} (unchanged)")?,
                        Some(before) => outln!(
                            "    recipients: {} → {after}",
                            output::escaped(&before.join(", "))
                        )?,
                        None => outln!("    recipients: {after}")?,
                    }
                }
            }
        }
        for line in &c.templates {
            outln!("  template {line}")?;
        }
        if let Some((old, new)) = &c.system {
            outln!(
                "  system: {} → {}",
                output::escaped(old.as_deref().unwrap_or("none")),
                output::escaped(new.as_deref().unwrap_or("none"))
            )?;
        }
        if !args.yes {
            if !std::io::stdin().is_terminal() {
                anyhow::bail!(
                    "approving {}: no terminal to ask on; review it, then run `bento approve {} --yes`",
                    p.host,
                    p.host
                );
            }
            eprint!("approve {} generation {}? [y/N] ", p.host, p.generation);
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                output::note(&format!("{}: not approved", p.host));
                continue;
            }
        }
        match approve::approve(p, &me, &signer, &admins, required) {
            Ok(done) if done.current => output::ok(&format!(
                "{}: generation {} approved by {} and current",
                p.host,
                p.generation,
                done.signers.join(", ")
            )),
            Ok(done) => output::ok(&format!(
                "{}: generation {} signed by {} ({} of {required}); it becomes current at {required}",
                p.host,
                p.generation,
                done.signers.join(", "),
                done.signers.len()
            )),
            Err(e) => {
                output::error(&e.to_string());
                refused = true;
            }
        }
    }
    Ok(output::exit(!refused))
}

pub fn rollout(root: &Path, args: RolloutArgs) -> anyhow::Result<ExitCode> {
    use bento_deploy::publish::rollout::{self, Event};
    if args.status {
        let Some(state) = rollout::load(root)? else {
            output::note("no rollout has started in this fleet");
            return Ok(ExitCode::SUCCESS);
        };
        if args.json {
            output::json(&state)?;
        } else {
            outln!("rollout started {}", state.started)?;
            for (i, wave) in state.waves.iter().enumerate() {
                outln!(
                    "wave {}/{}: {}",
                    i + 1,
                    state.waves.len(),
                    output::json_name(wave.state)
                )?;
                for host in &wave.hosts {
                    let generation = output::dash(wave.generations.get(host));
                    let what = wave.hosts_state.get(host).map_or("-", String::as_str);
                    outln!("  {host}  generation {generation}  {}", output::escaped(what))?;
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let workspace = Workspace::load(root)?;
    let options = publishing(&workspace, &args.server_root, &args.target, Vec::new())?;
    // On a terminal, a live line per wave waited for; the events as plain lines above it.
    let live = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let say = |e: Event<'_>| {
        let line = match e {
            Event::Published { index, of, hosts } => {
                format!("wave {index}/{of}: published {}", hosts.join(", "))
            }
            Event::Host { index, host, what } => format!("wave {index}: {host}: {}", output::escaped(what)),
            Event::Healthy { index, of } => format!("wave {index}/{of}: healthy"),
            Event::Waiting {
                index,
                of,
                pending,
                applied,
                failed,
                left,
            } => {
                live.set_message(format!(
                    "wave {index}/{of}: {pending} pending, {applied} applied, {failed} failed ({left} s of wait left)"
                ));
                return;
            }
        };
        live.suspend(|| {
            let _ = outln!("{line}");
        });
    };
    let signer = signer(&workspace.config);
    let done = rollout::run(&workspace, &options, args.restart, &signer, &say);
    live.finish_and_clear();
    done?;
    output::ok("rollout complete: every wave reported its new generation applied");
    Ok(ExitCode::SUCCESS)
}

/// Names the registered hosts that have no configuration, so were left out.
fn say_unconfigured<'a>(fleet: &'a Fleet, done: impl IntoIterator<Item = &'a str>, what: &str) {
    let left = hosts::unconfigured(fleet, done);
    if !left.is_empty() {
        output::note(&format!(
            "not {what}, no configuration: {} (create hosts/<name>/configuration.nix or a flake.nix)",
            left.join(", ")
        ));
    }
}

fn print_deploy_table(reports: &[HostReport]) -> std::io::Result<()> {
    let width = reports.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
    outln!(
        "{:width$}  {:>10}  {:9}  {:7}  {:>5}  {:>7}",
        "HOST",
        "GENERATION",
        "STATE",
        "MODE",
        "FILES",
        "SECRETS"
    )?;
    for r in reports {
        let state = if r.changed { "published" } else { "unchanged" };
        outln!(
            "{:width$}  {:>10}  {state:9}  {:7}  {:>5}  {:>7}",
            r.host,
            r.generation,
            r.mode.as_str(),
            r.files,
            r.secrets
        )?;
    }
    Ok(())
}

pub fn build(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let workspace = Workspace::load(root)?;
    let hosts = workspace.hosts(&args.hosts, NIX)?;
    if args.hosts.is_empty() {
        say_unconfigured(&workspace.fleet, hosts.iter().map(|h| h.name.as_str()), "built");
    }
    let bar = output::progress("hosts built");
    bar.set_length(hosts.len() as u64);
    let results =
        bento_deploy::fleet::build::build(root, &workspace.config, &hosts, args.dry, &|_: &BuildResult| {
            bar.inc(1)
        });
    bar.finish_and_clear();
    let results = results?;
    if args.json {
        output::json(&serde_json::json!({ "hosts": results }))?;
    } else {
        let width = results.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
        outln!("{:width$}  {:6}  SYSTEM", "HOST", "RESULT")?;
        for r in &results {
            let state = if r.ok { "ok" } else { "FAILED" };
            let detail = output::dash(r.system.as_ref().or(r.error.as_ref()));
            outln!("{:width$}  {state:6}  {detail}", r.host)?;
        }
    }
    let failed: Vec<&BuildResult> = results.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        if !r.tail.is_empty() {
            eprintln!("--- {} (last lines of {}):", r.host, r.log);
            for line in &r.tail {
                // Output of the contributor's Nix: escaped for the terminal.
                eprintln!("    {}", output::escaped(line));
            }
        }
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|r| r.host.as_str()).collect();
        anyhow::bail!(
            "{} of {} hosts failed to build: {}",
            failed.len(),
            results.len(),
            names.join(", ")
        );
    }
    let what = if args.dry {
        "dry-built"
    } else {
        "built; expected systems recorded in .bento/expected.json"
    };
    output::ok(&format!(
        "{} host{} {what}",
        results.len(),
        output::plural(results.len())
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn server(root: &Path, args: ServerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ServerCommand::Setup {
            s3: Some(store),
            target,
        } => {
            let Workspace { config, fleet, .. } = Workspace::load(root)?;
            let Some(text) = target.or(config.deploy.target.clone()) else {
                anyhow::bail!(
                    "server setup --s3: no s3:// URL: set [deploy] target = \"s3://…\" in bento.toml or pass --target"
                );
            };
            let url = bento_deploy::s3::url::S3Url::parse(&text)?;
            let hosts: Vec<String> = fleet.hosts.keys().cloned().collect();
            let printed = match store {
                crate::cli::S3Store::Garage => bento_deploy::s3::setup::garage(&url, &hosts),
                crate::cli::S3Store::Aws => bento_deploy::s3::setup::policies(&url, &hosts),
            };
            out!("{printed}")?;
            Ok(ExitCode::SUCCESS)
        }
        ServerCommand::Setup { s3: None, .. } => {
            let Workspace { config, fleet, .. } = Workspace::load(root)?;
            let hosts = server::hosts(&fleet, &config);
            if fleet.hosts.is_empty() {
                output::note(
                    "no hosts registered yet, so this setup has no host user: add hosts with \
                     `bento host add NAME --key FILE`, then run `bento server setup` again",
                );
            }
            let publish_keys = server::publish_keys(&fleet);
            for h in &hosts {
                if let Some(why) = server::name_clash(&config, &h.name, !publish_keys.is_empty()) {
                    anyhow::bail!("host `{}`: {why}", h.name);
                }
            }
            outln!("### NixOS server: add this module to its configuration")?;
            outln!("{}", server::nixos_module(&config, &hosts, &publish_keys))?;
            outln!("### Other Linux servers")?;
            out!("{}", server::other_linux(&config, &hosts, &publish_keys))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
