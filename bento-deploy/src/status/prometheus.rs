//! `bento status --prometheus`: the fleet's state in the Prometheus text format, for the
//! node exporter's textfile collector.

use std::fmt::Write;

use crate::status::{FleetStatus, HostStatus, Status};

/// One metric: its name, help text, and value per host (`None`: no sample for that host).
struct PerHost {
    name: &'static str,
    help: &'static str,
    value: fn(&HostStatus) -> Option<f64>,
}

const PER_HOST: [PerHost; 5] = [
    PerHost {
        name: "bento_host_up_to_date",
        help: "1 when the host reported applying the generation published for it, else 0.",
        value: |h| Some(f64::from(u8::from(h.status == Status::UpToDate))),
    },
    PerHost {
        name: "bento_host_last_report_timestamp_seconds",
        help: "When the host's newest report was made, in seconds since the epoch.",
        value: |h| timestamp(h.reported_at.as_deref()),
    },
    PerHost {
        name: "bento_host_last_seen_timestamp_seconds",
        help: "When the host last polled (its heartbeat, or its newest report when later), in seconds since the epoch.",
        value: |h| timestamp(h.seen_at.as_deref()),
    },
    PerHost {
        name: "bento_host_published_timestamp_seconds",
        help: "When the generation the host should run was published, in seconds since the epoch.",
        value: |h| timestamp(h.published.as_deref()),
    },
    PerHost {
        name: "bento_host_generation_lag",
        help:
            "Published generation minus the generation of the host's newest report (0 when never reported).",
        value: |h| h.generation_lag.map(|l| l as f64),
    },
];

/// An RFC 3339 time as seconds since the epoch.
fn timestamp(time: Option<&str>) -> Option<f64> {
    time.and_then(crate::time::parse_rfc3339).map(|t| t as f64)
}

/// The whole text: per host metrics, the one-hot state, and fleet totals.
pub fn render(status: &FleetStatus) -> String {
    let mut out = String::new();
    for metric in &PER_HOST {
        header(&mut out, metric.name, metric.help);
        for h in &status.hosts {
            if let Some(v) = (metric.value)(h) {
                let _ = writeln!(out, "{}{{host=\"{}\"}} {v}", metric.name, escape(&h.host));
            }
        }
    }
    header(
        &mut out,
        "bento_host_state",
        "The host's state as `bento status` derives it: 1 for its state, 0 for every other.",
    );
    for h in &status.hosts {
        for s in Status::ALL {
            let _ = writeln!(
                out,
                "bento_host_state{{host=\"{}\",state=\"{}\"}} {}",
                escape(&h.host),
                s.name(),
                u8::from(h.status == s)
            );
        }
    }
    header(
        &mut out,
        "bento_host_failed_check",
        "1 for a host whose current generation was rolled back for failing this health check.",
    );
    for h in &status.hosts {
        if let Some(failed) = &h.failed_check {
            let _ = writeln!(
                out,
                "bento_host_failed_check{{host=\"{}\",check=\"{}\"}} 1",
                escape(&h.host),
                // The host wrote it: no control character reaches the text.
                escape(&bento_secrets::error::escape_controls(&failed.check))
            );
        }
    }
    header(&mut out, "bento_hosts", "How many hosts are in each state.");
    for s in Status::ALL {
        let count = status.totals.get(s.name()).copied().unwrap_or(0);
        let _ = writeln!(out, "bento_hosts{{status=\"{}\"}} {count}", s.name());
    }
    out
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// A label value, escaped as the text format wants.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_label_values() {
        assert_eq!(super::escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
