//! Object storage as the server, against a real Garage on loopback: per-host buckets and
//! keys, the whole loop, and every way a host's key could reach what is not its own,
//! refused by the store itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::agent::Loop;
use crate::harness::ok;
use crate::sshd::free_port;

/// The admin's key in the store (Garage key ids are `GK` + 24 hex digits).
const ADMIN_KEY: (&str, &str) = (
    "GK00000000000000000000ad01",
    "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
);

/// A host's key in the store.
fn host_key(host: &str) -> (String, String) {
    let n = host.bytes().fold(0u64, |a, b| a * 31 + u64::from(b)) % 1_000_000;
    (format!("GK00000000000000000{n:06}0"), format!("{n:064}"))
}

/// `garage` on PATH; without it, the test is skipped with a line saying so (in CI, where
/// `CI` is set, it fails).
pub(crate) fn needs_garage() -> bool {
    let found = Command::new("sh")
        .args(["-c", "command -v garage"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs `garage` on PATH (scripts/test provides it)"
    );
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    eprintln!("SKIPPED (needs garage): {test}");
    false
}

/// One Garage node on loopback, in its own directory; stopped when dropped.
pub(crate) struct Garage {
    dir: PathBuf,
    config: PathBuf,
    /// The S3 API's port.
    pub(crate) s3_port: u16,
    /// The RPC port, where the other nodes of a cluster connect.
    pub(crate) rpc_port: u16,
    child: Option<Child>,
}

impl Garage {
    /// A node with `replication` copies in `dir`, sharing `secret` with its cluster.
    fn node(dir: &Path, replication: u32, secret: &str) -> Garage {
        std::fs::create_dir_all(dir).unwrap();
        let (s3_port, rpc_port, admin_port) = (free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = {replication}\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\nadmin_token = \"t\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut g = Garage {
            dir: dir.to_path_buf(),
            config,
            s3_port,
            rpc_port,
            child: None,
        };
        g.start();
        g
    }

    /// Starts (or restarts) the node's server, and waits until it answers.
    pub(crate) fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.cli(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "garage did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Restarts the node and has `peer` connect to it again (as Garage would on its own,
    /// in time).
    pub(crate) fn restart_beside(&mut self, peer: &Garage) {
        self.start();
        let id = self.node_id();
        let id = id.split('@').next().unwrap().to_owned();
        ok(&peer.cli(&["node", "connect", &format!("{id}@127.0.0.1:{}", self.rpc_port)]));
    }

    /// Stops the node's server at once (SIGKILL).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `garage -c <config> ARGS`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new("garage")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn node_id(&self) -> String {
        let out = ok(&self.cli(&["node", "id", "-q"]));
        out.trim().to_owned()
    }

    /// A single node, its layout applied.
    pub(crate) fn single(dir: &Path) -> Garage {
        let g = Garage::node(dir, 1, &"5e".repeat(32));
        let id = g.node_id();
        let short = &id[..16];
        ok(&g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short]));
        ok(&g.cli(&["layout", "apply", "--version", "1"]));
        g
    }

    /// Three nodes with replication 3 on loopback, connected, their layout applied.
    pub(crate) fn cluster(dir: &Path) -> Vec<Garage> {
        let secret = "7c".repeat(32);
        let nodes: Vec<Garage> = (0..3)
            .map(|i| Garage::node(&dir.join(format!("node{i}")), 3, &secret))
            .collect();
        for other in &nodes[1..] {
            let id = other.node_id();
            let id = id.split('@').next().unwrap();
            ok(&nodes[0].cli(&["node", "connect", &format!("{id}@127.0.0.1:{}", other.rpc_port)]));
        }
        for (i, node) in nodes.iter().enumerate() {
            let id = node.node_id();
            ok(&nodes[0].cli(&["layout", "assign", "-z", &format!("dc{i}"), "-c", "1G", &id[..16]]));
        }
        ok(&nodes[0].cli(&["layout", "apply", "--version", "1"]));
        nodes
    }

    /// The endpoint of its S3 API.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Runs what `bento server setup --s3` prints for the fleet of `l` on the store of
    /// `url`, a `key create` made a `key import` of the test's known key (Garage makes up
    /// keys; the tests need to know them).
    pub(crate) fn set_up_as_printed(&self, l: &Loop, url: &str) {
        let printed = ok(&l.fleet.bento(&["server", "setup", "--s3", "--target", url]));
        for line in printed.lines().map(|l| l.split('#').next().unwrap().trim()) {
            let Some(args) = line.strip_prefix("garage ") else {
                assert!(line.is_empty(), "not a garage command: {line}");
                continue;
            };
            let args: Vec<&str> = args.split_whitespace().collect();
            match args[..] {
                ["key", "create", name] => {
                    let (id, secret) = match name.strip_prefix("bento-") {
                        Some("admin") => (ADMIN_KEY.0.to_owned(), ADMIN_KEY.1.to_owned()),
                        Some(host) => host_key(host),
                        None => panic!("a key not named bento-…: {line}"),
                    };
                    ok(&self.cli(&["key", "import", "--yes", "-n", name, &id, &secret]));
                }
                _ => {
                    ok(&self.cli(&args));
                }
            }
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The fleet's `s3://` URL on `garage`.
pub(crate) fn url(garage: &Garage) -> String {
    format!(
        "s3://bento-{{host}}?endpoint={}&region=garage&logs=bento-{{host}}-logs",
        garage.endpoint()
    )
}

/// `bento ARGS` as the admin, with the admin's store key in the environment.
pub(crate) fn admin(l: &Loop, args: &[&str]) -> Output {
    l.fleet
        .cmd(args)
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
        .output()
        .unwrap()
}

/// A credentials file of `host`'s key, 0600, in `dir`.
fn credentials_file(dir: &Path, host: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let (id, secret) = host_key(host);
    let path = dir.join(format!("{host}-s3-credentials"));
    std::fs::write(
        &path,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// One Garage node for the fleet of `l`, set up as `bento server setup --s3` says, and
/// the fleet's URL on it.
fn store(l: &Loop) -> (Garage, String) {
    let garage = Garage::single(&l.fleet.home.join("garage"));
    garage.set_up_as_printed(l, &url(&garage));
    let target = url(&garage);
    (garage, target)
}

/// A store set up as printed, the fleet deployed into it, and web1's agent pointed at its
/// place and run once: the generation applied.
fn applied_from_store(l: &Loop) -> (Garage, String) {
    let (garage, target) = store(l);
    ok(&admin(l, &["deploy", "--target", &target]));
    agent_on_s3(l, &garage);
    ok(&l.agent(&[]));
    (garage, target)
}

/// Points web1's agent at the store.
fn agent_on_s3(l: &Loop, garage: &Garage) {
    let text = std::fs::read_to_string(&l.config).unwrap();
    let file_server = format!("server = \"file://{}\"", l.server.display());
    assert!(text.contains(&file_server), "{text}");
    let creds = credentials_file(&l.base(), "web1");
    let text = text.replace(
        &file_server,
        &format!(
            "server = \"{}\"\ns3_credentials = \"{}\"",
            url(garage),
            creds.display()
        ),
    );
    std::fs::write(&l.config, text).unwrap();
}

/// db1's agent on the store: its own key, state and secrets dirs, a rebuild that records
/// its call and activates the bundle's secrets. Returns its agent.toml.
fn db1_agent(l: &Loop, garage: &Garage) -> PathBuf {
    let base = l.fleet.home.join("db1-host");
    std::fs::create_dir_all(&base).unwrap();
    let bento = env!("CARGO_BIN_EXE_bento");
    let (state, secrets) = (base.join("var-bento"), base.join("run-bento"));
    let activate = format!(
        "{bento} activate --no-mount --bundle {} -i {} --root {}",
        state.join("current").display(),
        l.keys.db1.display(),
        secrets.display()
    );
    let rebuild = l.fleet.script(
        "db1-rebuild",
        &format!("echo \"rebuild $*\" >> {}/calls\nexec {activate}", base.display()),
    );
    let config = base.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"db1\"\nserver = \"{url}\"\ns3_credentials = \"{creds}\"\nidentity = \"{key}\"\n\
             trusted_keys = [\"{admin}\"]\nstate_dir = \"{state}\"\nsecrets_root = \"{secrets}\"\n\
             rebuild = \"{rebuild} switch\"\nrollback = \"{rebuild} switch --rollback\"\n\
             activate = \"{activate}\"\ncurrent_system = \"{base}/current-system\"\n\
             booted_system = \"{base}/booted\"\nconnect_timeout = 3\n",
            url = url(garage),
            creds = credentials_file(&base, "db1").display(),
            key = l.keys.db1.display(),
            admin = crate::harness::pub_line(&l.fleet.keys.join("admin")),
            state = state.display(),
            secrets = secrets.display(),
            rebuild = rebuild.display(),
            base = base.display(),
        ),
    )
    .unwrap();
    config
}

/// A client of the store as `key`, for what a host could try with its own credentials.
fn as_key(garage: &Garage, key: (&str, &str)) -> StoreAs {
    StoreAs {
        endpoint: garage.endpoint(),
        key: (key.0.to_owned(), key.1.to_owned()),
    }
}

/// Raw requests to the store, signed with one key.
struct StoreAs {
    endpoint: String,
    key: (String, String),
}

impl StoreAs {
    fn bucket(&self, name: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(
            self.endpoint.parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            name.to_owned(),
            "garage",
        )
        .unwrap()
    }

    fn creds(&self) -> rusty_s3::Credentials {
        rusty_s3::Credentials::new(self.key.0.clone(), self.key.1.clone())
    }

    /// The HTTP status of a GET of `key` in `bucket`.
    fn get(&self, bucket: &str, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .get_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(60));
        status(ureq_agent().get(url.as_str()).call())
    }

    /// The HTTP status of a PUT of `body` as `key` in `bucket`.
    fn put(&self, bucket: &str, key: &str, body: &[u8]) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .put_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(60));
        status(ureq_agent().put(url.as_str()).send(body))
    }

    /// The HTTP status of a DELETE of `key` in `bucket`.
    fn delete(&self, bucket: &str, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .delete_object(Some(&self.creds()), key)
            .sign(Duration::from_secs(60));
        status(ureq_agent().delete(url.as_str()).call())
    }

    /// The HTTP status of a listing of `bucket`.
    fn list(&self, bucket: &str) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .list_objects_v2(Some(&self.creds()))
            .sign(Duration::from_secs(60));
        status(ureq_agent().get(url.as_str()).call())
    }
}

