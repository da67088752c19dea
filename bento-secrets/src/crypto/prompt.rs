//! Talking to the person at the terminal: passphrases for ssh keys, and the messages and
//! questions of age plugins (touch your YubiKey, enter the PIN).
//!
//! Everything goes through `/dev/tty`, never stdin or stdout, so `bento secret show`
//! stays pipeable and stdin can carry a secret's new content.

use std::io::{BufRead, Write};

use age::secrecy::SecretString;
use zeroize::Zeroizing;

/// Asks the user for a passphrase; `None` when there is no terminal to ask on.
pub trait Prompt: Send + Sync {
    /// Asks for the passphrase described by `what`.
    fn passphrase(&self, what: &str) -> Option<Zeroizing<String>>;
}

/// The controlling terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct Terminal;

impl Prompt for Terminal {
    fn passphrase(&self, what: &str) -> Option<Zeroizing<String>> {
        rpassword::prompt_password(format!("{what}: "))
            .ok()
            .map(Zeroizing::new)
    }
}

fn tty_line(question: &str) -> Option<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    write!(tty, "{question}").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(tty).read_line(&mut line).ok()?;
    Some(line.trim_end_matches(['\r', '\n']).to_owned())
}

impl age::Callbacks for Terminal {
    fn display_message(&self, message: &str) {
        eprintln!("{message}");
    }

    fn confirm(&self, message: &str, yes: &str, no: Option<&str>) -> Option<bool> {
        let no = no.unwrap_or("no");
        let answer = tty_line(&format!("{message} [{yes}/{no}]: "))?;
        Some(answer.eq_ignore_ascii_case(yes) || answer.eq_ignore_ascii_case("y"))
    }

    fn request_public_string(&self, description: &str) -> Option<String> {
        tty_line(&format!("{description}: "))
    }

    fn request_passphrase(&self, description: &str) -> Option<SecretString> {
        let pass = self.passphrase(description)?;
        Some(SecretString::from(pass.as_str().to_owned()))
    }
}
