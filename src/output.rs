//! Messages for humans on stderr: colour only on a terminal and without `NO_COLOR`.

use bento_deploy::status::{HostStatus, Status};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

/// `println!` that returns the write's error instead of panicking: with `?`, a closed
/// stdout (`bento … | head -1`) ends the command through `main`, which ends quietly on a
/// broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use outln;

/// `print!` that returns the write's error, like [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use out;

fn colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| no_color_unset() && std::io::stderr().is_terminal())
}

/// One line to stderr in one write, so that lines from a long report arrive whole.
/// Messages may quote what a host or the server wrote: control characters are escaped.
fn line(mark: &str, msg: &str) {
    let text = format!("{mark} {}\n", escaped(msg));
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether what goes to stdout may be coloured: a terminal, and no `NO_COLOR`.
pub fn stdout_colour() -> bool {
    no_color_unset() && std::io::stdout().is_terminal()
}

/// `text` with every character that a terminal could act on written out as an escape
/// (`\u{1b}`): C0 and C1 controls, DEL, and the bidirectional overrides that reorder what
/// is shown. For anything a host or the server wrote (reports, problems, system paths)
/// before it reaches a terminal; `--json` stays exact (JSON escapes controls itself).
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
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

/// `s` after a count of `n`, unless it is one (`1 host`, `2 hosts`).
pub(crate) fn plural<N: PartialEq + From<u8>>(n: N) -> &'static str {
    if n == N::from(1) {
        ""
    } else {
        "s"
    }
}

/// Prints `value` as pretty JSON, one document on stdout.
pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// The name `--json` gives `value`, a unit variant (`rolled-back`).
pub(crate) fn json_name(value: impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Success, or failure (exit status 1).
pub(crate) fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A progress bar on stderr, only on a terminal: `{bar} {pos}/{len} what` (`what` may
/// name the bar's message, `{msg}`).
pub(crate) fn progress(what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what}"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// The value, or `-` for none.
pub(crate) fn dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Writes `bytes` to stdout and flushes it.
pub(crate) fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Each column's width: its widest cell, the heading's included (in characters).
pub(crate) fn widths<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> [usize; N] {
    let mut widths = head.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// A table row's cells, each but the last padded to its column's width and followed by
/// the two spaces between columns.
pub(crate) fn padded<const N: usize>(cells: &[String; N], widths: [usize; N]) -> [String; N] {
    std::array::from_fn(|i| match i + 1 == N {
        true => cells[i].clone(),
        false => format!("{:w$}  ", cells[i], w = widths[i]),
    })
}

/// `secs` ago, short (`5m ago`), or `-`.
pub(crate) fn ago(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s < 60 => format!("{s}s ago"),
        Some(s) if s < 3600 => format!("{}m ago", s / 60),
        Some(s) if s < 86_400 => format!("{}h ago", s / 3600),
        Some(s) => format!("{}d ago", s / 86_400),
    }
}

/// One of four, by how bad `s` is: a failure, a problem, up to date, anything else.
pub(crate) fn by_severity<T>(s: Status, [failure, problem, up_to_date, other]: [T; 4]) -> T {
    match s {
        _ if s.is_failure() => failure,
        _ if s.is_problem() => problem,
        Status::UpToDate => up_to_date,
        _ => other,
    }
}

/// The generation and state of a host's newest report, or `-`.
pub(crate) fn reported(h: &HostStatus) -> String {
    match (h.reported_generation, h.reported_state) {
        (Some(g), Some(state)) => format!("{g} {}", state.name()),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_controls_are_written_out() {
        assert_eq!(super::escaped("plain ✓ text"), "plain ✓ text");
        assert_eq!(
            super::escaped("a\u{1b}[2Jb\u{1b}]52;c;eA==\u{7}\u{9b}\u{202e}\n"),
            "a\\u{1b}[2Jb\\u{1b}]52;c;eA==\\u{7}\\u{9b}\\u{202e}\\u{a}"
        );
    }
}
