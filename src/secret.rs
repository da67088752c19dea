//! `bento secret …`

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bento_secrets::edit::{self, Outcome as EditOutcome, TempPolicy};
use bento_secrets::generate::Outcome;
use bento_secrets::identity::identity_files;
use bento_secrets::listing::{self, Idle};
use bento_secrets::rekey;
use bento_secrets::verify::{self, Report};
use bento_secrets::{store, Fleet, FleetLock, Identities};

use crate::cli::{IdentityArgs, SecretArgs, SecretCommand};
use crate::output::{self, outln};

pub fn run(root: &Path, args: SecretArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    if let SecretCommand::ImportAgenix { secrets_nix } = &args.command {
        let held = lock(root)?;
        return import_agenix(root, &held, secrets_nix, verbose);
    }
    let fleet = bento_secrets::agenix::open(root, args.rules.as_deref())?;
    if verbose {
        for note in &fleet.notes {
            output::note(&note.to_string());
        }
    }
    match args.command {
        SecretCommand::Show { name, identities } => show(&fleet, &name, &identities),
        SecretCommand::Edit {
            name,
            identities,
            unsafe_tmp,
            allow_empty,
        } => edit(&fleet, &name, &identities, unsafe_tmp, allow_empty),
        SecretCommand::Verify { json } => verify(&fleet, json),
        SecretCommand::Rekey {
            names,
            all,
            identities,
        } => rekey(&fleet, &names, all, &identities),
        SecretCommand::Generate {
            names,
            force,
            identities,
        } => generate(&fleet, &names, force, &identities),
        SecretCommand::List { json } => list(&fleet, json),
        SecretCommand::ImportAgenix { .. } => unreachable!("handled above"),
    }
}

/// Notes the `next:` step after a change to the fleet's keys: a rekey when that made
/// secrets stale (naming how many), else nothing.
pub(crate) fn say_rekey_hint(root: &Path, why: &str) {
    let Ok(fleet) = Fleet::load(root) else { return };
    let stale = verify::verify(&fleet).map_or(0, |report| report.stale().len());
    if stale > 0 {
        output::note(&format!(
            "next: `{} rekey` ({stale} stale secret{}){why}",
            fleet.command(),
            output::plural(stale)
        ));
    }
}

/// Takes the fleet lock, which every command that writes secrets or the lock holds; says
/// so when it has to wait for another one.
pub(crate) fn lock(root: &Path) -> anyhow::Result<FleetLock> {
    Ok(FleetLock::acquire(root, |pid| {
        output::note(&match pid {
            Some(pid) => format!("waiting for another bento secret command (pid {pid})…"),
            None => "waiting for another bento secret command…".to_owned(),
        })
    })?)
}

fn load_identities(args: &IdentityArgs) -> bento_secrets::Result<Identities> {
    Identities::load_files(&identity_files(&args.identity))
}

