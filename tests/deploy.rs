//! `deploy/`: what a platform team applies, checked with the real tools.
//!
//! - The container image: the Dockerfile's USER, EXPOSE, VOLUME and CMD agree
//!   with `deploy/container/sigmirror.toml`, and the real binary serves it.
//! - Kubernetes: every manifest and both kustomize builds (`kubectl
//!   kustomize`) pass `kubernetes-validate --strict` for the oldest and newest
//!   Kubernetes we support; the Deployment is highly available and meets the
//!   `restricted` Pod Security Standard; its config passes `check-config` laid
//!   out as the pod sees it; the node DaemonSet's script really installs the
//!   fail-closed hosts files; README creates every Secret and ConfigMap the
//!   pods mount.
//! - Alerting: `promtool check rules` and `promtool test rules`, and the
//!   Grafana dashboard's queries parse (through promtool) and use only the
//!   metric names and labels sigmirror exports.
//!
//! A missing tool fails the test (scripts/test-all installs them all).

#[path = "support/postgres.rs"]
mod postgres;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use postgres::TestPostgres;
use support::*;

/// `kubernetes-validate` schema versions: the oldest Kubernetes the
/// manifests need (1.30: `preStop.sleep`), and the newest the pinned
/// kubernetes-validate==1.37.0 bundles.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Bound for any one tool run; they take about a second each.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The metrics sigmirror exports (the names the engineers agreed on), as
/// Prometheus sees them: counters with `_total`, and each metric's labels.
const METRICS: &[(&str, Kind, &[&str])] = &[
    ("sigmirror_requests_total", Kind::Counter, &["route", "status_class"]),
    ("sigmirror_in_flight_requests", Kind::Gauge, &[]),
    ("sigmirror_decisions_total", Kind::Counter, &["decision", "policy", "scheme"]),
    ("sigmirror_verification_duration_seconds", Kind::Histogram, &["scheme"]),
    ("sigmirror_upstream_requests_total", Kind::Counter, &["registry", "kind", "status_class"]),
    ("sigmirror_upstream_request_duration_seconds", Kind::Histogram, &["registry", "kind"]),
    ("sigmirror_cache_hits_total", Kind::Counter, &["cache"]),
    ("sigmirror_cache_misses_total", Kind::Counter, &["cache"]),
    ("sigmirror_tag_moves_total", Kind::Counter, &["policy"]),
    ("sigmirror_config_reloads_total", Kind::Counter, &["result"]),
    ("sigmirror_config_stale", Kind::Gauge, &[]),
    ("sigmirror_blob_digest_mismatches_total", Kind::Counter, &[]),
    ("sigmirror_blob_cache_write_errors_total", Kind::Counter, &[]),
    ("sigmirror_stale_answers_total", Kind::Counter, &["kind"]),
    ("sigmirror_limit_hits_total", Kind::Counter, &["limit"]),
    ("sigmirror_tasks", Kind::Gauge, &[]),
    ("sigmirror_build_info", Kind::Gauge, &["version"]),
];

/// Label values from bounded sets, where the contract fixes them.
const LABEL_VALUES: &[(&str, &[&str])] = &[
    ("route", &["base", "manifest", "blob", "tags", "referrers", "metrics", "health", "other"]),
    ("status_class", &["2xx", "3xx", "4xx", "5xx", "error"]),
    ("decision", &["allow", "deny", "audit-deny"]),
    ("scheme", &["cosign", "notation", "none", "-"]),
    ("cache", &["manifest", "verdict", "blob", "tag"]),
    ("result", &["ok", "error"]),
    (
        "limit",
        &[
            "max_connections",
            "header_read_timeout_secs",
            "max_header_bytes",
            "idle_timeout_secs",
            "manifest_timeout_secs",
            "max_upstream_fetches",
            "upstream_blob_min_bytes_per_sec",
        ],
    ),
];

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance", "namespace", "pod"];

