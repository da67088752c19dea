//! Templates: published as text (never rendered on the server or in a bundle), rendered at
//! activation into the RAM generation with owner, group, mode and `path`; a changed secret
//! re-renders and restarts or reloads only the units concerned; a failed secret keeps the
//! last good rendering; `verify` and `deploy` refuse a template a host could not render.

use std::path::{Path, PathBuf};

use crate::activate::{in_namespace, require_root, text};
use crate::harness::{example, fails, ok, s, Fleet, Keys};

const DB: &str = "db-PLAINTEXT-4f1c";
const API_1: &str = "api-PLAINTEXT-one";
const API_2: &str = "api-PLAINTEXT-two";
const OTHER: &str = "other-PLAINTEXT";

/// Where app-env's `path` link goes: a directory only root can write (a tmpfs the tests
/// mount on /mnt in their private namespace), as activation requires.
const APP_ENV_LINK: &str = "/mnt/bento-etc/app.env";

fn rules() -> String {
    format!(
        r#"admins = ["alice"]

[groups]
web = ["web1"]

[secrets.db-password]
recipients = ["@web", "db1"]
reload_units = ["db-reload.service"]

[secrets.api]
recipients = ["web1"]

[secrets.other]
recipients = ["web1"]
restart_units = ["other.service"]

[templates.app-env]
hosts = ["@web"]
content = """
DATABASE_URL=postgres://app:{{{{ secrets.db-password }}}}@db1/app
API={{{{secrets.api}}}}
"""
owner = "daemon"
group = "bentotest"
mode = "0440"
path = "{link}"
restart_units = ["app.service"]
reload_units = ["proxy.service"]

[templates.api-conf]
hosts = ["web1"]
file = "templates/api.conf"
restart_units = ["api.service"]
"#,
        link = APP_ENV_LINK
    )
}

/// A deployable fleet with two templates, a fake systemctl recording its calls, and a
/// server root.
struct Setup {
    fleet: Fleet,
    keys: Keys,
    bin: PathBuf,
    server: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        require_root();
        let (fleet, keys) = example();
        fleet.rules(&rules());
        std::fs::create_dir_all(fleet.path("templates")).unwrap();
        std::fs::write(fleet.path("templates/api.conf"), "token = {{ secrets.api }}\n").unwrap();
        for (name, value) in [("db-password", DB), ("api", API_1), ("other", OTHER)] {
            ok(&fleet.bento_stdin(&["secret", "edit", name], value.as_bytes()));
        }
        for host in ["web1", "db1"] {
            let dir = fleet.path(&format!("hosts/{host}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("configuration.nix"), "{ }\n").unwrap();
        }
        fleet.signing_admin();
        let bin = fleet.home.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let calls = fleet.home.join("systemctl.calls");
        let fake = bin.join("systemctl");
        std::fs::write(&fake, format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display())).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let server = fleet.home.parent().unwrap().join("server");
        Setup {
            fleet,
            keys,
            bin,
            server,
        }
    }

    fn deploy(&self) -> String {
        ok(&self.fleet.bento(&["deploy", "--server-root", s(&self.server)]))
    }

    fn generation(&self, host: &str, g: u64) -> PathBuf {
        self.server.join(format!("{host}/generations/{g}"))
    }