fn ureq_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn status(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> u16 {
    r.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// The whole loop on one Garage node: deploy, web1's agent pulls and applies, a secret
/// change, status and log read from the store; then each thing web1's key must not do.
#[test]
fn the_whole_loop_runs_on_object_storage_and_the_store_keeps_hosts_apart() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let (mut garage, target) = store(&l);
    let out = admin(&l, &["deploy", "--target", &target]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    agent_on_s3(&l, &garage);
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert!(l.calls().contains("nixos-rebuild switch"), "{}", l.calls());
    assert_eq!(l.secret("db-password"), "v1 of db-password");
    // db1's agent, with db1's own key, takes db1's bundle.
    let db1 = db1_agent(&l, &garage);
    let out = l
        .fleet
        .bento(&["agent", "--once", "--json", "--config", crate::harness::s(&db1)]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(
        std::fs::read_to_string(l.fleet.home.join("db1-host/run-bento/secrets/db-password")).unwrap(),
        "v1 of db-password"
    );

    // A secret changes: a new generation, only the secrets activated.
    ok(&l
        .fleet
        .bento_stdin(&["secret", "edit", "db-password"], b"v2 of db-password"));
    ok(&admin(&l, &["deploy", "--target", &target]));
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "secrets-updated", "{report}");
    assert_eq!(l.secret("db-password"), "v2 of db-password");
    // Unchanged: a deploy that only reads.
    let out = admin(&l, &["deploy", "--target", &target, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["changed"] == false),
        "{v}"
    );

    // Status and log read the store.
    let out = admin(&l, &["status", "--json", "--target", &target]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let web1 = crate::status::host(&doc, "web1");
    assert_eq!(web1["status"], "up-to-date", "{doc}");
    assert_eq!(web1["expected_generation"], 2);
    assert_eq!(web1["signers"], serde_json::json!(["admin"]));
    // db1 has not taken the new generation yet.
    assert_eq!(crate::status::host(&doc, "db1")["status"], "pending", "{doc}");
    let out = admin(&l, &["log", "web1", "--target", &target]);
    let text = ok(&out);
    assert!(
        text.contains("web1: 2 generations, every link verified"),
        "{text}"
    );

    // web1's key: its own bundle yes; anything else of the store, refused by the store.
    let web1_key = host_key("web1");
    let web1_store = as_key(&garage, (&web1_key.0, &web1_key.1));
    assert_eq!(web1_store.get("bento-web1", "current"), 200);
    assert_eq!(
        web1_store.get("bento-db1", "current"),
        403,
        "another host's bundle"
    );
    assert_eq!(
        web1_store.get("bento-db1-logs", "seen.json"),
        403,
        "another host's logs"
    );
    assert_eq!(
        web1_store.put("bento-web1", "current", b"1\n"),
        403,
        "overwrite current"
    );
    assert_eq!(web1_store.delete("bento-web1", "current"), 403, "delete current");
    assert_eq!(
        web1_store.put("bento-web1", "generations/9/manifest.json", b"{}"),
        403,
        "plant a generation"
    );
    assert_eq!(
        web1_store.put("bento-db1-logs", "report.json", b"{}"),
        403,
        "write db1's logs"
    );
    assert_eq!(web1_store.list("bento-db1"), 403, "list another host's bucket");
    assert_eq!(
        web1_store.put("bento-web1-logs", "x.json", b"{}"),
        200,
        "its own logs"
    );
    garage.kill();
}

/// The server lost after a switch, on object storage: the rebuild takes web1's read access
/// away (as a lost server or a bad switch would), the agent cannot read its place, rolls
/// back and says so; given back, the next run applies the generation.
#[test]
fn a_host_that_loses_the_store_after_switching_rolls_back() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let (garage, target) = applied_from_store(&l);
    // The next rebuild takes the store away from the host.
    let script = l.fleet.keys.join("nixos-rebuild");
    let rebuild = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        rebuild.replacen(
            "case \"$*\" in *--rollback*) exit 0;; esac",
            &format!(
                "case \"$*\" in *--rollback*) exit 0;; esac\n[ -e {base}/lose-store ] && garage -c {config} bucket deny --read bento-web1 --key bento-web1 >/dev/null",
                base = l.base().display(),
                config = garage.config.display(),
            ),
            1,
        ),
    )
    .unwrap();
    std::fs::write(l.base().join("lose-store"), "").unwrap();
    change_config(&l, 2);
    ok(&admin(&l, &["deploy", "--target", &target]));
    let (out, report) = l.agent_json();
    assert!(!out.status.success());
    assert_eq!(report["state"], "rolled-back", "{report}");
    assert!(l.calls().contains("--rollback"), "{}", l.calls());
    // The report reached the host's logs (it may still write there).
    let out = admin(&l, &["status", "--json", "--target", &target]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        crate::status::host(&doc, "web1")["status"],
        "rolled-back",
        "{doc}"
    );

    // Given back: the generation is not retried on its own (it failed), but a new one is.
    std::fs::remove_file(l.base().join("lose-store")).unwrap();
    ok(&garage.cli(&["bucket", "allow", "--read", "bento-web1", "--key", "bento-web1"]));
    change_config(&l, 3);
    ok(&admin(&l, &["deploy", "--target", &target]));
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["generation"], 3);
}

