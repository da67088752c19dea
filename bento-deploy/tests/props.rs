//! Property tests of the parsers that read outside input: `bento.toml`, `agent.toml`, the
//! manifest, its signature, `current`, and the reports and heartbeats `bento status` reads.
//! Arbitrary bytes, and valid documents with random edits, never panic and fail with one
//! line; what bento writes (manifest, report, heartbeat, `current`, times) parses back to
//! the same value.
//!
//! CI runs the case counts below; `bench/fuzz.sh` runs many more through `PROPTEST_CASES`.

use std::collections::BTreeMap;

use bento_deploy::agent::config::AgentConfig;
use bento_deploy::fleet::config::Config;
use bento_deploy::layout::parse_generation;
use bento_deploy::manifest::{Manifest, FORMAT};
use bento_deploy::sign::{verify, Signer};
use bento_deploy::status::{host, Options, Root};
use bento_deploy::time::{parse_rfc3339, rfc3339};
use bento_deploy::wire::heartbeat::Heartbeat;
use bento_deploy::wire::report::{Report, State};
use proptest::prelude::*;

#[path = "../../tests/support/mutation.rs"]
mod mutation;
use mutation::{cases, mutate, one_line, Edit};

const BENTO_TOML: &str = include_str!("../../bento.toml");
const AGENT_TOML: &str = "host = \"web1\"\nserver = \"sftp://web1@server:22\"\n\
    identity = \"/etc/ssh/ssh_host_ed25519_key\"\n\
    trusted_keys = [\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKQ/UUji4zvncN+E4Y2WgsnyA3nRR05ETkdiQJTYA+/c alice\"]\n\
    state_dir = \"/var/lib/bento\"\nconnect_timeout = 30\nkeep_bundles = 3\nssh_port = 22\n";

/// Snippets that matter to the formats: quotes, escapes, brackets, newlines, numbers.
fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,6}",
        prop::sample::select(vec![
            "\"",
            "'",
            "\\n",
            "\\u000a",
            "\\u0000",
            "\n",
            "=",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "#",
            "..",
            "/",
            "\u{0}",
            "-1",
            "0",
            "1e400",
            "18446744073709551616",
            "null",
            "true",
            "\"\\n\"",
            "[server]",
            "[hosts.x]",
            "host = \"a\\nb\"",
            "server = \"sftp://a\\nb\"",
            "\"host\": \"a\\nb\",",
            "\"../x\"",
            "\"/nix/store/\\n\"",
            "-----BEGIN SSH SIGNATURE-----\n",
            "AAAA",
        ])
        .prop_map(str::to_owned),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    mutation::edits(snippet())
}

fn check_config(text: &str) -> Result<(), TestCaseError> {
    if let Err(e) = Config::parse(text) {
        one_line(&e)?;
    }
    Ok(())
}

fn check_agent_config(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, bytes).unwrap();
    if let Err(e) = AgentConfig::load(&path) {
        one_line(&e)?;
    }
    Ok(())
}

fn check_manifest(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Manifest::parse(bytes) {
        Ok(m) => prop_assert_eq!(Manifest::parse(&m.to_bytes()).ok(), Some(m)),
        Err(e) => one_line(&e)?,
    }
    Ok(())
}

/// A bundle manifest: the host's files with hashes and sizes.
fn manifest() -> impl Strategy<Value = Manifest> {
    (
        "[a-z][a-z0-9-]{0,12}",
        any::<u64>(),
        any::<u64>(),
        prop::option::of("[0-9a-f]{40}"),
        prop::option::of("/nix/store/[a-z0-9]{32}-[a-z-]{1,20}"),
        prop::collection::btree_map(
            "(config|templates)/[a-z][a-z0-9._-]{0,15}",
            ("[0-9a-f]{64}", any::<u64>()),
            0..6,
        ),
    )
        .prop_map(|(host, generation, secs, git_commit, system, files)| Manifest {
            format: FORMAT,
            host: host.parse().unwrap(),
            generation,
            created: rfc3339(secs % 253_402_300_800),
            git_commit,
            system,
            previous: None,
            sizes: files.iter().map(|(p, (_, n))| (p.parse().unwrap(), *n)).collect(),
            files: files
                .iter()
                .map(|(p, (h, _))| (p.parse().unwrap(), h.parse().unwrap()))
                .collect(),
            secrets: Vec::new(),
            templates: Vec::new(),
        })
}

