//! `sigmirror check-config`: the shipped config parses, and every bad key is
//! reported at once with its key and a fix.

use std::fs;
use std::path::Path;
use std::process::Command;

fn check(dir: &Path, toml: &str) -> (Option<i32>, String) {
    let path = dir.join("sigmirror.toml");
    fs::write(&path, toml).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_sigmirror")).args(["check-config", "--config"]).arg(&path).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Every one of `needles` is somewhere in `out`.
fn assert_contains_all(out: &str, needles: &[&str]) {
    for needle in needles {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

const BASE: &str =
    "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[upstream]]\nregistry = \"r.test\"\nurl = \"https://r.test\"\n";

#[test]
fn every_config_file_shipped_in_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
                .args(["check-config", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stdout));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no config file in {}", dir.display());
}

#[test]
fn every_problem_is_reported_at_once_with_key_and_fix() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = r#"
listen = "not-an-address"
data_dir = "data"
tls_cert = "missing.pem"

[[upstream]]
registry = "r.test"
url = "ftp://r.test"
default = true

[[upstream]]
registry = "r.test"
url = "https://r.test/with/path"
default = true
username = "ci"

[[policy]]
name = "p"
scope = []
cosign_keys = ["nope.pub"]

[[policy]]
name = "p"
scope = ["r.test/[unclosed"]
notation = true
immutable_tags = ["[bad"]
"#;
    let (code, out) = check(dir.path(), toml);
    assert_eq!(code, Some(1), "{out}");
    assert_contains_all(
        &out,
        &[
            "listen: \"not-an-address\" is not an address",
            "tls_cert: tls_cert and tls_key must be set together",
            "upstream.default: 2 upstreams are marked default",
            "upstream[0].url: \"ftp://r.test\" does not start with https://",
            "upstream[1].registry: \"r.test\" is configured twice",
            "upstream[1].url: \"https://r.test/with/path\" must be a scheme and host[:port] only",
            "upstream[1].username: username and a password (password_file or password_env) must be set together",
            "policy[0].scope: is empty",
            "policy[0].cosign_keys[0]",
            "policy[1].name: \"p\" is also the name of policy[0]",
            "policy[1].scope[0]: \"r.test/[unclosed\" is not a glob",
            "policy[1].immutable_tags[0]",
            "policy[1].notation: is true but there is no [notation] table",
        ],
    );
    // Each problem carries its file and a fix.
    assert!(out.lines().filter(|l| l.contains("sigmirror.toml:") && l.contains("(fix: ")).count() >= 13, "{out}");
}

#[test]
fn unknown_keys_are_errors_not_silently_ignored() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out) = check(
        dir.path(),
        &format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_key = [\"typo.pub\"]\n"),
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("policy[0].cosign_key: unknown key `cosign_key`"), "{out}");
}

/// serde alone stops at the first error; every unknown key and wrong type
/// must come out of one run, each at its line and column, with the policy
/// named, and the validation of the rest must still run.
#[test]
fn several_unknown_keys_and_type_errors_are_reported_at_once_by_line_and_column() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = "listen = 5\ndata_dir = \"data\"\ncolour = true\n\n[[upstream]]\nregistry = \"r.test\"\n\
                url = \"https://r.test\"\ntimeout = 3\n\n[[policy]]\nname = \"team-a\"\nscope = [\"r.test/**\"]\n\
                mode = \"enforcee\"\ncosign_keys = \"k.pub\"\nrekor_keys = [\"missing.pub\"]\n";
    let (code, out) = check(dir.path(), toml);
    assert_eq!(code, Some(1), "{out}");
    assert_contains_all(
        &out,
        &[
            "sigmirror.toml:1:1: listen: invalid type: integer `5`, expected a string",
            "sigmirror.toml:3:1: colour: unknown key `colour`",
            "sigmirror.toml:8:1: upstream[0].timeout: unknown key `timeout`",
            "sigmirror.toml:13:1: in policy \"team-a\": policy[0].mode: unknown variant `enforcee`",
            "sigmirror.toml:14:1: in policy \"team-a\": policy[0].cosign_keys: invalid type: string \"k.pub\"",
            // Validation went on over what parsed.
            "in policy \"team-a\": policy[0].rekor_keys[0]: cannot read",
        ],
    );
    assert!(out.starts_with("6 problem(s)"), "{out}");
}

