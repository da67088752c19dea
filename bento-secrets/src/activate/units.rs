//! The units `bento activate` restarts and reloads after a switch: those of the added and
//! changed secrets and templates.

use super::outcome::Report;
use super::templates;
use crate::spec::{SecretSpec, TemplateSpec};
use crate::units::UnitControl;

/// The units of added and changed secrets and templates, each once: (restart, reload).
/// A unit both restarted and reloaded is only restarted.
pub fn units_to_restart(
    specs: &[SecretSpec],
    templates: &[TemplateSpec],
    report: &Report,
) -> (Vec<String>, Vec<String>) {
    let touched = report.touched();
    let (mut restart, mut reload) = templates::units(templates, report);
    for s in specs.iter().filter(|s| touched.contains(s.name.as_str())) {
        restart.extend(s.restart_units.iter().cloned());
        reload.extend(s.reload_units.iter().cloned());
    }
    reload.retain(|u| !restart.contains(u));
    (restart.into_iter().collect(), reload.into_iter().collect())
}

/// Restarts the units of changed secrets and templates (`try-restart`) and reloads
/// theirs (`try-reload-or-restart`, as sops-nix's `reloadUnits`: only running units,
/// reloaded where they can be, else restarted), waiting for systemd or queueing the
/// jobs (`--no-block`), or leaves them, as `control` says. A failure is recorded
/// in `units_error` and never reported as a restart.
pub fn restart_units(
    control: &UnitControl,
    specs: &[SecretSpec],
    templates: &[TemplateSpec],
    report: &mut Report,
) {
    (report.restart_units, report.reload_units) = units_to_restart(specs, templates, report);
    if report.restart_units.is_empty() && report.reload_units.is_empty() {
        return;
    }
    match crate::units::hand_over(control, &report.restart_units, &report.reload_units) {
        Ok(handled) => report.units_handled = Some(handled),
        Err(e) => report.units_error = Some(e.to_string()),
    }
}