/// Series from elsewhere that alerts may use: Prometheus' own `up`, and
/// kube-state-metrics for the Deployment's ready replicas.
const FOREIGN_METRICS: &[&str] = &["up", "kube_deployment_status_replicas_available"];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Output of one finished tool run.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn both(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a tool to completion within [`TOOL_TIMEOUT`]. A tool that is not
/// installed fails the test: these checks must never silently not happen.
fn run(cmd: &mut Command) -> Ran {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e} (scripts/test-all installs it)"));
    // Read both pipes on threads so a chatty tool cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} did not finish within {TOOL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran { ok: status.success(), stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Every YAML document in `text`, as JSON (PyYAML, which kubernetes-validate
/// brings, reads YAML as Kubernetes and Prometheus do).
fn yaml_docs(text: &str) -> Vec<Value> {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("in.yaml");
    fs::write(&path, text).unwrap();
    let ran = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
         json.dump(docs, sys.stdout)",
        )
        .arg(&path));
    assert!(ran.ok, "YAML does not parse: {}", ran.stderr);
    match serde_json::from_str(&ran.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

/// `kubectl kustomize <dir>`: the manifests a platform team applies.
fn kustomize(rel: &str) -> String {
    let ran = run(Command::new("kubectl").arg("kustomize").arg(repo().join(rel)));
    assert!(ran.ok, "kubectl kustomize {rel} failed:\n{}", ran.both());
    ran.stdout
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in the build"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// The sigmirror Deployment's config as kustomize leaves it, with the TOML.
struct Base {
    docs: Vec<Value>,
    config: toml::Table,
}

fn base() -> Base {
    let docs = yaml_docs(&kustomize("deploy/kubernetes/base"));
    let config = read("deploy/kubernetes/base/sigmirror.toml").parse().expect("base sigmirror.toml parses");
    Base { docs, config }
}

fn pod_spec<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &find(docs, kind, name)["spec"]["template"]["spec"]
}

// ---------------------------------------------------------------- the image

/// The final stage of the Dockerfile: instruction → arguments, in order.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let mut stage = Vec::new();
    let mut line = String::new();
    for raw in dockerfile.lines() {
        let raw = raw.trim();
        if raw.starts_with('#') || raw.is_empty() && line.is_empty() {
            continue;
        }
        // Continuation lines end with a backslash.
        if let Some(part) = raw.strip_suffix('\\') {
            line.push_str(part);
            line.push(' ');
            continue;
        }
        line.push_str(raw);
        let (op, args) = line.split_once(' ').unwrap_or((&line, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            stage.clear();
        }
        stage.push((op, args.trim().to_string()));
        line.clear();
    }
    stage
}

fn instruction<'a>(stage: &'a [(String, String)], op: &str) -> &'a str {
    let found: Vec<_> = stage.iter().filter(|(o, _)| o == op).collect();
    assert_eq!(found.len(), 1, "the final stage needs exactly one {op}: {stage:?}");
    &found[0].1
}

fn json_list(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form JSON list ({e}): {args}"))
}

#[test]
fn the_container_image_serves_its_own_config_and_agrees_with_the_dockerfile() {
    let dockerfile = read("deploy/Dockerfile");
    let config_text = read("deploy/container/sigmirror.toml");
    let config: toml::Table = config_text.parse().unwrap();
    let stage = final_stage(&dockerfile);

    // A numeric, non-root user, so the kubelet's runAsNonRoot can check it.
    let user = instruction(&stage, "USER");
    let uid: u32 = user.split(':').next().unwrap().parse().unwrap_or_else(|_| panic!("USER {user} is not numeric"));
    assert_ne!(uid, 0, "the image runs as root");

    // CMD serves the config file the image carries.
    assert_eq!(json_list(instruction(&stage, "ENTRYPOINT")), ["/usr/local/bin/sigmirror"]);
    let cmd = json_list(instruction(&stage, "CMD"));
    assert_eq!(cmd[..2], ["serve", "--config"], "{cmd:?}");
    let copies: Vec<&str> = stage.iter().filter(|(o, _)| o == "COPY").map(|(_, a)| a.as_str()).collect();
    assert!(copies.contains(&format!("deploy/container/sigmirror.toml {}", cmd[2]).as_str()), "{copies:?}");
    assert!(copies.iter().any(|c| c.ends_with("/target/release/sigmirror /usr/local/bin/sigmirror")), "{copies:?}");

    // It listens on every interface of the container, on the EXPOSEd port.
    let listen = config["listen"].as_str().unwrap();
    assert_eq!(listen, format!("0.0.0.0:{}", instruction(&stage, "EXPOSE")));

    // data_dir is the VOLUME, created owned by the image's user.
    let data_dir = config["data_dir"].as_str().unwrap();
    assert_eq!(json_list(instruction(&stage, "VOLUME")), [data_dir]);
    assert!(
        copies.iter().any(|c| c.starts_with(&format!("--from=build --chown={user} ")) && c.ends_with(data_dir)),
        "the volume's mount point is not created owned by {user}: {copies:?}"
    );

    // A stripped binary: the release profile keeps debug info for profiling.
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"), "the image's binary is not stripped");
    // The context's .dockerignore lets through everything the build COPYs.
    let ignore = read("deploy/Dockerfile.dockerignore");
    for source in ["Cargo.toml", "Cargo.lock", "src/", "benches/", "deploy/container/"] {
        assert!(ignore.lines().any(|l| l == format!("!{source}")), "{source} is kept out of the build context");
        assert!(repo().join(source).exists(), "{source}");
    }

    // The real binary accepts the file, with the volume as a temp dir...
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    fs::create_dir(&data).unwrap();
    let local = config_text.replace(&format!("data_dir = \"{data_dir}\""), &format!("data_dir = {:?}", data));
    assert_ne!(local, config_text);
    let path = dir.path().join("sigmirror.toml");
    fs::write(&path, &local).unwrap();
    let checked = run(Command::new(env!("CARGO_BIN_EXE_sigmirror")).args(["check-config", "--config"]).arg(&path));
    assert!(checked.ok, "check-config refused the container's config:\n{}", checked.both());

    // ...and serves it: the registry API answers, and an image that is
    // there upstream is refused, since nothing is trusted yet. On loopback
    // here, with the real docker-registry standing in for Docker Hub.
    let registry = Registry::start();
    let image = push_image(&registry.host, "library/alpine", "3.20", "container-default");
    let served = local.replace(&format!("listen = \"{listen}\""), "listen = \"127.0.0.1:0\"").replace(
        "url = \"https://registry-1.docker.io\"",
        &format!("url = \"{}\"\ndangerous_plain_http = true", registry.url()),
    );
    assert!(!served.contains("registry-1.docker.io") && !served.contains(listen), "{served}");
    let mirror = Sigmirror::start_in(dir, &served);
    assert_eq!(http("GET", &format!("{}/v2/", mirror.url()), &[]).status, 200);
    let refused = http("GET", &format!("{}/v2/library/alpine/manifests/3.20", mirror.url()), &[]);
    let body = String::from_utf8_lossy(&refused.body);
    assert_eq!(refused.status, 403, "{body}");
    assert!(body.contains(&image.digest), "refused before looking at the image: {body}");
    assert!(body.contains("\"DENIED\"") && body.contains("mount-a-config-first"), "{body}");
}

