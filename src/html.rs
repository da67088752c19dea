//! `bento status --html FILE`: the fleet as one self-contained page.
//!
//! One file: inline CSS, no script, no font, no image, nothing fetched (a
//! Content-Security-Policy of `default-src 'none'` says so to the browser too), so it reads
//! the same from `file://` or any static server. Filtering by status works without script:
//! each summary chip links to an empty anchor before the table, and CSS's `:target` hides
//! the other rows; without CSS the whole table shows.
//!
//! Everything a host wrote (report errors, check output, system paths, report times) and
//! every name is text: [`esc`] escapes it for HTML, and none of it goes into an attribute,
//! a URL or a style. Attributes carry only what this file chooses: status class names,
//! numbers and fixed fragment links.

use std::fmt::Write as _;

use bento_deploy::publish::rollout::{Rollout, WaveState};
use bento_deploy::status::{FleetStatus, HostStatus, Point, Status};
use bento_deploy::wire::report::State;

use crate::output::dash;

/// How many of each host's newest reports the timeline shows.
pub const TIMELINE: usize = 6;

/// `text` safe as HTML text or a quoted attribute value: `& < > " '` escaped.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters would not show; a NUL is not allowed at all.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin-top:2em}\
.meta{color:#666;margin:.2em 0 1em}\
.chips a{display:inline-block;margin:0 .4em .4em 0;padding:.2em .6em;border-radius:1em;\
border:1px solid #999;text-decoration:none;color:#222}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4;position:sticky;top:0}\
td.d{color:#555;font-size:.9em;white-space:pre-wrap;word-break:break-all;padding-left:2em}\
.b{font-weight:600}\
.bad{background:#fdd}.warn{background:#ffefc2}.ok{background:#e3f6e3}.idle{background:#eee}\
svg{vertical-align:middle}.ta{fill:#2a2}.tf{fill:#c22}.tr{fill:#e80}.tn{fill:#999}\
.wave{margin:.3em 0}\
";

/// The CSS that shows only the rows of one status while its anchor is the URL's fragment.
fn filters() -> String {
    let mut css = String::new();
    for s in Status::ALL {
        let _ = write!(
            css,
            "#only-{n}:target~table tbody tr:not(.s-{n}){{display:none}}",
            n = s.name()
        );
    }
    css
}

/// The class that colours a status.
fn tone(s: Status) -> &'static str {
    crate::output::by_severity(s, ["bad", "warn", "ok", "idle"])
}

/// The marker of a report state in the timeline: a shape (legible without colour) and a
/// class (its colour).
fn marker(state: Option<State>) -> (&'static str, &'static str) {
    match state {
        Some(s) if s.is_success() => ("#m-ok", "ta"),
        Some(State::Failed | State::Refused) => ("#m-fail", "tf"),
        Some(State::RolledBack) => ("#m-back", "tr"),
        _ => ("#m-other", "tn"),
    }
}

/// A host's recent reports, oldest to newest, as inline SVG with a text title.
fn timeline(points: &[Point]) -> String {
    if points.is_empty() {
        return "-".into();
    }
    let mut svg = format!(
        "<svg width=\"{}\" height=\"14\" role=\"img\"><title>",
        points.len() * 14
    );
    let titles: Vec<String> = points
        .iter()
        .map(|p| {
            let state = p.state.map_or("unreadable", State::name);
            format!("{} {state} {}", p.generation, esc(&p.time))
        })
        .collect();
    svg.push_str(&titles.join("; "));
    svg.push_str("</title>");
    for (i, p) in points.iter().rev().enumerate() {
        let (shape, class) = marker(p.state);
        let _ = write!(svg, "<use href=\"{shape}\" x=\"{}\" class=\"{class}\"/>", i * 14);
    }
    svg.push_str("</svg>");
    svg
}

/// The hash part of a store path, shortened: enough to tell two systems apart.
fn short_system(path: Option<&str>) -> String {
    match path {
        None => "-".into(),
        Some(p) => {
            let name = p.strip_prefix("/nix/store/").unwrap_or(p);
            esc(&name.chars().take(8).collect::<String>())
        }
    }
}

/// One host's row, and a detail row under it when it carries an error or a problem.
fn row(out: &mut String, h: &HostStatus) {
    let name = match h.in_fleet {
        true => esc(&h.host),
        false => format!("{} (not in fleet)", esc(&h.host)),
    };
    let signers = match h.signers.is_empty() {
        true => "-".into(),
        false => esc(&h.signers.join(", ")),
    };
    let s = h.status.name();
    let _ = write!(
        out,
        "<tr class=\"s-{s}\"><td class=\"b\">{name}</td><td class=\"{tone}\">{s}</td><td>{mode}</td>\
         <td>{expected}</td><td>{reported}</td><td>{lag}</td><td>{seen}</td><td>{system}</td>\
         <td>{signers}</td><td>{timeline}</td></tr>",
        tone = tone(h.status),
        mode = dash(h.mode),
        expected = dash(h.expected_generation),
        reported = crate::output::reported(h),
        lag = dash(h.generation_lag),
        seen = crate::output::ago(h.seen_ago_seconds),
        system = short_system(h.reported_system.as_deref()),
        timeline = timeline(&h.timeline),
    );
    let mut details: Vec<String> = Vec::new();
    if h.status != Status::UpToDate {
        details.extend(h.error.iter().map(|e| esc(e)));
        if let Some(check) = &h.failed_check {
            details.push(format!(
                "health check {}: {}",
                esc(&check.check),
                esc(&check.output)
            ));
        }
    }
    details.extend(h.problem.iter().map(|p| esc(p)));
    if !details.is_empty() {
        let _ = write!(
            out,
            "<tr class=\"s-{s}\"><td class=\"d\" colspan=\"10\">{}</td></tr>",
            details.join("\n")
        );
    }
}

/// The rollout's waves and their hosts.
fn rollout(out: &mut String, rollout: &Rollout) {
    let _ = write!(
        out,
        "<h2>Rollout</h2><p class=\"meta\">started {}</p><ol>",
        esc(&rollout.started)
    );
    for wave in &rollout.waves {
        let (word, tone) = match wave.state {
            WaveState::Waiting => ("waiting", "idle"),
            WaveState::Published => ("published", "warn"),
            WaveState::Healthy => ("healthy", "ok"),
            WaveState::Failed => ("failed", "bad"),
        };
        let hosts: Vec<String> = wave
            .hosts
            .iter()
            .map(|h| match wave.hosts_state.get(h) {
                Some(state) => format!("{} ({})", esc(h), esc(state)),
                None => esc(h),
            })
            .collect();
        let _ = write!(
            out,
            "<li class=\"wave\"><span class=\"{tone}\">{word}</span> {}</li>",
            hosts.join(", ")
        );
    }
    out.push_str("</ol>");
}

/// The page of `status` (and of `rollout`, when one exists); with `refresh`, the browser
/// reloads it every so many seconds.
pub fn page(status: &FleetStatus, rollout_state: Option<&Rollout>, refresh: Option<u64>) -> String {
    let n = status.hosts.len();
    let mut out = String::with_capacity(1024 + n * 700);
    out.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
    );
    out.push_str("<meta name=\"referrer\" content=\"no-referrer\">");
    if let Some(secs) = refresh {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
    }
    let _ = write!(
        out,
        "<title>Bento fleet: {n} host{}</title><style>{STYLE}{}</style></head><body>",
        crate::output::plural(n),
        filters()
    );
    // The timeline's shapes, defined once.
    out.push_str(
        "<svg width=\"0\" height=\"0\" style=\"position:absolute\"><defs>\
         <circle id=\"m-ok\" cx=\"7\" cy=\"7\" r=\"5\"/>\
         <rect id=\"m-fail\" x=\"2\" y=\"2\" width=\"10\" height=\"10\"/>\
         <polygon id=\"m-back\" points=\"7,1 13,13 1,13\"/>\
         <rect id=\"m-other\" x=\"3\" y=\"5\" width=\"8\" height=\"4\"/></defs></svg>",
    );
    let _ = write!(
        out,
        "<h1>Fleet status</h1><p class=\"meta\">{} · {} · stale after {} s</p>",
        esc(&status.server_root),
        esc(&status.time),
        status.stale_after_seconds
    );
    // The filters' anchors: siblings before the table, so `:target ~ table` reaches it.
    for s in Status::ALL {
        let _ = write!(out, "<span id=\"only-{}\"></span>", s.name());
    }
    out.push_str("<p class=\"chips\">");
    for s in Status::ALL {
        let count = status.totals.get(s.name()).copied().unwrap_or(0);
        if count > 0 {
            let _ = write!(
                out,
                "<a href=\"#only-{n}\" class=\"{tone}\">{n} <b>{count}</b></a>",
                n = s.name(),
                tone = tone(s)
            );
        }
    }
    let _ = write!(out, "<a href=\"#\">all <b>{n}</b></a></p>");
    out.push_str(
        "<table><thead><tr><th>Host</th><th>Status</th><th>Mode</th><th>Expected</th>\
         <th>Reported</th><th>Lag</th><th>Last seen</th><th>System</th><th>Signed by</th>\
         <th>Recent reports</th></tr></thead><tbody>",
    );
    for h in &status.hosts {
        row(&mut out, h);
    }
    out.push_str("</tbody></table>");
    if let Some(r) = rollout_state {
        rollout(&mut out, r);
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}[31m"), "a\u{FFFD}b\u{FFFD}[31m");
    }
}
