//! `[health]` in agent.toml: after a switch (or a secrets-only update) the agent checks the
//! host, and a check that does not pass in time rolls the generation back — the system
//! with the configured rollback, the secrets to the previous bundle's — reports
//! `rolled-back` naming the check, and is not tried again; a newer generation is.

use crate::agent::Loop;
use crate::harness::{ok, s};

/// web1's agent with a `[health]` section (`body`) appended to its agent.toml.
fn with_health(l: &Loop, body: &str) {
    let mut text = std::fs::read_to_string(&l.config).unwrap();
    text.push_str("[health]\n");
    text.push_str(body);
    std::fs::write(&l.config, text).unwrap();
}

/// A check that fails, printing `service down: 503`, while `<base>/unhealthy` exists.
fn flag_check(l: &Loop) -> String {
    let flag = l.base().join("unhealthy");
    format!(
        "commands = [[\"sh\", \"-c\", \"test ! -e {} || {{ echo 'service down: 503'; exit 1; }}\"]]\n\
         settle = \"1s\"\ntimeout = \"2s\"\n",
        flag.display()
    )
}

/// `host`'s entry of `bento status --json` of the Loop's server.
fn status_of(l: &Loop, host: &str) -> serde_json::Value {
    crate::remote::status_of(l, &l.server, host)
}

#[test]
fn a_failing_health_check_rolls_back_names_the_check_and_is_not_tried_again() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    with_health(&l, &flag_check(&l));
    std::fs::write(l.base().join("unhealthy"), "").unwrap();
    l.deploy_config("{ networking.hostName = \"web1\"; networking.firewall.enable = true; }\n");

    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(report["generation"], 2);
    let check = report["health"]["check"].as_str().unwrap();
    assert!(check.starts_with("command: sh -c 'test ! -e "), "{check}");
    assert_eq!(report["health"]["output"], "service down: 503");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("health check failed") && error.contains("service down: 503"),
        "{error}"
    );
    let calls = l.calls();
    let rebuilds: Vec<&str> = calls.lines().collect();
    assert_eq!(rebuilds.len(), 3, "{calls}");
    assert!(rebuilds[2].ends_with("--rollback"), "{calls}");
    // The previous bundle is current again.
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        std::path::Path::new("bundles/1")
    );
    // Status: rolled back for its health, the check named in --json and --prometheus.
    let web1 = status_of(&l, "web1");
    assert_eq!(web1["status"], "unhealthy-rolled-back", "{web1}");
    assert_eq!(web1["failed_check"]["output"], "service down: 503");
    let prom = l
        .fleet
        .bento(&["status", "--prometheus", "--server-root", s(&l.server)]);
    let prom = String::from_utf8_lossy(&prom.stdout);
    assert!(
        prom.lines().any(
            |l| l.starts_with("bento_host_failed_check{host=\"web1\",check=\"command: sh -c")
                && l.ends_with(" 1")
        ),
        "{prom}"
    );
    assert!(
        prom.contains("bento_host_state{host=\"web1\",state=\"unhealthy-rolled-back\"} 1"),
        "{prom}"
    );

    // The next poll leaves that generation alone.
    ok(&l.agent(&[]));
    assert_eq!(l.calls().lines().count(), 3, "not tried again");
    // A newer generation, healthy, is applied.
    std::fs::remove_file(l.base().join("unhealthy")).unwrap();
    l.deploy_config("{ networking.hostName = \"web1\"; networking.firewall.enable = false; }\n");
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert!(report.get("health").is_none(), "{report}");
    assert_eq!(status_of(&l, "web1")["status"], "up-to-date");
}

#[test]
fn a_secrets_update_that_fails_its_health_check_puts_the_previous_secrets_back() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    assert_eq!(l.secret("db-password"), "v1 of db-password");
    with_health(&l, &flag_check(&l));
    std::fs::write(l.base().join("unhealthy"), "").unwrap();
    ok(&l
        .fleet
        .bento_stdin(&["secret", "edit", "db-password"], b"v2 of db-password"));
    l.deploy();

    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(report["health"]["output"], "service down: 503");
    assert_eq!(l.secret("db-password"), "v1 of db-password");
    assert_eq!(l.calls().lines().count(), 1, "no rebuild: {}", l.calls());
}