/// The archive `deploy/build-image` wrote, unpacked: its image config.
fn image_config(archive: &Path) -> Value {
    let out = tempfile::TempDir::new().unwrap();
    let untar = run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(out.path()));
    assert!(untar.ok, "{}", untar.both());
    let blob =
        |digest: &str| fs::read(out.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"))).unwrap();
    let index: Value = serde_json::from_slice(&fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let bytes = blob(layer["digest"].as_str().unwrap());
        assert_eq!(bytes.len() as u64, layer["size"].as_u64().unwrap(), "layer size");
    }
    serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap()
}

#[test]
fn the_image_builds_without_a_daemon_and_runs_in_the_real_containerd_as_non_root() {
    // Built from the binary under test, as CI cannot pull the Dockerfile's
    // base images.
    let work = tempfile::TempDir::new().unwrap();
    let archive = work.path().join("sigmirror-image.tar");
    let name = "docker.io/library/sigmirror:test";
    let built = run(Command::new("python3")
        .arg(repo().join("deploy/build-image"))
        .args(["--binary", env!("CARGO_BIN_EXE_sigmirror"), "--name", name, "--output"])
        .arg(&archive));
    assert!(built.ok, "{}", built.both());

    // Its config says what the Dockerfile's final stage says.
    let stage = final_stage(&read("deploy/Dockerfile"));
    let config = image_config(&archive);
    let c = &config["config"];
    assert_eq!(c["User"], instruction(&stage, "USER"));
    assert_eq!(c["Entrypoint"], serde_json::json!(json_list(instruction(&stage, "ENTRYPOINT"))));
    assert_eq!(c["Cmd"], serde_json::json!(json_list(instruction(&stage, "CMD"))));
    let port = instruction(&stage, "EXPOSE");
    assert_eq!(c["ExposedPorts"], serde_json::json!({ format!("{port}/tcp"): {} }));
    let volume = json_list(instruction(&stage, "VOLUME"));
    assert_eq!(c["Volumes"], serde_json::json!({ volume[0].clone(): {} }));

    // Run with its own default command, on the host's network so the test
    // can reach it (the image's config listens on 0.0.0.0:5050).
    assert!(
        std::net::TcpListener::bind(format!("127.0.0.1:{port}")).is_ok(),
        "port {port} is taken on this machine; the image's default config listens there"
    );
    let containerd = Containerd::start();
    containerd.ctr(&["images", "import", archive.to_str().unwrap()], Duration::from_secs(60)).unwrap();
    let id = "sigmirror-image-test";
    // Whatever happens, the container does not outlive the test (its shim
    // would keep it, and port 5050, past containerd's own end).
    struct Stop<'a>(&'a Containerd, &'a str);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.ctr(&["task", "kill", "--signal", "KILL", self.1], Duration::from_secs(10));
        }
    }
    let running = std::thread::scope(|scope| {
        let _stop = Stop(&containerd, id);
        let task = scope.spawn(|| {
            containerd.ctr(&["run", "--rm", "--net-host", "--snapshotter", "native", name, id], Duration::from_secs(90))
        });
        let base = format!("http://127.0.0.1:{port}");
        let ready = wait_for("the container to serve", Duration::from_secs(30), Duration::from_millis(100), || {
            try_http("GET", &format!("{base}/readyz"), &[]).ok().filter(|r| r.status == 200)
        });
        // It opened its pin store in the image's data directory, as uid 65532.
        assert_eq!(ready.json()["pin_store"], format!("embedded ({}/pins.redb)", volume[0]), "{}", ready.text());
        assert_eq!(http("GET", &format!("{base}/v2/"), &[]).status, 200);
        let tasks = containerd.ctr(&["task", "ls"], Duration::from_secs(10)).unwrap();
        let pid = tasks.lines().find(|l| l.starts_with(id)).and_then(|l| l.split_whitespace().nth(1)).unwrap();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(uid.split_whitespace().collect::<Vec<_>>(), ["Uid:", "65532", "65532", "65532", "65532"]);
        containerd.ctr(&["task", "kill", "--signal", "TERM", id], Duration::from_secs(10)).unwrap();
        task.join().unwrap()
    });
    let out = running.unwrap_or_else(|e| panic!("{e}\n{}", containerd.logs()));
    assert!(out.contains(&format!("sigmirror listening on http://0.0.0.0:{port}")), "{out}");
}