#[test]
fn plain_http_needs_its_dangerous_name_and_warns_off_loopback() {
    let dir = tempfile::TempDir::new().unwrap();
    let policy = "[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n";
    let up = |extra: &str| {
        format!("listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[upstream]]\nregistry = \"r.test\"\nurl = \"http://10.1.2.3:5000\"\n{extra}\n{policy}")
    };
    let (code, out) = check(dir.path(), &up(""));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("upstream[0].url: \"http://10.1.2.3:5000\" is plain HTTP") && out.contains("dangerous_plain_http"),
        "{out}"
    );
    let (code, out) = check(dir.path(), &up("dangerous_plain_http = true"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: ") && out.contains("plain HTTP to a host that is not loopback"), "{out}");
}

#[test]
fn legal_mistakes_are_warned_about_a_typo_registry_a_shadowed_policy_and_an_enforcer_without_authority() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = format!(
        "{BASE}[[policy]]\nname = \"first\"\nscope = [\"ghrc.io/**\", \"r.test/a/**\", \"r.test/a/?x\"]\nmode = \"audit\"\n\n\
         [[policy]]\nname = \"copy\"\nscope = [\"r.test/a/**\"]\n\n\
         [[policy]]\nname = \"narrower\"\nscope = [\"r.test/a/*\"]\nmode = \"audit\"\n"
    );
    let (code, out) = check(dir.path(), &toml);
    assert_eq!(code, Some(0), "{out}");
    assert_contains_all(
        &out,
        &[
            "in policy \"first\": policy[0].scope[0]: \"ghrc.io/**\" names registry \"ghrc.io\", which no [[upstream]] is",
            "in policy \"copy\": policy[1].scope[0]: \"r.test/a/**\" is also a scope of policy \"first\"",
            "in policy \"copy\": policy[1]: is fully shadowed",
            "in policy \"copy\": policy[1]: enforces but lists no authority",
            "in policy \"narrower\": policy[2].scope[0]: \"r.test/a/*\" only matches what \"r.test/a/**\" of policy \"first\", listed earlier, matches too",
            "in policy \"narrower\": policy[2]: is fully shadowed",
            "in policy \"first\": policy[0].scope[2]: \"r.test/a/?x\" is redundant: this policy's own scope \"r.test/a/**\"",
        ],
    );
    assert!(out.contains("7 warning(s)"), "{out}");
    assert!(!out.contains("in policy \"first\": policy[0]: is fully shadowed"), "{out}");
}

#[test]
fn docker_reference_any_is_refused_in_favour_of_the_dangerous_name() {
    let dir = tempfile::TempDir::new().unwrap();
    let p = |k: &str| format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n{k}\n");
    let (code, out) = check(dir.path(), &p("docker_reference = \"any\""));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("policy[0].docker_reference: \"any\" no longer turns the docker-reference check off"),
        "{out}"
    );
    let (code, out) = check(dir.path(), &p("dangerous_skip_docker_reference = true"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: ") && out.contains("docker-reference check is off"), "{out}");
}

#[test]
fn passwords_come_from_files_or_the_environment_never_the_pin_store_url() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out) = check(dir.path(), &format!("pin_store = \"postgres://u:hunter2@db/x\"\n{BASE}{AUDIT}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pin_store: \"postgres://…@db/x\" holds a password"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    let (code, out) =
        check(dir.path(), &format!("pin_store_password_env = \"SIGMIRROR_TEST_UNSET_VAR\"\n{BASE}{AUDIT}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("pin_store_password_env: the environment variable SIGMIRROR_TEST_UNSET_VAR is not set"),
        "{out}"
    );
}

#[test]
fn a_trust_file_that_never_ends_is_refused_not_read_forever() {
    let dir = tempfile::TempDir::new().unwrap();
    let toml = format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [\"/dev/zero\"]\n");
    let (code, out) = check(dir.path(), &toml);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("policy[0].cosign_keys[0]: /dev/zero is longer than the"), "{out}");
}

const AUDIT: &str = "[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n";

#[test]
fn a_bad_mode_is_an_error_naming_the_choices() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out) =
        check(dir.path(), &format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"permissive\"\n"));
    assert_eq!(code, Some(1));
    assert!(out.contains("unknown variant `permissive`") && out.contains("enforce") && out.contains("audit"), "{out}");
}

#[test]
fn a_config_without_policies_is_refused_because_it_would_refuse_everything() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out) = check(dir.path(), BASE);
    assert_eq!(code, Some(1));
    assert!(out.contains("no [[policy]] is configured"), "{out}");
}

