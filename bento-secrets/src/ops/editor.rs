//! Running the admin's editor for `secret edit`: in a process group of its own, which is
//! handed the terminal while it runs, and which is ended (SIGTERM, then SIGKILL after a
//! short grace) on every way out of bento: the editor exiting (whatever it left running
//! goes too), an error, a panic, and SIGTERM or SIGHUP sent to bento.
//!
//! Owning the terminal, the editor alone gets Ctrl-C and Ctrl-\ from it. Should bento be
//! SIGKILLed, the editor survives it; the next `secret edit` removes the plaintext it
//! worked on (see [`crate::scratch`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal as NixSignal};
use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal, WaitOptions};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

/// How long the editor's group has to exit after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// How the editor session ended.
#[derive(Debug)]
pub enum Ended {
    /// The editor exited by itself (or was killed by someone else).
    Exited(ExitStatus),
    /// Bento got this signal (SIGTERM or SIGHUP) and ended the editor.
    Signalled(i32),
}

/// Runs `editor` (a shell word list, as `$EDITOR` may carry arguments) on `file`, and
/// waits for it. SIGINT and SIGQUIT sent to bento itself are ignored meanwhile.
pub fn run(editor: &str, file: &Path) -> io::Result<Ended> {
    let mut signals = Signals::new([SIGINT, SIGQUIT, SIGTERM, SIGHUP])?;
    let handle = signals.handle();
    let terminal = Terminal::ours();
    // What the editor starts and leaves behind comes back to bento when orphaned, to be
    // reaped here rather than by an init that might not.
    let _ = rustix::process::set_child_subreaper(Some(rustix::process::getpid()));
    // `sh -c '$EDITOR "$@"'` lets EDITOR carry arguments (`code --wait`), as git does. The
    // shell stops itself first and goes on only once its group holds the terminal: an
    // editor that ran before the hand-over would see Ctrl-C go to bento, not to itself.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -STOP $$; {editor} \"$@\""))
        .arg(editor)
        .arg(file)
        .process_group(0)
        .spawn()?;
    let group = Group(Pid::from_child(&child));
    let early = rustix::process::waitpid(Some(group.0), WaitOptions::UNTRACED)?;
    if let Some((_, status)) = early.filter(|(_, s)| !s.stopped()) {
        // It ended before it could stop (the shell could not run): nothing to hand over.
        use std::os::unix::process::ExitStatusExt;
        drop(group);
        handle.close();
        return Ok(Ended::Exited(ExitStatus::from_raw(status.as_raw())));
    }
    if let Some(terminal) = &terminal {
        terminal.hand_to(group.0);
    }
    // Stopped above (and, had it read the terminal before the hand-over, by SIGTTIN).
    let _ = kill_process_group(group.0, Signal::CONT);

    let got = Arc::new(AtomicI32::new(0));
    let watcher = {
        let (got, pgid) = (Arc::clone(&got), group.0);
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == SIGTERM || sig == SIGHUP {
                    got.store(sig, Ordering::SeqCst);
                    end_group(pgid);
                }
            }
        })
    };
    let status = child.wait();
    drop(group); // what the editor left running
    drop(terminal); // the terminal back to bento
    handle.close();
    let _ = watcher.join();
    match got.load(Ordering::SeqCst) {
        0 => status.map(Ended::Exited),
        sig => Ok(Ended::Signalled(sig)),
    }
}

/// The editor's process group, ended when dropped (and its orphans reaped).
struct Group(Pid);

impl Drop for Group {
    fn drop(&mut self) {
        end_group(self.0);
        while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
        let _ = rustix::process::set_child_subreaper(None);
    }
}

/// SIGTERM to every process of group `pgid`, SIGKILL to those left after [`GRACE`].
fn end_group(pgid: Pid) {
    if !group_runs(pgid) {
        return;
    }
    let _ = kill_process_group(pgid, Signal::TERM);
    // A stopped process acts on SIGTERM only once continued.
    let _ = kill_process_group(pgid, Signal::CONT);
    let deadline = Instant::now() + GRACE;
    while group_runs(pgid) {
        if Instant::now() >= deadline {
            let _ = kill_process_group(pgid, Signal::KILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Does a process of group `pgid` still run? Zombies (dead, not yet reaped) do not count.
fn group_runs(pgid: Pid) -> bool {
    if test_kill_process_group(pgid).is_err() {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let pgid = pgid.as_raw_nonzero().get().to_string();
    procs.flatten().any(|p| {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        // After the command name: state, ppid, pgrp.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).unwrap_or_default();
        group == pgid && state != "Z" && state != "X"
    })
}

/// The controlling terminal, while bento's process group is in its foreground.
struct Terminal {
    tty: File,
    ours: Pid,
}

impl Terminal {
    fn ours() -> Option<Terminal> {
        let tty = OpenOptions::new().read(true).write(true).open("/dev/tty").ok()?;
        let ours = rustix::process::getpgrp();
        (rustix::termios::tcgetpgrp(&tty).ok()? == ours).then_some(Terminal { tty, ours })
    }

    fn hand_to(&self, pgid: Pid) {
        let _ = rustix::termios::tcsetpgrp(&self.tty, pgid);
    }
}

impl Drop for Terminal {
    /// Takes the terminal back. From the background, that needs SIGTTOU blocked (it would
    /// stop bento otherwise).
    fn drop(&mut self) {
        let ttou = SigSet::from(NixSignal::SIGTTOU);
        let mut old = SigSet::empty();
        let blocked = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_ok();
        let _ = rustix::termios::tcsetpgrp(&self.tty, self.ours);
        if blocked {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
        }
    }
}