fn sample_manifest() -> Manifest {
    Manifest {
        format: FORMAT,
        host: "web1".parse().unwrap(),
        generation: 7,
        created: "2026-11-26T05:00:00Z".into(),
        git_commit: None,
        system: Some("/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system".into()),
        previous: None,
        files: [(
            "config/configuration.nix".parse().unwrap(),
            "ab".repeat(32).parse().unwrap(),
        )]
        .into(),
        sizes: [("config/configuration.nix".parse().unwrap(), 42)].into(),
        secrets: Vec::new(),
        templates: Vec::new(),
    }
}

/// The key that signs, and its signature of [`sample_manifest`] (made once).
fn signed() -> &'static (ssh_key::PublicKey, String) {
    static SIGNED: std::sync::OnceLock<(ssh_key::PublicKey, String)> = std::sync::OnceLock::new();
    SIGNED.get_or_init(|| {
        let key =
            ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
        let public = key.public_key().clone();
        let pem = Signer::Key(Box::new(key))
            .sign(&sample_manifest().to_bytes())
            .unwrap();
        (public, pem)
    })
}

fn check_signature(signature: &str) -> Result<(), TestCaseError> {
    let (public, _) = signed();
    let trusted = [public.clone()];
    match verify(&sample_manifest().to_bytes(), signature, &trusted) {
        // An edit that keeps the signature valid (its line breaks, say) is no bug.
        Ok(key) => prop_assert_eq!(key, public),
        Err(e) => one_line(&e)?,
    }
    Ok(())
}

fn report() -> impl Strategy<Value = Report> {
    let state = prop::sample::select(vec![
        State::Applied,
        State::SecretsUpdated,
        State::Failed,
        State::RolledBack,
        State::Refused,
        State::SelfUpdated,
        State::Interrupted,
    ]);
    (
        (any::<u64>(), any::<Option<u64>>(), state, any::<u64>()),
        (
            any::<Option<String>>(),
            any::<Option<String>>(),
            any::<Option<String>>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<Option<String>>(),
            any::<Vec<String>>(),
            any::<bool>(),
            any::<String>(),
        ),
    )
        .prop_map(
            |((generation, previous_generation, state, secs), (a, b, c), (d, bytes, error, s, k, agent))| {
                Report {
                    format: 1,
                    host: "web1".into(),
                    generation,
                    previous_generation,
                    state,
                    time: rfc3339(secs % 253_402_300_800),
                    system_before: a,
                    system_after: b,
                    system_expected: c,
                    duration_ms: d,
                    bytes,
                    error: error.clone(),
                    secrets_changed: s,
                    note: None,
                    kernel_changed: k,
                    health: error
                        .as_ref()
                        .map(|e: &String| bento_deploy::wire::report::Unhealthy {
                            check: "command: true".into(),
                            output: e.clone(),
                        }),
                    agent,
                }
            },
        )
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        any::<String>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<String>(),
        any::<Vec<String>>(),
        any::<Option<u16>>(),
    )
        .prop_map(|(host, secs, applied, agent, addresses, ssh_port)| Heartbeat {
            format: 1,
            host,
            time: rfc3339(secs % 253_402_300_800),
            applied,
            agent,
            addresses,
            ssh_port,
        })
}