#[test]
fn relative_trust_paths_resolve_against_the_config_directory() {
    let dir = tempfile::TempDir::new().unwrap();
    fs::create_dir_all(dir.path().join("trust")).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/trust/example-cosign.pub"),
        dir.path().join("trust/k.pub"),
    )
    .unwrap();
    let toml = format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [\"trust/k.pub\"]\n");
    // Run from another working directory: the path still resolves.
    let path = dir.path().join("sigmirror.toml");
    fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sigmirror"))
        .current_dir("/")
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_file_that_is_not_a_key_is_reported() {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("k.pub"), "not a key").unwrap();
    let (code, out) = check(
        dir.path(),
        &format!("{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\ncosign_keys = [\"k.pub\"]\n"),
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("policy[0].cosign_keys[0]") && out.contains("k.pub"), "{out}");
}

#[test]
fn credentials_in_an_upstream_url_are_refused_without_being_printed() {
    let dir = tempfile::TempDir::new().unwrap();
    let (code, out) = check(
        dir.path(),
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n[[upstream]]\nregistry = \"r.test\"\n\
         url = \"https://robot:s3cr3t-pw@r.test\"\n[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\n\
         mode = \"audit\"\n",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("upstream[0].url") && out.contains("carries credentials"), "{out}");
    assert!(out.contains("password_file"), "the fix should point at password_file: {out}");
    assert!(!out.contains("s3cr3t-pw") && !out.contains("robot"), "the report repeats the credentials: {out}");
}

#[test]
fn check_config_reports_a_bad_pin_store_and_pins_file_before_serve_would() {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("pins.json"), "{\"version\": 1, \"pins\": [{\"registry\": 3}]}").unwrap();
    let (code, out) = check(
        dir.path(),
        &format!(
            "pin_store = \"mysql://db/pins\"\npins_file = \"pins.json\"\n{BASE}\
             [[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n"
        ),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pin_store") && out.contains("postgres://"), "{out}");
    assert!(out.contains("pins_file") && out.contains("pins.json"), "{out}");
    let (code, out) = check(
        dir.path(),
        &format!(
            "pins_file = \"missing.json\"\n{BASE}[[policy]]\nname = \"p\"\nscope = [\"r.test/**\"]\nmode = \"audit\"\n"
        ),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pins_file") && out.contains("missing.json"), "{out}");
}

/// Attestation conditions are compiled when the config is loaded: a CEL
/// syntax error, an unknown variable and an unknown predicate type are
/// problems at their key, and so are a `require = { count }` no authority
/// list can meet and a `require` that is neither word nor table.
#[test]
fn attestation_conditions_and_thresholds_are_checked_at_load() {
    let dir = tempfile::TempDir::new().unwrap();
    fs::write(dir.path().join("k.pub"), include_str!("vectors/cosign/containers-image/cosign.pub")).unwrap();
    let toml = format!(
        "{BASE}[[policy]]\nname = \"team-a\"\nscope = [\"r.test/**\"]\ncosign_keys = [\"k.pub\"]\n\
         require = {{ count = 3 }}\n\
         [[policy.attestation]]\npredicate_type = \"slsaprovenance1\"\ncondition = 'predicate.builder =='\n\
         [[policy.attestation]]\npredicate_type = \"vuln\"\ncondition = 'predicates.x == 1'\n\
         [[policy.attestation]]\npredicate_type = \"sbom\"\n\
         [[policy]]\nname = \"team-b\"\nscope = [\"r.test/b/**\"]\ncosign_keys = [\"k.pub\"]\nrequire = \"most\"\n\
         [[policy]]\nname = \"team-c\"\nscope = [\"r.test/c/**\"]\ncosign_keys = [\"k.pub\"]\nrequire = {{ count = 0 }}\n"
    );
    let (code, out) = check(dir.path(), &toml);
    assert_eq!(code, Some(1), "{out}");
    assert_contains_all(
        &out,
        &[
            "policy[0].attestation[0].condition: is not valid CEL",
            "policy[0].attestation[1].condition: names predicates, but only predicate and now are defined",
            "policy[0].attestation[2].predicate_type: \"sbom\" is neither a predicate type URI nor a cosign --type name",
            "policy[0].require.count: is 3, but the policy lists 1 authorities",
            "policy[1].require:",
            "policy[2].require.count: is 0, which would allow unsigned images",
        ],
    );
    assert!(out.contains("in policy \"team-a\""), "{out}");
}