/// A deploy killed (SIGKILL) while it uploads leaves `current` naming a complete
/// generation: the host stays where it was or takes the new one whole; the next deploy
/// completes.
#[test]
fn a_deploy_killed_mid_upload_leaves_current_whole() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let (_garage, target) = applied_from_store(&l);
    // A bigger configuration, so the upload takes a while; killed at growing moments.
    let big: String = (0..4000).map(|i| format!("# line {i} of padding\n")).collect();
    let mut cut = 0;
    for (round, after_ms) in [5u64, 20, 60, 150].into_iter().enumerate() {
        std::fs::write(
            l.fleet.path("hosts/web1/configuration.nix"),
            format!("{{ networking.hostName = \"web1\"; }}\n# round {round}\n{big}"),
        )
        .unwrap();
        let mut child = l
            .fleet
            .cmd(&["deploy", "--target", &target])
            .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
            .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        if child.try_wait().unwrap().is_none() {
            cut += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Whatever `current` names, the host takes it whole (or has it already).
        let out = l.agent(&["--json"]);
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(cut > 0, "no deploy was cut short: kill them sooner");
    // The next deploy completes, and the host applies it.
    change_config(&l, 99);
    ok(&admin(&l, &["deploy", "--target", &target]));
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
}

/// Three nodes, replication 3: a node killed while a deploy uploads and while a host polls;
/// both complete; restarted, it has everything.
#[test]
fn a_three_node_store_serves_with_one_node_down() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let mut nodes = Garage::cluster(&l.fleet.home.join("garage"));
    nodes[0].set_up_as_printed(&l, &url(&nodes[0]));
    let target = url(&nodes[0]);
    ok(&admin(&l, &["deploy", "--target", &target]));
    agent_on_s3(&l, &nodes[0]);
    ok(&l.agent(&[]));

    // A node dies while a deploy uploads: the deploy completes on the other two.
    change_config(&l, 2);
    let child = l
        .fleet
        .cmd(&["deploy", "--target", &target])
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(30));
    nodes[1].kill();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (first, rest) = nodes.split_at_mut(1);
    rest[0].restart_beside(&first[0]);
    // Another dies while the host polls: it applies the new generation.
    let poll = l
        .fleet
        .cmd(&[
            "agent",
            "--once",
            "--json",
            "--config",
            crate::harness::s(&l.config),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    nodes[2].kill();
    let out = poll.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["generation"], 2);

    // Restarted, the node that was down serves everything, read through its own endpoint.
    let (first, rest) = nodes.split_at_mut(1);
    rest[1].restart_beside(&first[0]);
    let web1_key = host_key("web1");
    let through_two = as_key(&nodes[2], (&web1_key.0, &web1_key.1));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = through_two.get("bento-web1", "generations/2/manifest.json");
        if got == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 2 never served generation 2: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(through_two.get("bento-web1", "current"), 200);
}