    /// The activation of `bundle` as a line of the namespace script, then a separator in
    /// the systemctl record.
    fn activate(&self, bundle: &Path) -> String {
        format!(
            "$BENTO activate --bundle {} -i {} --root {}/run || echo \"activate failed: $?\"\necho -- >> systemctl.calls\n",
            bundle.display(),
            s(&self.keys.web1),
            self.fleet.home.display()
        )
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn templates_render_into_the_ram_generation_and_rerender_when_a_secret_changes() {
    if !crate::harness::needs_root("mounts RAM filesystems and sets owners") {
        return;
    }
    let t = Setup::new();
    t.deploy();
    // The bundle carries the text with its placeholders; no plaintext anywhere on the server.
    let gen1 = t.generation("web1", 1);
    let text1 = std::fs::read_to_string(gen1.join("templates/app-env")).unwrap();
    assert!(
        text1.contains("postgres://app:{{ secrets.db-password }}@db1/app"),
        "{text1}"
    );
    let manifest = std::fs::read_to_string(gen1.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"templates\": [") && manifest.contains("\"file\": \"templates/api-conf\""));
    assert!(
        !t.generation("db1", 1).join("templates").exists(),
        "db1 renders no template"
    );

    ok(&t.fleet.bento_stdin(&["secret", "edit", "api"], API_2.as_bytes()));
    t.deploy();
    ok(&t
        .fleet
        .bento_stdin(&["secret", "edit", "other"], b"other, changed"));
    t.deploy();
    for file in files_under(&t.server) {
        let bytes = std::fs::read(&file).unwrap();
        for plain in [DB, API_1, API_2, OTHER] {
            assert!(
                !bytes.windows(plain.len()).any(|w| w == plain.as_bytes()),
                "{} holds {plain}",
                file.display()
            );
        }
    }

    let home = &t.fleet.home;
    let mut script = String::from(
        "cp /etc/group group.private && echo 'bentotest:x:4242:' >> group.private\n\
         mount --bind group.private /etc/group\n\
         mount -t tmpfs -o mode=0755 links /mnt\n",
    );
    script.push_str(&t.activate(&gen1));
    script.push_str(&format!(
        "stat -c '%U %G %a' run/templates/app-env\nreadlink run/templates {APP_ENV_LINK}\n\
         stat -f -c 'fs %T' $(realpath run/templates/app-env)\n\
         cat run/templates/app-env run/templates/api-conf\necho ==\n",
    ));
    script.push_str(&t.activate(&t.generation("web1", 2)));
    script.push_str("cat run/templates/app-env run/templates/api-conf\necho ==\n");
    script.push_str(&t.activate(&t.generation("web1", 3)));
    script.push_str("cat run/templates/app-env\n");
    let out = in_namespace(&t.fleet, &t.bin, &script);
    let all = text(&out);
    assert!(out.status.success() && !all.contains("activate failed"), "{all}");

    let stages: Vec<&str> = all.split("==\n").collect();
    let first = stages[0];
    assert!(first.contains("daemon bentotest 440\n"), "{first}");
    assert!(
        first.contains(&format!(
            "secrets/.templates\n{}/templates/app-env\n",
            home.join("run").display()
        )),
        "{first}"
    );
    assert!(first.contains("fs ramfs\n"), "{first}");
    assert!(
        first.contains(&format!(
            "\nDATABASE_URL=postgres://app:{DB}@db1/app\nAPI={API_1}\ntoken = {API_1}\n"
        )),
        "{first}"
    );
    assert!(first.contains("+ templates/app-env\n"), "{first}");
    assert!(
        stages[1].contains(&format!("API={API_2}\ntoken = {API_2}\n")),
        "{}",
        stages[1]
    );
    assert!(
        stages[1].contains("~ api\n~ templates/api-conf\n~ templates/app-env\n"),
        "{}",
        stages[1]
    );
    assert!(stages[2].contains(&format!("API={API_2}\n")), "{}", stages[2]);

    // First: everything added. Then api changed: its templates' units only (app.service
    // restarted, proxy.service reloaded; not other.service, not db-reload.service).
    // Then other changed: other.service only, the templates unchanged.
    let calls = std::fs::read_to_string(home.join("systemctl.calls")).unwrap();
    assert_eq!(
        calls,
        "try-restart api.service app.service other.service\n\
         try-reload-or-restart db-reload.service proxy.service\n--\n\
         try-restart api.service app.service\ntry-reload-or-restart proxy.service\n--\n\
         try-restart other.service\n--\n"
    );
}

#[test]
fn a_template_whose_secret_fails_keeps_its_last_good_rendering() {
    if !crate::harness::needs_root("mounts RAM filesystems and sets owners") {
        return;
    }
    let t = Setup::new();
    t.deploy();
    ok(&t.fleet.bento_stdin(&["secret", "edit", "api"], API_2.as_bytes()));
    t.deploy();
    // Generation 2 with api's ciphertext damaged (its hash no longer the manifest's).
    let broken = t.fleet.home.join("broken");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(t.generation("web1", 2))
        .arg(&broken)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::write(broken.join("secrets/api.age"), b"damaged").unwrap();

    let mut script = String::from(
        "cp /etc/group group.private && echo 'bentotest:x:4242:' >> group.private\n\
         mount --bind group.private /etc/group\n\
         mount -t tmpfs -o mode=0755 links /mnt\n",
    );
    script.push_str(&t.activate(&t.generation("web1", 1)));
    script.push_str(&t.activate(&broken));
    script.push_str("echo ==\ncat run/templates/app-env run/templates/api-conf\nstat -c '%U %G %a' run/templates/app-env\n");
    let out = in_namespace(&t.fleet, &t.bin, &script);
    let all = text(&out);
    assert!(all.contains("activate failed: 1"), "loud: {all}");
    assert!(
        all.contains("error: templates/app-env: uses secret api, which failed (previous content kept)"),
        "{all}"
    );
    assert!(
        all.contains("error: templates/api-conf: uses secret api, which failed (previous content kept)"),
        "{all}"
    );
    let after = all.split("==\n").nth(1).unwrap();
    assert!(
        after.starts_with(&format!(
            "DATABASE_URL=postgres://app:{DB}@db1/app\nAPI={API_1}\ntoken = {API_1}\n"
        )),
        "{after}"
    );
    assert!(after.contains("daemon bentotest 440"), "{after}");
}

#[test]
fn verify_and_deploy_refuse_a_template_a_host_cannot_render() {
    let (fleet, _) = example();
    let base = rules();
    fleet.rules(&base);
    std::fs::create_dir_all(fleet.path("templates")).unwrap();
    std::fs::write(
        fleet.path("templates/api.conf"),
        "token = {{ secrets.api }}\n{{ secrets.nope }}\n",
    )
    .unwrap();
    for (name, value) in [("db-password", DB), ("api", API_1), ("other", OTHER)] {
        ok(&fleet.bento_stdin(&["secret", "edit", name], value.as_bytes()));
    }
    // db1 renders app-env but cannot decrypt api; api-conf names a secret that does not exist.
    fleet.rules(&base.replace("hosts = [\"@web\"]", "hosts = [\"@web\", \"db1\"]"));
    let out = fleet.bento(&["secret", "verify"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "template api-conf: `{{ secrets.nope }}` names no secret; add [secrets.nope] or fix the placeholder\n\
         template app-env: host db1 is not a recipient of api; add db1 to api.recipients, or take it out of \
         templates.app-env.hosts\n"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fleet.bento(&["secret", "verify", "--json"]).stdout).unwrap();
    let kinds: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["template-unknown-secret", "template-host"]);

    fleet.signing_admin();
    std::fs::create_dir_all(fleet.path("hosts/web1")).unwrap();
    std::fs::write(fleet.path("hosts/web1/configuration.nix"), "{ }\n").unwrap();
    let server = fleet.home.join("server");
    let e = fails(&fleet.bento(&["deploy", "--server-root", s(&server)]));
    assert!(
        e.contains("refusing to deploy") && e.contains("host db1 is not a recipient of api"),
        "{e}"
    );
    assert!(!server.join("web1/current").exists());

    // Fixed: verify says it checked the templates too.
    fleet.rules(&base);
    std::fs::write(fleet.path("templates/api.conf"), "token = {{ secrets.api }}\n").unwrap();
    let out = fleet.bento(&["secret", "verify"]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(
            "3 secrets verified: each is encrypted to exactly its rule's recipients; 2 templates \
             checked: each names known secrets its hosts can decrypt"
        ),
        "{said}"
    );
}

#[test]
fn bad_templates_are_refused_at_load_with_their_line() {
    let (fleet, _) = example();
    let base = rules();
    std::fs::create_dir_all(fleet.path("templates")).unwrap();
    std::fs::write(fleet.path("templates/api.conf"), "ok\ntoken = {{ secrets.api }\n").unwrap();
    fleet.rules(&base);
    let e = fails(&fleet.bento(&["secret", "verify"]));
    assert_eq!(
        e,
        "error: templates/api.conf:2: a placeholder is written {{ secrets.NAME }} (NAME: letters, digits, `.`, `_`, `-`)"
    );
    fleet.rules(&base.replace(
        "file = \"templates/api.conf\"",
        "file = \"templates/api.conf\"\ncontent = \"x\"",
    ));
    let e = fails(&fleet.bento(&["secret", "verify"]));
    assert!(
        e.contains("secrets/secrets.toml:")
            && e.contains("templates.api-conf needs exactly one of `content`"),
        "{e}"
    );
    fleet.rules(&base.replace("hosts = [\"web1\"]", "hosts = [\"alice\"]"));
    let e = fails(&fleet.bento(&["secret", "verify"]));
    assert!(
        e.contains("unknown host `alice` in templates.api-conf.hosts"),
        "{e}"
    );
    fleet.rules(&base.replace("API={{secrets.api}}", "API={{ secrets.api"));
    let e = fails(&fleet.bento(&["secret", "verify"]));
    assert!(
        e.contains("templates.app-env.content: a placeholder is written"),
        "{e}"
    );
    // A template file is a secret file: no setuid, setgid or sticky bit.
    fleet.rules(&base.replace("mode = \"0440\"", "mode = \"2440\""));
    let e = fails(&fleet.bento(&["secret", "verify"]));
    assert!(
        e.contains("secrets/secrets.toml:")
            && e.contains(".mode \"2440\": setuid/setgid/sticky bits are not allowed"),
        "{e}"
    );
}
