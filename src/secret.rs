//! `bento secret …`

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bento_secrets::edit::{self, Outcome, TempPolicy};
use bento_secrets::identity::identity_paths;
use bento_secrets::{store, Fleet, Identities};

use crate::cli::{IdentityArgs, SecretCommand};
use crate::output;

pub fn run(root: &Path, cmd: SecretCommand) -> anyhow::Result<ExitCode> {
    let fleet = Fleet::load(root)?;
    match cmd {
        SecretCommand::Show { name, identities } => {
            let sealed = store::open(&fleet, &name)?;
            let plaintext = sealed.decrypt(&load_identities(&identities)?)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&plaintext)
                .and_then(|()| out.flush())
                .context("writing to stdout")?;
        }
        SecretCommand::Edit {
            name,
            identities,
            unsafe_tmp,
        } => {
            let ids = || load_identities(&identities);
            let outcome = if std::io::stdin().is_terminal() {
                edit::edit_with_editor(&fleet, &name, ids, &TempPolicy { unsafe_tmp })?
            } else {
                let content = edit::read_content(std::io::stdin().lock())
                    .context("reading the new content from stdin")?;
                edit::replace_with(&fleet, &name, ids, &content)?
            };
            let rule = fleet.rule(&name)?;
            let shown = fleet.secret_shown(rule);
            match outcome {
                Outcome::Unchanged => output::note(&format!("{shown}: unchanged")),
                Outcome::NothingToCreate => output::note(&format!("{shown}: empty content, nothing created")),
                Outcome::Written(n) => output::ok(&format!(
                    "{shown}: encrypted to {n} key{} ({})",
                    if n == 1 { "" } else { "s" },
                    rule.recipients
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_identities(args: &IdentityArgs) -> bento_secrets::Result<Identities> {
    Identities::load(&identity_paths(&args.identity))
}