/// What `bento status` makes of a host directory holding these `current`, heartbeat and
/// report bytes: never a panic, and what it could not read said in one line.
fn check_status(current: &[u8], seen: &[u8], report: &[u8]) -> Result<(), TestCaseError> {
    let root = tempfile::tempdir().unwrap();
    let logs = root.path().join("web1/logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(root.path().join("web1/current"), current).unwrap();
    std::fs::write(logs.join("seen.json"), seen).unwrap();
    std::fs::write(logs.join("report-00000007-2026-11-26T050000Z.json"), report).unwrap();
    let options = Options {
        stale_secs: 3600,
        ssh: BTreeMap::new(),
        now: 1_800_000_000,
        admins: None,
        timeline: 0,
    };
    let dir = bento_deploy::server_dir::LocalDir::open(root.path()).unwrap();
    let root = Root {
        dir: &dir,
        shown: "root",
    };
    let status = host(root, "web1", &options).unwrap();
    // (`error` is the host's own text, kept as written: the CLI escapes it when printing.)
    if let Some(problem) = &status.problem {
        one_line(problem)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn config_any_text(text in ".{0,200}") {
        check_config(&text)?;
    }

    #[test]
    fn config_edited(edits in edits()) {
        check_config(&String::from_utf8_lossy(&mutate(BENTO_TOML.as_bytes(), &edits)))?;
    }

    #[test]
    fn manifest_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_manifest(&bytes)?;
    }

    #[test]
    fn manifest_edited(edits in edits()) {
        check_manifest(&mutate(&sample_manifest().to_bytes(), &edits))?;
    }

    #[test]
    fn manifest_round_trips(m in manifest()) {
        prop_assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn current_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        let _ = parse_generation(&bytes);
    }

    #[test]
    fn current_round_trips(n in any::<u64>()) {
        prop_assert_eq!(parse_generation(format!("{n}\n").as_bytes()), Some(n));
    }

    #[test]
    fn time_round_trips(secs in 0u64..253_402_300_800) {
        prop_assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
    }

    #[test]
    fn time_any_text(text in ".{0,30}") {
        let _ = parse_rfc3339(&text);
    }

    #[test]
    fn report_round_trips(r in report()) {
        let json = serde_json::to_vec(&r).unwrap();
        prop_assert_eq!(serde_json::from_slice::<Report>(&json).unwrap(), r);
    }

    #[test]
    fn heartbeat_round_trips(h in heartbeat()) {
        let json = serde_json::to_vec(&h).unwrap();
        prop_assert_eq!(serde_json::from_slice::<Heartbeat>(&json).unwrap(), h);
    }
}

proptest! {
    // Each case signs nothing but verifies (a few hundred µs of ed25519).
    #![proptest_config(cases(500))]

    #[test]
    fn signature_any_text(text in ".{0,200}") {
        check_signature(&text)?;
    }

    #[test]
    fn signature_edited(edits in edits()) {
        let pem = &signed().1;
        check_signature(&String::from_utf8_lossy(&mutate(pem.as_bytes(), &edits)))?;
    }
}

proptest! {
    // Each case writes files to a temporary directory.
    #![proptest_config(cases(300))]

    #[test]
    fn agent_config_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        check_agent_config(&bytes)?;
    }

    #[test]
    fn agent_config_edited(edits in edits()) {
        check_agent_config(&mutate(AGENT_TOML.as_bytes(), &edits))?;
    }

    #[test]
    fn status_reads_any_files(
        current in prop::collection::vec(any::<u8>(), 0..12),
        seen in prop::collection::vec(any::<u8>(), 0..120),
        report in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        check_status(&current, &seen, &report)?;
    }

    #[test]
    fn status_reads_edited_files(h in heartbeat(), r in report(), e1 in edits(), e2 in edits()) {
        let seen = mutate(&serde_json::to_vec(&Heartbeat { host: "web1".into(), ..h }).unwrap(), &e1);
        let report = mutate(&serde_json::to_vec(&r).unwrap(), &e2);
        check_status(b"7\n", &seen, &report)?;
    }
}

#[test]
fn the_seeds_parse() {
    Config::parse(BENTO_TOML).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), AGENT_TOML).unwrap();
    AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
    let (public, pem) = signed();
    verify(&sample_manifest().to_bytes(), pem, std::slice::from_ref(public)).unwrap();
    Manifest::parse(&sample_manifest().to_bytes()).unwrap();
}

// Regressions the properties found: a quoted "\n" in the input reached an error message.

#[test]
fn a_line_break_in_a_manifest_key_stays_on_the_error_line() {
    let text = String::from_utf8(sample_manifest().to_bytes()).unwrap();
    let unknown = text.replace("\"git_commit\"", "\"\\ngit_commit\"");
    let e = Manifest::parse(unknown.as_bytes()).unwrap_err().to_string();
    assert!(
        !e.contains('\n') && e.contains("unknown field `\\ngit_commit`"),
        "{e}"
    );
    let path = text.replace(
        "\"config/configuration.nix\": \"",
        "\"config/\\nconfiguration.nix\": \"x",
    );
    let e = Manifest::parse(path.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        e,
        "manifest.json: config/\\nconfiguration.nix: sha256 is not 64 lowercase hex digits"
    );
}

#[test]
fn a_line_break_in_a_trusted_key_stays_on_the_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, AGENT_TOML.replace("AAAAC3", "AAAA\\nC3")).unwrap();
    let e = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(
        !e.contains('\n') && e.contains(":4: trusted_keys: `ssh-ed25519 AAAA\\nC3"),
        "{e}"
    );
}