// ---------------------------------------------------------------- Kubernetes

/// Every manifest file (kustomizations are kustomize's input, not the API's).
fn manifest_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["deploy/kubernetes/base", "deploy/containerd"] {
        for entry in fs::read_dir(repo().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && name != "kustomization.yaml" {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_manifest_and_both_kustomize_builds_pass_kubernetes_validate_strict() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut files = manifest_files();
    assert!(files.len() >= 6, "{files:?}");
    for (name, kustomization) in [("base.yaml", "deploy/kubernetes/base"), ("node.yaml", "deploy/containerd")] {
        let path = dir.path().join(name);
        fs::write(&path, kustomize(kustomization)).unwrap();
        files.push(path);
    }
    let documents: usize = files.iter().map(|f| yaml_docs(&fs::read_to_string(f).unwrap()).len()).sum();
    for version in KUBERNETES_VERSIONS {
        let ran = run(Command::new("kubernetes-validate").args(["--strict", "-k", version]).args(&files));
        assert!(ran.ok, "kubernetes-validate --strict -k {version}:\n{}", ran.both());
        // Every document was checked against a schema, none skipped.
        let passed = ran.both().lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(passed, documents, "{}", ran.both());
    }
}

#[test]
fn the_deployment_is_highly_available_and_meets_the_restricted_pod_security_standard() {
    let Base { docs, config } = base();
    let deployment = find(&docs, "Deployment", "sigmirror");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let spec = pod_spec(&docs, "Deployment", "sigmirror");

    // Several replicas that share pins, so any one answers like the others.
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(replicas >= 2, "{replicas} replicas");
    let pin_store = config["pin_store"].as_str().expect("the replicas share no pin store");
    assert!(pin_store.starts_with("postgres://"), "{pin_store}");
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);

    // A disruption budget over the same pods that leaves one running.
    let pdb = find(&docs, "PodDisruptionBudget", "sigmirror");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() >= 1);
    assert!(pdb["spec"]["minAvailable"].as_u64().unwrap() < replicas, "the budget blocks every drain");

    // Replicas kept apart by node.
    let anti = &spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(anti["podAffinityTerm"]["labelSelector"]["matchLabels"], *labels);

    // The Service reaches the pods on the port the config listens on.
    let service = find(&docs, "Service", "sigmirror");
    assert_eq!(service["spec"]["selector"], *labels);
    let container = &spec["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], port["name"]);
    let listen = config["listen"].as_str().unwrap();
    assert_eq!(listen, format!("0.0.0.0:{}", port["containerPort"]));

    // Probes: ready when it can serve, alive while it answers; on the admin
    // listener, plain HTTP, since the kubelet has no client certificate for
    // the TLS one.
    assert!(config.contains_key("tls_cert"));
    let admin = &container["ports"][1];
    assert_eq!(admin["name"], "admin");
    assert_eq!(config["admin_listen"].as_str().unwrap(), format!("0.0.0.0:{}", admin["containerPort"]));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "admin", "{probe}");
        assert_eq!(get["scheme"], "HTTP", "{probe}");
    }

    // Requests and limits.
    for side in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(container["resources"][side][what].is_string(), "no {side}.{what}");
        }
    }
    // The drain fits in the grace period.
    assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() > 30);

    // `restricted`, enforced by the namespace and met by the pod.
    let ns = find(&docs, "Namespace", "sigmirror");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    assert_restricted(spec);
    assert_eq!(spec["automountServiceAccountToken"], false);
}

/// The `restricted` Pod Security Standard (v1.30), as the API server checks it.
fn assert_restricted(spec: &Value) {
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(spec[host], true, "{host}");
    }
    const VOLUMES: &[&str] =
        &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    for volume in spec["volumes"].as_array().unwrap() {
        let kinds: Vec<&String> = volume.as_object().unwrap().keys().filter(|k| *k != "name").collect();
        assert!(kinds.iter().all(|k| VOLUMES.contains(&k.as_str())), "volume {volume} is not allowed");
    }
    let pod = &spec["securityContext"];
    for container in
        spec["containers"].as_array().unwrap().iter().chain(spec["initContainers"].as_array().into_iter().flatten())
    {
        let c = &container["securityContext"];
        let name = &container["name"];
        assert!(c["runAsNonRoot"] == true || pod["runAsNonRoot"] == true, "{name}: runAsNonRoot");
        assert_ne!(c["runAsUser"], 0, "{name}");
        assert_ne!(pod["runAsUser"], 0, "{name}");
        let seccomp = if c["seccompProfile"].is_null() { &pod["seccompProfile"] } else { &c["seccompProfile"] };
        assert_eq!(seccomp["type"], "RuntimeDefault", "{name}: seccompProfile");
        assert_eq!(c["allowPrivilegeEscalation"], false, "{name}");
        assert_ne!(c["privileged"], true, "{name}");
        assert_eq!(strs(&c["capabilities"]["drop"]), ["ALL"], "{name}");
        assert!(strs(&c["capabilities"]["add"]).iter().all(|a| a == "NET_BIND_SERVICE"), "{name}");
        assert_eq!(c["readOnlyRootFilesystem"], true, "{name}");
        assert!(container["ports"].as_array().into_iter().flatten().all(|p| p["hostPort"].is_null()), "{name}");
    }
}