/// web1's configuration, numbered `n`.
fn change_config(l: &Loop, n: u32) {
    std::fs::write(
        l.fleet.path("hosts/web1/configuration.nix"),
        format!("{{ networking.hostName = \"web1\"; boot.kernelParams = [ \"n={n}\" ]; }}\n"),
    )
    .unwrap();
}

/// The two-person rule on object storage: a deploy is pending in the store until a second
/// admin approves it there; the host applies it only then, and the history names both.
#[test]
fn a_pending_deploy_is_approved_in_the_store() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let (garage, target) = store(&l);
    let second = l.fleet.ssh_key("second-admin", "ed25519", "");
    l.fleet.add_admin("second", &crate::harness::pub_line(&second));
    let toml = l.fleet.path("bento.toml");
    let first = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("[deploy]\n", "[deploy]\nrequired_signatures = 2\n");
    std::fs::write(&toml, &first).unwrap();
    agent_on_s3(&l, &garage);
    l.require_two_signatures(&second);
    ok(&admin(&l, &["deploy", "--target", &target]));
    let web1_key = host_key("web1");
    let web1_store = as_key(&garage, (&web1_key.0, &web1_key.1));
    assert_eq!(
        web1_store.get("bento-web1", "current"),
        404,
        "pending: no current yet"
    );
    ok(&l.agent(&[]));
    assert!(l.calls().is_empty(), "applied before approval");

    std::fs::write(
        &toml,
        first.replace(
            &format!("signing_key = \"{}\"", l.fleet.keys.join("admin").display()),
            &format!("signing_key = \"{}\"", second.display()),
        ),
    )
    .unwrap();
    let out = admin(&l, &["approve", "web1", "--yes", "--target", &target]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(web1_store.get("bento-web1", "current"), 200);
    let (out, report) = l.agent_json();
    ok(&out);
    assert_eq!(report["state"], "applied", "{report}");
    let out = admin(&l, &["log", "web1", "--json", "--target", &target]);
    let doc: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        doc["hosts"][0]["generations"][0]["signers"],
        serde_json::json!(["admin", "second"]),
        "{doc}"
    );
}

