//! Messages for humans on stderr: colour only on a terminal and without `NO_COLOR`.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

fn colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| no_color_unset() && std::io::stderr().is_terminal())
}

/// One line to stderr in one write, so that lines from a long report arrive whole.
fn line(mark: &str, msg: &str) {
    let text = format!("{mark} {msg}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether what goes to stdout may be coloured: a terminal, and no `NO_COLOR`.
pub fn stdout_colour() -> bool {
    no_color_unset() && std::io::stdout().is_terminal()
}

/// `text` in the SGR colour `code` when `on`.
pub fn painted(on: bool, code: &str, text: &str) -> String {
    if on {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn paint(code: &str, text: &str) -> String {
    painted(colour(), code, text)
}

/// Prints an error as one line.
pub fn error(msg: &str) {
    let one_line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    line(&paint("1;31", "error:"), &one_line);
}

/// Prints a warning as one line starting `warning:` (never `error:`: it does not fail
/// the command).
pub fn warn(msg: &str) {
    let one_line = msg.split_whitespace().collect::<Vec<_>>().join(" ");
    line(&paint("1;33", "warning:"), &one_line);
}

/// Prints a success line.
pub fn ok(msg: &str) {
    line(&paint("32", "✓"), msg);
}

/// Prints a neutral line.
pub fn note(msg: &str) {
    line(&paint("2", "·"), msg);
}
