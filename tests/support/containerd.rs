//! [`Containerd`]: a private containerd with its own root, state and socket;
//! [`hosts_dir`] points it at a mirror.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{kill_and_reap, read_lossy};

/// A private containerd: own root, state, socket; CRI disabled; native snapshotter.
pub struct Containerd {
    pub socket: PathBuf,
    pub dir: TempDir,
    child: Child,
}

/// A containerd hosts directory for `registry_name` in the fail-closed form:
/// `server` and the only `[host]` are both `mirror` (`host:port`, plain HTTP).
pub fn hosts_dir(registry_name: &str, mirror: &str) -> TempDir {
    let mirror = mirror.trim_start_matches("http://");
    let dir = TempDir::new().unwrap();
    let sub = dir.path().join(registry_name);
    fs::create_dir_all(&sub).unwrap();
    fs::write(
        sub.join("hosts.toml"),
        format!(
            "server = \"http://{mirror}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    dir
}

impl Containerd {
    pub fn start() -> Containerd {
        for bin in ["/usr/bin/containerd", "/usr/bin/ctr"] {
            assert!(Path::new(bin).exists(), "{bin} is missing: apt-get install containerd");
        }
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        let socket = d.join("containerd.sock");
        for sub in ["root", "state", "opt"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = socket.display(),
            opt = d.join("opt").display(),
        );
        let config_path = d.join("config.toml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(d.join("containerd.log")).unwrap();
        let mut child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run containerd");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ok = false;
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("containerd exited with {status}:\n{}", read_lossy(&d.join("containerd.log")));
            }
            if socket.exists() {
                let out = Command::new("/usr/bin/ctr").arg("--address").arg(&socket).arg("version").output();
                if out.is_ok_and(|o| o.status.success()) {
                    ok = true;
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        if !ok {
            kill_and_reap(&mut child);
            panic!("containerd did not come up in 30 s:\n{}", read_lossy(&d.join("containerd.log")));
        }
        Containerd { socket, dir, child }
    }

    pub fn logs(&self) -> String {
        read_lossy(&self.dir.path().join("containerd.log"))
    }

    /// Runs `ctr` against this containerd in namespace `test` (bounded by `timeout`).
    /// Ok(stdout) on success, Err(stdout + stderr) on failure or timeout.
    pub fn ctr(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let out_dir = TempDir::new().unwrap();
        let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
        let mut child = Command::new("/usr/bin/ctr")
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg("test")
            .args(args)
            // `ctr images mount` ignores its --snapshotter flag in 1.6; the env var works.
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("run ctr");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = (read_lossy(&out_path), read_lossy(&err_path));
        match status {
            Some(s) if s.success() => Ok(out),
            Some(s) => Err(format!("ctr {args:?} failed ({s}):\n{out}\n{err}")),
            None => Err(format!("ctr {args:?} timed out after {timeout:?}:\n{out}\n{err}")),
        }
    }

    /// `ctr images pull --snapshotter native --hosts-dir <hosts> <image_ref>` (90 s bound).
    pub fn pull(&self, image_ref: &str, hosts: &Path) -> Result<String, String> {
        let hosts = hosts.to_str().unwrap();
        self.ctr(
            &["images", "pull", "--snapshotter", "native", "--hosts-dir", hosts, image_ref],
            Duration::from_secs(90),
        )
    }

    /// Digest (`sha256:…`) of the image `image_ref` as containerd recorded it.
    pub fn image_digest(&self, image_ref: &str) -> Option<String> {
        let out = self.ctr(&["images", "ls"], Duration::from_secs(20)).ok()?;
        out.lines()
            .filter(|l| l.split_whitespace().next() == Some(image_ref))
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")).map(str::to_string))
    }

    /// Reads `path` from the unpacked snapshots of the native snapshotter (any
    /// snapshot that has it). Proves the layers were unpacked, not only fetched.
    /// (`ctr images mount` in 1.6 ignores `--snapshotter`, so we look on disk.)
    pub fn read_unpacked_file(&self, path: &str) -> Result<Vec<u8>, String> {
        let snaps = self.dir.path().join("root/io.containerd.snapshotter.v1.native/snapshots");
        let entries = fs::read_dir(&snaps).map_err(|e| format!("{}: {e}", snaps.display()))?;
        for e in entries.flatten() {
            if let Ok(b) = fs::read(e.path().join(path.trim_start_matches('/'))) {
                return Ok(b);
            }
        }
        Err(format!("{path} is in no native snapshot under {}", snaps.display()))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SIGTERM first so it releases mounts; SIGKILL if it lingers.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        kill_and_reap(&mut self.child);
    }
}