fn show(fleet: &Fleet, name: &str, identities: &IdentityArgs) -> anyhow::Result<ExitCode> {
    let rule = fleet.rule(name)?;
    let sealed = store::open(fleet, name)?;
    let plaintext = sealed
        .decrypt(&load_identities(identities)?)
        .map_err(|e| verify::explain_undecryptable(fleet, rule, e))?;
    output::write_stdout(&plaintext).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn edit(
    fleet: &Fleet,
    name: &str,
    identities: &IdentityArgs,
    unsafe_tmp: bool,
    allow_empty: bool,
) -> anyhow::Result<ExitCode> {
    let ids = || load_identities(identities);
    let outcome = if std::io::stdin().is_terminal() {
        // Held across the editor session: a rekey or another edit waits for it.
        let held = lock(fleet.root())?;
        match edit::edit_with_editor(fleet, &held, name, ids, &TempPolicy { unsafe_tmp }) {
            Err(e @ bento_secrets::Error::Signalled { signal, .. }) => {
                output::error(&e.to_string());
                return Ok(ExitCode::from(
                    128u8.saturating_add(u8::try_from(signal).unwrap_or(0)),
                ));
            }
            other => other?,
        }
    } else {
        // Read before locking: a slow stdin must not keep the others waiting.
        let content =
            edit::read_content(std::io::stdin().lock()).context("reading the new content from stdin")?;
        let held = lock(fleet.root())?;
        edit::replace_with(fleet, &held, name, ids, &content, allow_empty)?
    };
    let rule = fleet.rule(name)?;
    let shown = fleet.secret_shown(rule);
    if let EditOutcome::Overwritten(_) = outcome {
        output::note(&format!(
            "{shown}: none of your identities decrypts it, so its old content was replaced unread"
        ));
    }
    match outcome {
        EditOutcome::Unchanged => output::note(&format!("{shown}: unchanged")),
        EditOutcome::NothingToCreate => output::note(&format!("{shown}: empty content, nothing created")),
        EditOutcome::Overwritten(n) | EditOutcome::Written(n) => output::ok(&format!(
            "{shown}: encrypted to {n} key{} ({})",
            output::plural(n),
            store::who(rule)
        )),
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(fleet: &Fleet, json: bool) -> anyhow::Result<ExitCode> {
    fleet.rules.warnings.iter().for_each(|w| output::warn(w));
    let report = verify::verify(fleet)?;
    if json {
        output::json(&report)?;
    } else {
        for f in &report.findings {
            outln!("{}", f.message)?;
        }
        if report.ok() && report.secrets == 0 {
            output::note(&no_secrets("nothing to verify"));
        } else if report.ok() {
            let templates = match report.templates {
                0 => String::new(),
                n => format!(
                    "; {n} template{} checked: each names known secrets its hosts can decrypt",
                    output::plural(n)
                ),
            };
            output::ok(&format!(
                "{} secret{} verified: each is encrypted to exactly its rule's recipients{templates}",
                report.secrets,
                output::plural(report.secrets)
            ));
        } else {
            output::error(&summary(fleet, &report));
        }
    }
    Ok(output::exit(report.ok()))
}

fn summary(fleet: &Fleet, report: &Report) -> String {
    let stale = report.stale().len();
    let mut line = format!(
        "{} problem{} found",
        report.findings.len(),
        output::plural(report.findings.len())
    );
    if stale > 0 {
        line.push_str(&format!(
            "; {stale} stale secret{} (fix: `{} rekey`)",
            output::plural(stale),
            fleet.command()
        ));
    }
    line
}

fn rekey(fleet: &Fleet, names: &[String], all: bool, identities: &IdentityArgs) -> anyhow::Result<ExitCode> {
    // Taken before anything that gets rewritten is read: the ciphertexts and the lock.
    let held = lock(fleet.root())?;
    let report = verify::verify(fleet)?;
    let selection = rekey::select(fleet, &report, names, all)?;
    let dropped = if selection.targets.is_empty() {
        rekey::drop_stale_lock_entries(fleet, &held, &report)?
    } else {
        rekey::stale_lock_entries(&report) // dropped as the lock is written
    };
    let say_dropped = || {
        for name in &dropped {
            output::ok(&format!(
                "{}: dropped the entry for `{name}`, which has no rule",
                fleet.shown_in_secrets(bento_secrets::recipients_lock::LOCK_FILE)
            ));
        }
    };
    if selection.targets.is_empty() && selection.corrupt.is_empty() {
        say_dropped();
        if dropped.is_empty() {
            say_nothing_to_rekey(fleet, names);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut results = Vec::new();
    if !selection.targets.is_empty() {
        let ids = load_identities(identities)?;
        let bar = output::progress("{msg}");
        bar.set_length(selection.targets.len() as u64);
        results = rekey::rekey(
            fleet,
            &held,
            &report,
            &selection.targets,
            all,
            &ids,
            &|name, _ok| {
                bar.set_message(name.to_owned());
                bar.inc(1);
            },
        )?;
        bar.finish_and_clear();
    }

    for (name, result) in &results {
        if result.is_ok() {
            output::ok(&format!("{name}: re-encrypted"));
        }
    }
    say_dropped();
    // Files that are not age files (empty, say) fail without being tried.
    let failed: Vec<&bento_secrets::Error> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .chain(&selection.corrupt)
        .collect();
    for e in &failed {
        output::error(&e.to_string());
    }
    let done = results.iter().filter(|(_, r)| r.is_ok()).count();
    if failed.is_empty() {
        output::ok(&format!("rekeyed {done} secret{}", output::plural(done)));
        Ok(ExitCode::SUCCESS)
    } else {
        output::error(&format!(
            "rekeyed {done}, failed {}: the failed ones are unchanged",
            failed.len()
        ));
        Ok(ExitCode::FAILURE)
    }
}

fn generate(
    fleet: &Fleet,
    names: &[String],
    force: bool,
    identities: &IdentityArgs,
) -> anyhow::Result<ExitCode> {
    // Taken before anything is read: the ciphertexts, the .pub files and the lock.
    let held = lock(fleet.root())?;
    let targets = bento_secrets::generate::select(fleet, names, force)?;
    if targets.is_empty() {
        output::note("nothing to generate: every secret with a `generate` kind has its file");
        return Ok(ExitCode::SUCCESS);
    }
    let outcomes =
        bento_secrets::generate::run(fleet, &held, &targets, force, &|| load_identities(identities))?;
    for (name, outcome) in outcomes {
        let rule = fleet.rule(&name)?;
        let shown = fleet.secret_shown(rule);
        match outcome {
            Outcome::Generated { kind, keys } => {
                let public = if kind.has_public() {
                    format!(", public part in {}", store::public_shown(fleet, rule))
                } else {
                    String::new()
                };
                output::ok(&format!(
                    "{shown}: generated ({kind}), encrypted to {keys} key{} ({}){public}",
                    output::plural(keys),
                    store::who(rule)
                ));
            }
            Outcome::Kept => output::note(&format!("{shown}: exists, kept (pass --force to replace it)")),
            Outcome::PublicRestored => output::ok(&format!(
                "{}: written again from {shown}",
                store::public_shown(fleet, rule)
            )),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `rekey` says when it has nothing to do, naming why for each secret asked for.
fn say_nothing_to_rekey(fleet: &Fleet, names: &[String]) {
    if fleet.rules.secrets.is_empty() {
        output::note(&no_secrets("nothing to rekey"));
        return;
    }
    let idle = listing::idle(fleet, names);
    if !names.is_empty() {
        for (rule, why) in idle {
            let name = &rule.name;
            output::note(&match why {
                Idle::Current => format!(
                    "{name}: already encrypted to exactly its rule's recipients; pass --all to re-encrypt it anyway"
                ),
                Idle::NoFile => format!(
                    "{name}: {} does not exist yet, so there is nothing to rekey; create it with `bento secret edit {name}`",
                    fleet.secret_shown(rule)
                ),
            });
        }
        return;
    }
    let missing: Vec<&str> = idle
        .iter()
        .filter(|(_, why)| *why == Idle::NoFile)
        .map(|(rule, _)| rule.name.as_str())
        .collect();
    let also = if missing.is_empty() {
        String::new()
    } else {
        format!(
            " (without a file yet: {}; create them with `bento secret edit NAME`)",
            missing.join(", ")
        )
    };
    output::note(&format!(
        "nothing to rekey: every secret already matches its rule{also}"
    ));
}

/// "No secrets yet" for a fleet without any rule, with how to add one.
fn no_secrets(consequence: &str) -> String {
    format!(
        "no secrets in {} yet, {consequence}: add a [secrets.NAME] table with its recipients, \
         then `bento secret edit NAME`",
        bento_secrets::fleet::RULES_FILE
    )
}

fn list(fleet: &Fleet, json: bool) -> anyhow::Result<ExitCode> {
    let report = verify::verify(fleet)?;
    let listed = listing::list(fleet, &report);
    if json {
        output::json(&listed)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listed.is_empty() {
        output::note(&no_secrets("nothing to list"));
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![["SECRET".to_owned(), "RECIPIENTS".to_owned(), "STATUS".to_owned()]];
    for secret in &listed {
        table.push([
            secret.name.clone(),
            secret.marked_recipients().join(" "),
            secret.status.as_str().to_owned(),
        ]);
    }
    let width = |col: usize| table.iter().map(|r| r[col].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    for row in &table {
        outln!("{:w0$}  {:w1$}  {}", row[0], row[1], row[2])?;
    }
    if !report.ok() {
        outln!(
            "(+name: must be added, -name: must be removed; `{} verify` explains)",
            fleet.command()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import_agenix(root: &Path, held: &FleetLock, nix: &Path, verbose: bool) -> anyhow::Result<ExitCode> {
    let imported = bento_secrets::import::import_agenix(root, held, nix)?;
    if verbose {
        for note in &imported.ignored {
            output::note(&note.to_string());
        }
    }
    for (file, name) in &imported.renamed {
        output::note(&format!(
            "renamed {file} to the secret name {name} (its file keeps its name: `file` in the rules)"
        ));
    }
    if imported.copied > 0 {
        output::note(&format!(
            "copied {} ciphertext{} into secrets/; those already there are used in place",
            imported.copied,
            output::plural(imported.copied)
        ));
    }
    output::ok(&format!(
        "imported {} secrets; admins: {}; hosts: {}",
        imported.secrets.len(),
        imported.admins.join(", "),
        imported.hosts.join(", ")
    ));
    output::note("next: rename keys/*/*.pub as you like (and in secrets.toml), then `bento secret verify`");
    Ok(ExitCode::SUCCESS)
}
