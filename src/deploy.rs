//! `bento deploy`, `bento build`, `bento server setup`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bento_deploy::build::BuildResult;
use bento_deploy::publish::{self, HostReport, Progress};
use bento_deploy::sign::Signer;
use bento_deploy::{hosts, server, Config};
use bento_secrets::Fleet;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{BuildArgs, DeployArgs, ServerArgs, ServerCommand};
use crate::output;

/// The program that lists flakes' configurations.
const NIX: &str = "nix";

/// A progress bar on stderr, only on a terminal.
fn bar(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

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
    let config = Config::load(root)?;
    // The rules' warnings (the publish below loads and checks them again).
    Fleet::load(root)?
        .rules
        .warnings
        .iter()
        .for_each(|w| output::warn(w));
    let options = publish::Options {
        server_root: args
            .server_root
            .unwrap_or_else(|| PathBuf::from(&config.server.root)),
        hosts: args.hosts,
        nix: NIX.into(),
    };
    let key = config.signing_key_path();
    let signer = || Signer::load(&key, &config.deploy.signing_key);
    let progress = Bar(bar("hosts"));
    let reports = publish::deploy(root, &config, &options, &signer, &progress);
    progress.0.finish_and_clear();
    let reports = reports?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": reports }))?
        );
    } else {
        print_deploy_table(&reports);
    }
    let published = reports.iter().filter(|r| r.changed).count();
    output::ok(&format!(
        "{} host{}: {published} published, {} unchanged ({})",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        reports.len() - published,
        options.server_root.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn print_deploy_table(reports: &[HostReport]) {
    let width = reports.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
    println!(
        "{:width$}  {:>10}  {:9}  {:>5}  {:>7}",
        "HOST", "GENERATION", "STATE", "FILES", "SECRETS"
    );
    for r in reports {
        let state = if r.changed { "published" } else { "unchanged" };
        println!(
            "{:width$}  {:>10}  {state:9}  {:>5}  {:>7}",
            r.host, r.generation, r.files, r.secrets
        );
    }
}

pub fn build(root: &Path, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(root)?;
    let fleet = Fleet::load(root)?;
    let hosts = hosts::select(hosts::discover(root, &fleet, NIX)?, &args.hosts)?;
    let bar = bar("hosts built");
    bar.set_length(hosts.len() as u64);
    let results = bento_deploy::build::build(root, &config, &hosts, args.dry, &|_: &BuildResult| bar.inc(1));
    bar.finish_and_clear();
    let results = results?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "hosts": results }))?
        );
    } else {
        let width = results.iter().map(|r| r.host.len()).max().unwrap_or(0).max(4);
        println!("{:width$}  {:6}  SYSTEM", "HOST", "RESULT");
        for r in &results {
            let state = if r.ok { "ok" } else { "FAILED" };
            let detail = match (&r.system, &r.error) {
                (Some(system), _) => system.clone(),
                (None, Some(e)) => e.clone(),
                (None, None) => "-".into(),
            };
            println!("{:width$}  {state:6}  {detail}", r.host);
        }
    }
    let failed: Vec<&BuildResult> = results.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        if !r.tail.is_empty() {
            eprintln!("--- {} (last lines of {}):", r.host, r.log);
            for line in &r.tail {
                eprintln!("    {line}");
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
        if results.len() == 1 { "" } else { "s" }
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn server(root: &Path, args: ServerArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ServerCommand::Setup => {
            let config = Config::load(root)?;
            let fleet = Fleet::load(root)?;
            let hosts = server::hosts(&fleet, &config);
            println!("### NixOS server: add this module to its configuration");
            println!("{}", server::nixos_module(&config, &hosts));
            println!("### Other Linux servers");
            print!("{}", server::other_linux(&config, &hosts));
            Ok(ExitCode::SUCCESS)
        }
    }
}