/// Lays out the files the pod sees, from the kustomize build (ConfigMaps),
/// the config Secret made from the shipped template, and a certificate made
/// here for the TLS Secret, under `root`; returns the config's path there.
fn pod_filesystem(root: &Path, docs: &[Value], pin_store: &str) -> PathBuf {
    let spec = pod_spec(docs, "Deployment", "sigmirror");
    let volumes: BTreeMap<String, &Value> =
        spec["volumes"].as_array().unwrap().iter().map(|v| (v["name"].as_str().unwrap().to_string(), v)).collect();
    let mut template = read("deploy/kubernetes/base/sigmirror.toml");
    let mut config_path = None;
    for mount in spec["containers"][0]["volumeMounts"].as_array().unwrap() {
        let at = mount["mountPath"].as_str().unwrap();
        assert!(mount["subPath"].is_null(), "{at}: a subPath mount never sees ConfigMap updates");
        let dir = root.join(at.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap();
        let volume = volumes[mount["name"].as_str().unwrap()];
        if let Some(name) = volume["configMap"]["name"].as_str() {
            let map = find(docs, "ConfigMap", name);
            for (key, value) in map["data"].as_object().unwrap() {
                fs::write(dir.join(key), value.as_str().unwrap()).unwrap();
            }
        } else if let Some(name) = volume["secret"]["secretName"].as_str() {
            match name {
                "sigmirror-config" => config_path = Some(dir.join("sigmirror.toml")),
                "sigmirror-tls" => {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                    let mut params = rcgen::CertificateParams::new(vec!["sigmirror.sigmirror.svc".into()]).unwrap();
                    params.subject_alt_names.push(rcgen::SanType::IpAddress("10.96.0.50".parse().unwrap()));
                    let cert = params.self_signed(&key).unwrap();
                    fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
                    fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
                }
                // The pin store's password; registry passwords beside it.
                "sigmirror-upstream-credentials" => {
                    assert!(volume["secret"]["optional"].is_null(), "the pin store's password is required");
                    fs::write(dir.join("pin-store"), "not-the-password-of-the-test-server\n").unwrap();
                }
                other => panic!("the pod mounts Secret {other}, which this test does not know"),
            }
        } else {
            assert!(volume["emptyDir"].is_object(), "{volume}");
        }
        // Absolute paths in the config point into the mount, here under root.
        template = template.replace(&format!("\"{at}"), &format!("\"{}", dir.display()));
    }
    let config_path = config_path.expect("no volume mounts the Secret sigmirror-config");
    let line = template.lines().find(|l| l.starts_with("pin_store = ")).unwrap().to_string();
    fs::write(&config_path, template.replace(&line, &format!("pin_store = {pin_store:?}"))).unwrap();
    config_path
}

#[test]
fn the_deployments_config_passes_check_config_as_the_pod_sees_it() {
    let Base { docs, config } = base();
    // Every file the config names lies in a volume the pod mounts.
    let spec = pod_spec(&docs, "Deployment", "sigmirror");
    let mounts: Vec<String> = spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/", m["mountPath"].as_str().unwrap()))
        .collect();
    let mut paths = vec![config["data_dir"].as_str().unwrap().to_string() + "/"];
    for key in ["tls_cert", "tls_key"] {
        paths.push(config[key].as_str().unwrap().to_string());
    }
    for policy in config["policy"].as_array().unwrap() {
        paths.extend(policy.get("cosign_keys").map(|k| strs(&serde_json::to_value(k).unwrap())).unwrap_or_default());
    }
    for path in &paths {
        assert!(mounts.iter().any(|m| path.starts_with(m.as_str())), "{path} is in no volume ({mounts:?})");
    }
    // The pods' args read the config from the config Secret's mount.
    let args = strs(&spec["containers"][0]["args"]);
    assert_eq!(args, ["serve", "--config", "/etc/sigmirror/config/sigmirror.toml"]);

    // check-config, with the pin store on a real PostgreSQL.
    let pg = TestPostgres::start();
    let root = tempfile::TempDir::new().unwrap();
    let path = pod_filesystem(root.path(), &docs, &pg.url);
    assert!(path.ends_with("etc/sigmirror/config/sigmirror.toml"), "{}", path.display());
    let ran = run(Command::new(env!("CARGO_BIN_EXE_sigmirror")).args(["check-config", "--config"]).arg(&path));
    assert!(ran.ok, "check-config refused the Deployment's config:\n{}", ran.both());
}

#[test]
fn the_node_daemonset_installs_fail_closed_hosts_files_and_the_ca() {
    let docs = yaml_docs(&kustomize("deploy/containerd"));
    let spec = pod_spec(&docs, "DaemonSet", "sigmirror-node");
    let files = find(&docs, "ConfigMap", "sigmirror-node-files")["data"].as_object().unwrap();

    // Every shipped certs.d directory is installed, byte for byte.
    let certs = repo().join("deploy/containerd/certs.d");
    let mut shipped = BTreeSet::new();
    for entry in fs::read_dir(&certs).unwrap() {
        let registry = entry.unwrap().file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(certs.join(&registry).join("hosts.toml")).unwrap();
        assert_eq!(files[&format!("{registry}.hosts.toml")], text.as_str(), "{registry}");
        shipped.insert(registry);
    }
    assert!(shipped.contains("_default"), "{shipped:?}");

    // Each one sends containerd to sigmirror's fixed Service address, and
    // only there: with a real registry as `server` or another host,
    // containerd would fall back to it on every refusal.
    let service = find(&base().docs, "Service", "sigmirror").clone();
    let sigmirror =
        format!("https://{}:{}", service["spec"]["clusterIP"].as_str().unwrap(), service["spec"]["ports"][0]["port"]);
    let host_dir = spec["volumes"].as_array().unwrap().iter().find_map(|v| v["hostPath"]["path"].as_str()).unwrap();
    for registry in &shipped {
        let hosts: toml::Table = files[&format!("{registry}.hosts.toml")].as_str().unwrap().parse().unwrap();
        assert_eq!(hosts["server"].as_str(), Some(sigmirror.as_str()), "{registry}");
        let host = hosts["host"].as_table().unwrap();
        assert_eq!(host.keys().collect::<Vec<_>>(), [&sigmirror], "{registry}: another host to fall back to");
        let ca = host[&sigmirror]["ca"].as_str().unwrap();
        assert_eq!(ca, format!("{host_dir}/sigmirror-ca.pem"), "{registry}: the DaemonSet does not write the CA there");
    }

    // The container runs the shipped script against the host path.
    let container = &spec["containers"][0];
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().into(), e["value"].as_str().unwrap().into()))
        .collect();
    let mount = |name: &str| {
        let m = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap();
        m["mountPath"].as_str().unwrap().to_string()
    };
    assert_eq!(env["DEST"], mount("certs-d"));
    assert_eq!(env["SRC"], mount("config"));
    assert_eq!(strs(&container["command"]), ["/bin/sh", &format!("{}/install-hosts.sh", env["SRC"])]);
    assert_eq!(files["install-hosts.sh"], read("deploy/containerd/install-hosts.sh").as_str());
    assert_eq!(spec["tolerations"][0]["operator"], "Exists", "some nodes would keep pulling around sigmirror");

    // Run the script as the pod would, once, on a node that already has a
    // foreign hosts file and an old catch-all.
    let tmp = tempfile::TempDir::new().unwrap();
    let src = tmp.path().join("config");
    let dest = tmp.path().join("certs.d");
    fs::create_dir_all(&src).unwrap();
    for (key, value) in files {
        fs::write(src.join(key), value.as_str().unwrap()).unwrap();
    }
    fs::write(src.join("sigmirror-ca.pem"), "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n").unwrap();
    fs::create_dir_all(dest.join("quay.io")).unwrap();
    fs::write(dest.join("quay.io/hosts.toml"), "server = \"https://quay.io\"\n").unwrap();
    fs::create_dir_all(dest.join("_default")).unwrap();
    fs::write(dest.join("_default/hosts.toml"), "server = \"https://registry-1.docker.io\"\n").unwrap();
    let install = || {
        run(Command::new("sh").arg(src.join("install-hosts.sh")).env("SRC", &src).env("DEST", &dest).env("ONCE", "1"))
    };
    let first = install();
    assert!(first.ok, "{}", first.both());
    for registry in &shipped {
        let installed = fs::read_to_string(dest.join(registry).join("hosts.toml")).unwrap();
        assert_eq!(installed, files[&format!("{registry}.hosts.toml")].as_str().unwrap(), "{registry}");
    }
    assert_eq!(fs::read(dest.join("sigmirror-ca.pem")).unwrap(), fs::read(src.join("sigmirror-ca.pem")).unwrap());
    assert!(first.stderr.contains("quay.io") && first.stderr.contains("bypass sigmirror"), "{}", first.both());
    // Nothing deleted, nothing half-written left behind.
    assert!(dest.join("quay.io/hosts.toml").exists());
    let leftovers: Vec<_> = walk(&dest).into_iter().filter(|p| p.to_string_lossy().contains("sigmirror-tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A second pass writes nothing: files are only replaced when they differ.
    let second = install();
    assert!(second.ok && !second.stdout.contains("wrote"), "{}", second.both());

    // Without the CA, the pass fails (the hosts files would name a missing file).
    fs::remove_file(src.join("sigmirror-ca.pem")).unwrap();
    let no_ca = install();
    assert!(!no_ca.ok && no_ca.stderr.contains("sigmirror-ca"), "{}", no_ca.both());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_readme_creates_every_secret_and_configmap_the_pods_mount() {
    let readme = read("README.md");
    let start = readme.find("## Install on a cluster").expect("README has no \"Install on a cluster\" section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let created: BTreeSet<(String, String, String)> = section
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.windows(2).position(|w| w[0] == "create" && (w[1] == "secret" || w[1] == "configmap"))?;
            let kind = if words[at + 1] == "secret" { "Secret" } else { "ConfigMap" };
            let ns = words.windows(2).find(|w| w[0] == "-n").map(|w| w[1])?;
            // `create secret generic NAME`, `create secret tls NAME`, `create configmap NAME`.
            let name = if kind == "Secret" { words[at + 3] } else { words[at + 2] };
            Some((ns.to_string(), kind.to_string(), name.to_string()))
        })
        .collect();

    let mut needed = BTreeSet::new();
    for (dir, kind, name) in
        [("deploy/kubernetes/base", "Deployment", "sigmirror"), ("deploy/containerd", "DaemonSet", "sigmirror-node")]
    {
        let docs = yaml_docs(&kustomize(dir));
        let workload = find(&docs, kind, name);
        let ns = workload["metadata"]["namespace"].as_str().unwrap().to_string();
        let generated = |k: &str, n: &str| docs.iter().any(|d| d["kind"] == k && d["metadata"]["name"] == n);
        for volume in workload["spec"]["template"]["spec"]["volumes"].as_array().unwrap() {
            let sources: Vec<&Value> = match volume["projected"]["sources"].as_array() {
                Some(s) => s.iter().collect(),
                None => vec![volume],
            };
            for source in sources {
                let (k, n, optional) = if let Some(n) = source["secret"]["secretName"].as_str() {
                    ("Secret", n, &source["secret"]["optional"])
                } else if let Some(n) = source["configMap"]["name"].as_str() {
                    ("ConfigMap", n, &source["configMap"]["optional"])
                } else {
                    continue;
                };
                if !generated(k, n) && *optional != true {
                    needed.insert((ns.clone(), k.to_string(), n.to_string()));
                }
            }
        }
    }
    assert!(needed.len() >= 3, "{needed:?}");
    let missing: Vec<_> = needed.difference(&created).collect();
    assert!(missing.is_empty(), "README creates none of {missing:?}; it creates {created:?}");
}

// ---------------------------------------------------------------- alerting

/// Every metric name a PromQL expression uses, with the label names and
/// `=` values of its selector.
/// A label matcher: (label, operator, value).
type Matcher = (String, String, String);

fn selectors(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let metric = regex::Regex::new(r"\b([a-z_][a-z0-9_]*)\s*(\{[^}]*\})?").unwrap();
    let matcher = regex::Regex::new(r#"([a-z_][a-z0-9_]*)\s*(=~|!=|!~|=)\s*"([^"]*)""#).unwrap();
    // Words that are PromQL, not series: functions, aggregations, keywords.
    let promql = regex::Regex::new(
        r"^(sum|min|max|avg|count|rate|increase|irate|delta|absent|histogram_quantile|by|without|and|or|unless|on|ignoring|group_left|group_right|offset|bool|le|topk|bottomk|label_values)$",
    )
    .unwrap();
    // Drop the contents of by (...) / without (...) groupings and ranges first.
    let groups = regex::Regex::new(r"\b(by|without|on|ignoring)\s*\([^)]*\)|\[[^\]]*\]|humanize\w*").unwrap();
    let expr = groups.replace_all(expr, " ");
    metric
        .captures_iter(&expr)
        .filter(|c| !promql.is_match(&c[1]))
        .filter(|c| !c[1].chars().all(|ch| ch.is_ascii_digit() || ch == '_'))
        .map(|c| {
            let labels = c
                .get(2)
                .map(|s| matcher.captures_iter(s.as_str()).map(|m| (m[1].into(), m[2].into(), m[3].into())).collect())
                .unwrap_or_default();
            (c[1].to_string(), labels)
        })
        .collect()
}

/// Fails unless `expr` uses only exported metrics (or `foreign` ones), with
/// their own labels, and bounded-set labels only with values from the set.
fn assert_known_metrics(expr: &str, foreign: &[&str]) {
    let found = selectors(expr);
    assert!(!found.is_empty(), "no metric in {expr}");
    for (name, labels) in found {
        if foreign.contains(&name.as_str()) {
            continue;
        }
        let (base, kind, allowed) = METRICS
            .iter()
            .find_map(|(m, kind, labels)| {
                let base = if *kind == Kind::Histogram {
                    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name)
                } else {
                    &name
                };
                (base == *m).then_some((*m, *kind, *labels))
            })
            .unwrap_or_else(|| panic!("{name} is not a metric sigmirror exports (in {expr})"));
        assert!(kind != Kind::Histogram || name != base, "{name} is a histogram: use {name}_bucket (in {expr})");
        for (label, op, value) in labels {
            let le = kind == Kind::Histogram && label == "le";
            assert!(
                allowed.contains(&label.as_str()) || TARGET_LABELS.contains(&label.as_str()) || le,
                "{name} has no label {label} (in {expr})"
            );
            if let (Some((_, values)), "=") = (LABEL_VALUES.iter().find(|(l, _)| *l == label), op.as_str()) {
                assert!(values.contains(&value.as_str()), "{label}=\"{value}\" is never exported (in {expr})");
            }
            if let (Some((_, values)), "=~") = (LABEL_VALUES.iter().find(|(l, _)| *l == label), op.as_str()) {
                for v in value.split('|') {
                    assert!(values.contains(&v), "{label}=~\"{value}\": {v} is never exported (in {expr})");
                }
            }
        }
    }
}

#[test]
fn the_metric_checker_rejects_unknown_names_labels_and_values() {
    // The checks below are only as good as this one.
    for bad in [
        "rate(sigmirror_decisions{decision=\"deny\"}[5m])",
        "rate(sigmirror_decisions_total{verdict=\"deny\"}[5m])",
        "rate(sigmirror_decisions_total{decision=\"denied\"}[5m])",
        "rate(sigmirror_upstream_requests_total{status_class=~\"5xx|timeout\"}[5m])",
        "sigmirror_verification_duration_seconds",
    ] {
        let caught = std::panic::catch_unwind(|| assert_known_metrics(bad, &[])).is_err();
        assert!(caught, "accepted {bad}");
    }
    assert_known_metrics(
        "histogram_quantile(0.95, sum by (registry, le) (rate(sigmirror_upstream_request_duration_seconds_bucket{instance=~\"$instance\"}[5m])))",
        &[],
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests_and_use_exported_metrics() {
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let checked = run(Command::new("promtool").arg("check").arg("rules").arg(&rules));
    assert!(checked.ok, "promtool check rules:\n{}", checked.both());
    // Fires when it should, and stays quiet when it should not.
    let tested =
        run(Command::new("promtool").arg("test").arg("rules").arg(repo().join("deploy/prometheus/alerts.test.yml")));
    assert!(tested.ok && tested.both().contains("SUCCESS"), "promtool test rules:\n{}", tested.both());

    let doc = yaml_docs(&read("deploy/prometheus/alerts.yml")).remove(0);
    let mut alerts = BTreeSet::new();
    for group in doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().expect("recording rules belong elsewhere").to_string();
            assert_known_metrics(rule["expr"].as_str().unwrap(), FOREIGN_METRICS);
            assert!(rule["labels"]["severity"].is_string(), "{name}: no severity");
            assert!(rule["annotations"]["summary"].is_string(), "{name}: no summary");
            alerts.insert(name);
        }
    }
    // The situations the platform team must hear about.
    for needed in [
        "SigmirrorNoReadyReplicas",
        "SigmirrorRefusalsSpike",
        "SigmirrorUpstreamErrors",
        "SigmirrorConfigStale",
        "SigmirrorTagMoved",
        "SigmirrorBlobDigestMismatch",
    ] {
        assert!(alerts.contains(needed), "no alert {needed}: {alerts:?}");
    }
}

#[test]
fn the_grafana_dashboard_has_what_grafana_needs_and_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/sigmirror-dashboard.json")).unwrap();
    for key in ["title", "uid"] {
        assert!(dashboard[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    assert!(dashboard["uid"].as_str().unwrap().len() <= 40, "Grafana uids are at most 40 characters");
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36, "panels' datasource objects need schema 36+");
    assert!(dashboard["id"].is_null(), "an id ties the file to one Grafana's database; import needs none");

    // A data source variable, so the import works against any Prometheus.
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let names: BTreeSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert!(vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"));

    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut cells: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut exprs = 0;
    let variable = regex::Regex::new(r"\$([a-z_]+)").unwrap();
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel without an id");
        assert!(ids.insert(id), "panel id {id} twice");
        let title = panel["title"].as_str().unwrap();
        // On the 24-column grid, and no two panels on one cell.
        let g = &panel["gridPos"];
        let (x, y, w, h) =
            (g["x"].as_u64().unwrap(), g["y"].as_u64().unwrap(), g["w"].as_u64().unwrap(), g["h"].as_u64().unwrap());
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel at {cx},{cy}");
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat", "table", "gauge", "bargauge"].contains(&panel["type"].as_str().unwrap()),
            "{title}"
        );
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets =
            panel["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no targets"));
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}: refId twice");
            let expr = target["expr"].as_str().unwrap();
            for var in variable.captures_iter(expr) {
                assert!(
                    names.contains(&var[1]) || &var[1] == "__rate_interval",
                    "{title}: ${} is not defined",
                    &var[1]
                );
            }
            assert_known_metrics(expr, &[]);
            // promtool parses the query as Grafana would send it.
            let concrete = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
            rules.push_str(&format!(
                "      - record: dashboard:panel_{id}_{}\n        expr: {}\n",
                target["refId"].as_str().unwrap(),
                serde_json::to_string(&concrete).unwrap()
            ));
            exprs += 1;
        }
    }
    assert!(exprs >= 15, "{exprs} queries");
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    fs::write(&file, &rules).unwrap();
    let checked = run(Command::new("promtool").arg("check").arg("rules").arg(&file));
    assert!(checked.ok, "a dashboard query does not parse:\n{}\n{rules}", checked.both());

    // Every exported metric is on the dashboard somewhere.
    let text = read("deploy/grafana/sigmirror-dashboard.json");
    for (name, _, _) in METRICS {
        assert!(text.contains(name), "{name} is on no panel");
    }
}