/// Closure mode on object storage: deploy fills the fleet cache's place and copies web1's
/// closure into web1's own place, inside the store; web1's agent, its store empty, fetches
/// the three paths from there, signed, and switches. Its key cannot read the fleet cache.
#[test]
fn a_closure_host_gets_its_closure_from_its_own_place_in_the_store() {
    use crate::closure::{closure_fleet, hash_of, set_system, NixRoot};
    if !needs_garage()
        || !crate::harness::needs_root("Nix stores of their own on /nix")
        || !crate::harness::needs_nix()
    {
        return;
    }
    let l = Loop::new();
    let (garage, target) = store(&l);
    let (admin_nix, host_nix) = (NixRoot::new(), NixRoot::new());
    agent_on_s3(&l, &garage);
    closure_fleet(&l, &admin_nix);
    let switched = l.base().join("switched");
    set_system(&l, &switched, "lib-b v1");
    ok(&admin_nix.run(&l.fleet.cmd(&["build", "web1"])));
    let mut deploy = l.fleet.cmd(&["deploy", "--target", &target]);
    deploy
        .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
        .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1);
    ok(&admin_nix.run(&deploy));
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.fleet.path(".bento/expected.json")).unwrap()).unwrap();
    let system = expected["hosts"]["web1"]["system"].as_str().unwrap().to_owned();
    let narinfo = format!("cache/{}.narinfo", hash_of(&system));

    let out = host_nix.run(&l.fleet.cmd(&[
        "agent",
        "--once",
        "--json",
        "--config",
        crate::harness::s(&l.config),
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["state"], "applied", "{report}");
    assert_eq!(report["note"], "3 store paths fetched", "{report}");
    assert_eq!(
        std::fs::read_to_string(&switched).unwrap(),
        format!("{system} switch\n")
    );

    // web1's key: its own copy of the closure, not the fleet cache, not db1's place.
    let web1_key = host_key("web1");
    let web1_store = as_key(&garage, (&web1_key.0, &web1_key.1));
    assert_eq!(web1_store.get("bento-web1", &narinfo), 200);
    let fleet_narinfo = narinfo.trim_start_matches("cache/");
    assert_eq!(
        web1_store.get("bento-cache", fleet_narinfo),
        403,
        "the fleet cache"
    );
    assert_eq!(
        web1_store.get("bento-cache", "nix-cache-info"),
        403,
        "the fleet cache"
    );
}

/// Two deploys at once, from two checkouts with different content, into a store that does
/// not refuse a second writer (Garage 2.5 ignores `If-None-Match`): each checks what the
/// store holds of its generation before `current` names it, so whatever `current` names
/// after them is whole — the host applies it, round after round.
#[test]
fn two_deploys_at_once_never_leave_current_naming_a_mixed_generation() {
    if !needs_garage() {
        return;
    }
    let l = Loop::new();
    let (_garage, target) = applied_from_store(&l);
    let other = l.fleet.home.join("other-checkout");
    ok(&Command::new("cp")
        .arg("-a")
        .arg(l.fleet.path(""))
        .arg(&other)
        .output()
        .unwrap());
    let mut refused = 0;
    for round in 0..6 {
        change_config(&l, 100 + round);
        std::fs::write(
            other.join("hosts/web1/configuration.nix"),
            format!("{{ networking.hostName = \"web1\"; time.timeZone = \"UTC\"; # {round}\n}}\n"),
        )
        .unwrap();
        let spawn = |fleet: &Path| {
            l.fleet
                .cmd(&["--fleet", crate::harness::s(fleet), "deploy", "--target", &target])
                .env("AWS_ACCESS_KEY_ID", ADMIN_KEY.0)
                .env("AWS_SECRET_ACCESS_KEY", ADMIN_KEY.1)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(&l.fleet.path("")), spawn(&other));
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            let said = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                assert!(said.contains("changed while this deploy wrote it"), "{said}");
                refused += 1;
            }
        }
        let out = l.agent(&["--json"]);
        assert!(
            out.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("deploys that saw another one's files and left current alone: {refused}");
}