#[test]
fn failed_units_fail_the_check_and_a_hanging_check_is_cut_at_the_deadline() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    let systemctl = l.fleet.script(
        "systemctl",
        "echo 'app.service loaded failed failed The app'\necho 'db.service loaded failed failed The db'",
    );
    with_health(
        &l,
        &format!(
            "failed_units = true\nsystemctl = \"{}\"\nsettle = \"1s\"\ntimeout = \"1s\"\n",
            systemctl.display()
        ),
    );
    l.deploy_config("{ networking.hostName = \"web1\"; services.app.enable = true; }\n");
    let (_, report) = l.agent_json();
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(report["health"]["check"], "failed units");
    assert_eq!(report["health"]["output"], "app.service, db.service");

    // A check that never ends: stopped at the run's deadline, not waited for.
    let text = std::fs::read_to_string(&l.config).unwrap();
    let before_health = text.split("[health]").next().unwrap().to_owned();
    std::fs::write(
        &l.config,
        before_health.replace("connect_timeout = 3", "connect_timeout = 3\nrun_timeout = 6"),
    )
    .unwrap();
    with_health(
        &l,
        "commands = [[\"sleep\", \"600\"]]\nsettle = \"1s\"\ntimeout = \"1h\"\n",
    );
    l.deploy_config("{ networking.hostName = \"web1\"; services.app.enable = false; }\n");
    let started = std::time::Instant::now();
    let (_, report) = l.agent_json();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(report["health"]["check"], "command: sleep 600");
    assert!(
        report["health"]["output"].as_str().unwrap().contains("stopped"),
        "{report}"
    );
}

/// web1's agent with `reboot = "kexec"` (the stand-in records its call and makes kernel 2
/// the booted one, as a reboot into it would), the flag health check, and a deployed
/// generation whose system brings kernel 2.
fn a_kernel_and_its_reboot_deployed(l: &Loop) {
    let reboot = l.fleet.script(
        "kexec",
        &format!(
            "echo kexec >> {calls}\nln -sfn {base}/kernel-2 {booted}",
            calls = l.calls.display(),
            base = l.base().display(),
            booted = l.base().join("booted/kernel").display()
        ),
    );
    let text = std::fs::read_to_string(&l.config).unwrap();
    let text = format!(
        "{text}reboot = \"kexec\"\nreboot_command = \"{}\"\n",
        reboot.display()
    );
    std::fs::write(&l.config, text).unwrap();
    with_health(l, &flag_check(l));
    std::fs::write(l.base().join("kernel-version"), "2").unwrap();
    l.deploy_config("{ boot.kernelPackages = 2; }\n");
}

/// A switch to a new kernel with a reboot to come: the checks run again after the reboot,
/// and only then is the generation healthy; failing then, the host goes back to the
/// generation it ran before and does not try that one again.
#[test]
fn after_a_reboot_into_a_new_kernel_the_checks_run_again() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    // The reboot: recorded, and the booted system is the new one's kernel from then on.
    a_kernel_and_its_reboot_deployed(&l);

    // Healthy before the reboot: applied, rebooting, checked again afterwards.
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["kernel_changed"], true);
    assert!(
        report["note"]
            .as_str()
            .unwrap()
            .contains("run again after the reboot"),
        "{report}"
    );
    assert!(l.calls().ends_with("kexec\n"), "{}", l.calls());
    // After the reboot the host is unwell: rolled back to generation 1, not tried again.
    std::fs::write(l.base().join("unhealthy"), "").unwrap();
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert_eq!(report["generation"], 2);
    assert_eq!(report["health"]["output"], "service down: 503");
    assert!(
        l.calls().lines().any(|c| c.ends_with("--rollback")),
        "{}",
        l.calls()
    );
    assert_eq!(
        std::fs::read_link(l.state.join("current")).unwrap(),
        std::path::Path::new("bundles/1")
    );
    let calls = l.calls().lines().count();
    ok(&l.agent(&[]));
    assert_eq!(l.calls().lines().count(), calls, "generation 2 not tried again");
    assert_eq!(status_of(&l, "web1")["status"], "unhealthy-rolled-back");
}

/// The same reboot, healthy afterwards: reported applied after the reboot.
#[test]
fn a_host_healthy_after_its_reboot_reports_so() {
    let l = Loop::new();
    l.deploy();
    ok(&l.agent(&[]));
    a_kernel_and_its_reboot_deployed(&l);
    let (out, _) = l.agent_json();
    ok(&out);
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["note"], "healthy after the reboot into its new kernel");
    // And then up to date, nothing more to check.
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "up-to-date", "{report}");
}
