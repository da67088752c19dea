//! The commands an agent run starts (rebuild, activate, rollback, self-update), each
//! under the run's deadline: its output is shown live and kept for the log, and when the
//! deadline passes its whole process group is stopped (`SIGTERM`, then `SIGKILL` after a
//! short grace), so nothing it started outlives the run.

use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, Pid, Signal};

use crate::agent::config::CommandLine;

/// How long a command stopped at the deadline has between `SIGTERM` and `SIGKILL`.
const GRACE: Duration = Duration::from_secs(5);

/// Why a command failed; each one line naming the command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started.
    #[error("running the {what} command `{program}`: {source}")]
    Spawn {
        /// `rebuild`, `activate`…
        what: &'static str,
        /// The program.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for the {what} command: {source}")]
    Wait {
        /// `rebuild`, `activate`…
        what: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The run's deadline stopped it.
    #[error("the {what} command was stopped: the run took longer than run_timeout = {run_timeout} s")]
    Stopped {
        /// `rebuild`, `activate`…
        what: &'static str,
        /// The agent's `run_timeout`.
        run_timeout: u64,
    },
    /// It exited unsuccessfully.
    #[error("the {what} command failed ({status}){}", if tail.is_empty() { String::new() } else { format!(": {tail}") })]
    Failed {
        /// `rebuild`, `activate`…
        what: &'static str,
        /// How it ended.
        status: ExitStatus,
        /// Its first `error:` line on stderr, else its last non-empty one.
        tail: String,
    },
}

/// A command line, run to completion or until `deadline`.
pub(crate) struct Job<'a> {
    /// What it is, for messages: `rebuild`, `activate`…
    pub what: &'static str,
    /// The command line (from agent.toml, or built by the agent).
    pub line: &'a CommandLine,
    /// Arguments bento appends.
    pub extra: &'a [String],
    /// When it is stopped.
    pub deadline: Instant,
    /// The agent's `run_timeout`, named when the deadline stops the command.
    pub run_timeout: u64,
}

impl Job<'_> {
    /// Runs the command; its output goes to stderr as it comes and into `log`. The error
    /// is one line: the command's last line on stderr, or the deadline.
    pub(crate) fn run(&self, log: &mut Vec<u8>) -> Result<(), CommandError> {
        let what = self.what;
        let program = self.line.program();
        log.extend_from_slice(format!("$ {} {}\n", self.line, self.extra.join(" ")).as_bytes());
        let mut child = spawn(program, self.line.args().iter().chain(self.extra)).map_err(|source| {
            CommandError::Spawn {
                what,
                program: program.to_owned(),
                source,
            }
        })?;
        let group = Pid::from_child(&child);
        let shared = Mutex::new(Vec::new());
        let last_err = Mutex::new(String::new());
        // What went wrong is said in the first `error:` line (nix, nixos-rebuild, bento);
        // later lines may be a trace, or the last output of a step that succeeded.
        let first_error = Mutex::new(None::<String>);
        let stopped = AtomicBool::new(false);
        let (out, errs) = (child.stdout.take(), child.stderr.take());
        let (done, finished) = mpsc::channel::<()>();
        let status = std::thread::scope(|scope| {
            let pump = |reader: Box<dyn Read + Send>, is_err: bool| {
                let (shared, last_err, first_error) = (&shared, &last_err, &first_error);
                scope.spawn(move || {
                    for line in std::io::BufReader::new(reader).split(b'\n').map_while(Result::ok) {
                        let text = String::from_utf8_lossy(&line);
                        // Shown live when someone reads; a closed or full stderr never
                        // stops the pump (the command would then block or die mid-switch).
                        let _ = writeln!(std::io::stderr().lock(), "{text}");
                        if is_err && !text.trim().is_empty() {
                            let trimmed = text.trim();
                            if is_error_line(trimmed) {
                                first_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert_with(|| trimmed.to_owned());
                            }
                            *last_err.lock().unwrap_or_else(|p| p.into_inner()) = trimmed.to_owned();
                        }
                        let mut log = shared.lock().unwrap_or_else(|p| p.into_inner());
                        log.extend_from_slice(&line);
                        log.push(b'\n');
                    }
                })
            };
            let pumps: Vec<_> = [
                out.map(|o| pump(Box::new(o), false)),
                errs.map(|e| pump(Box::new(e), true)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let stopped = &stopped;
            let deadline = self.deadline;
            scope.spawn(move || {
                let wait = deadline.saturating_duration_since(Instant::now());
                if finished.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                stopped.store(true, Ordering::SeqCst);
                let _ = kill_process_group(group, Signal::TERM);
                if finished.recv_timeout(GRACE) == Err(RecvTimeoutError::Timeout) {
                    let _ = kill_process_group(group, Signal::KILL);
                }
            });
            let status = child.wait();
            // The output ends when the last process holding it does.
            for p in pumps {
                let _ = p.join();
            }
            drop(done);
            status
        });
        let status = status.map_err(|source| CommandError::Wait { what, source })?;
        log.extend(shared.into_inner().unwrap_or_else(|p| p.into_inner()));
        if stopped.load(Ordering::SeqCst) {
            log.extend_from_slice(b"(stopped: the run's deadline passed)\n");
            return Err(CommandError::Stopped {
                what,
                run_timeout: self.run_timeout,
            });
        }
        if status.success() {
            return Ok(());
        }
        let tail = first_error
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| last_err.into_inner().unwrap_or_else(|p| p.into_inner()));
        Err(CommandError::Failed { what, status, tail })
    }
}

