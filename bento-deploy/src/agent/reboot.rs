//! After a switch: did the kernel, initrd or modules change, and the reboot the policy
//! asks for then.

use std::process::Command;

use crate::agent::config::AgentConfig;
use crate::wire::report::Report;

/// The parts of a system that need a reboot to take effect.
const BOOT_PARTS: [&str; 3] = ["kernel", "initrd", "kernel-modules"];

/// Did the running system's kernel, initrd or modules move away from the booted ones?
pub(super) fn kernel_changed(config: &AgentConfig) -> bool {
    BOOT_PARTS.iter().any(|part| {
        let now = std::fs::canonicalize(config.current_system.join(part)).ok();
        let booted = std::fs::canonicalize(config.booted_system.join(part)).ok();
        now.is_some() && booted.is_some() && now != booted
    })
}

/// After the report is out: reboot (kexec) when the policy says so and the kernel changed.
pub(super) fn reboot_if_due(config: &AgentConfig, report: &Report) {
    if !report.kernel_changed {
        return;
    }
    if let Some(command) = config.reboot_command() {
        eprintln!("bento: the kernel changed; running `{command}`");
        let _ = Command::new(command.program()).args(command.args()).status();
    }
}