/// How a captured command ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited.
    Exited(ExitStatus),
    /// The deadline stopped it.
    Stopped,
    /// It could not be started, or waited for: why.
    Broken(String),
}

/// What a short command (a query, a health check) printed, and how it ended.
#[derive(Debug)]
pub(crate) struct Captured {
    pub program: String,
    pub ended: Ended,
    /// At most 16 MiB of each.
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    /// Its output when it succeeded; else why not.
    pub(crate) fn stdout_if_success(self) -> Result<String, CaptureError> {
        let program = self.program;
        match self.ended {
            Ended::Exited(status) if status.success() => Ok(self.stdout),
            Ended::Exited(status) => Err(CaptureError::Failed {
                line: first_line(&self.stderr).escape_default().to_string(),
                program,
                status,
            }),
            Ended::Stopped => Err(CaptureError::Stopped { program }),
            Ended::Broken(why) => Err(CaptureError::Broken(why)),
        }
    }
}

/// Why a short command's output cannot be used; one line.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// It exited unsuccessfully.
    #[error("`{program}` failed ({status}): {line}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: ExitStatus,
        /// Its first line on stderr, escaped.
        line: String,
    },
    /// The deadline stopped it.
    #[error("`{program}` was stopped: the run's deadline passed")]
    Stopped {
        /// The program.
        program: String,
    },
    /// It could not be started or waited for.
    #[error("{0}")]
    Broken(String),
}

/// The first non-empty line of `text`, trimmed.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

/// Runs `program args` (no shell, stdin from /dev/null) and keeps what it prints; at
/// `deadline` it is killed. For short commands whose output the agent reads (a store
/// query, a health check); the commands that change the system go through [`Job`].
pub(crate) fn capture(program: &str, args: &[String], deadline: Instant) -> Captured {
    let done = |ended, stdout, stderr| Captured {
        program: program.to_owned(),
        ended,
        stdout,
        stderr,
    };
    let mut child = match spawn(program, args) {
        Ok(child) => child,
        Err(e) => {
            return done(
                Ended::Broken(format!("running `{program}`: {e}")),
                String::new(),
                String::new(),
            )
        }
    };
    fn read(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(pipe) = pipe {
                let _ = pipe.take(16 << 20).read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
    let out = read(child.stdout.take());
    let err = read(child.stderr.take());
    let group = Pid::from_child(&child);
    // Looked at soon, then less often: a quick command (a health check's `true`) is not
    // kept waiting a whole pause.
    let mut pause = Duration::from_micros(250);
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ended::Exited(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            Ok(None) => {
                // Everything it started: a check's children must not hold its pipes open.
                let _ = kill_process_group(group, Signal::KILL);
                let _ = child.wait();
                break Ended::Stopped;
            }
            Err(e) => break Ended::Broken(format!("waiting for `{program}`: {e}")),
        }
    };
    // Nothing it started outlives it (or keeps its output open).
    let _ = kill_process_group(group, Signal::KILL);
    done(
        ended,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Whether a line of a command's stderr says what went wrong: `error: …` as nix,
/// nixos-rebuild and bento write it (after a `program:` prefix too).
/// A bare `error:` (nix's first line since 2.13, the cause comes lines later) says nothing.
fn is_error_line(line: &str) -> bool {
    let rest = line
        .strip_prefix("error:")
        .or_else(|| line.split_once(": error:").map(|(_, rest)| rest));
    rest.is_some_and(|rest| !rest.trim().is_empty())
}

/// Starts `program args` (no shell, stdin from /dev/null, its output piped) in a process
/// group of its own: at the deadline, everything it started is stopped.
fn spawn<A: AsRef<std::ffi::OsStr>>(
    program: &str,
    args: impl IntoIterator<Item = A>,
) -> std::io::Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_command_past_its_deadline_is_stopped_with_its_children() {
        let started = Instant::now();
        let soon = Instant::now() + Duration::from_millis(200);
        let e = capture("sh", &["-c".into(), "sleep 5 & sleep 5".into()], soon)
            .stdout_if_success()
            .unwrap_err();
        assert!(matches!(e, CaptureError::Stopped { .. }), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let later = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            capture("echo", &["hi".into()], later)
                .stdout_if_success()
                .unwrap(),
            "hi\n"
        );
        let e = capture("sh", &["-c".into(), "echo 'bad thing' >&2; exit 3".into()], later)
            .stdout_if_success()
            .unwrap_err();
        match &e {
            CaptureError::Failed { status, line, .. } => {
                assert_eq!((status.code(), line.as_str()), (Some(3), "bad thing"))
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            capture("/nonexistent/x", &[], later).ended,
            Ended::Broken(_)
        ));
    }

    #[test]
    fn an_error_line_says_something() {
        assert!(is_error_line("error: The option `x' does not exist."));
        assert!(is_error_line("nixos-rebuild: error: build failed"));
        // nix 2.13+: a bare `error:` first, the cause lines later.
        assert!(!is_error_line("error:"));
        assert!(!is_error_line("nix: error:   "));
        assert!(!is_error_line("building the system configuration..."));
    }
}
