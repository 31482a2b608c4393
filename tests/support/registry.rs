//! [`Registry`]: the real `docker-registry` (distribution 2.8) on a free port.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, kill_and_reap, read_lossy, try_http_timeout};

/// The real `docker-registry` (distribution 2.8) serving from a tempdir.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    child: Child,
    dir: TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let bin = "/usr/bin/docker-registry";
        assert!(Path::new(bin).exists(), "{bin} is missing: apt-get install docker-registry");
        let dir = TempDir::new().unwrap();
        let mut last_log = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let storage = dir.path().join("storage");
            fs::create_dir_all(&storage).unwrap();
            let config = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\nhttp:\n  addr: {host}\n",
                storage.display()
            );
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join(format!("registry-{attempt}.log"));
            let log = fs::File::create(&log_path).unwrap();
            let mut child = Command::new(bin)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut ready = false;
            for _ in 0..400 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if let Ok(r) = try_http_timeout("GET", &format!("http://{host}/v2/"), &[], &[], Duration::from_secs(2))
                {
                    if r.status == 200 {
                        ready = true;
                        break;
                    }
                }
                if Instant::now() > deadline {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            if ready {
                return Registry { host, child, dir };
            }
            kill_and_reap(&mut child);
            last_log = read_lossy(&log_path);
        }
        panic!("docker-registry did not come up after 5 attempts; last log:\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host)
    }

    /// How many requests upstream received for `method` and `path` (the
    /// query ignored), counted from the registry's own access log: what
    /// reached the registry, not what sigmirror thinks it sent.
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let needle = format!("\"{method} {path}");
        self.logs()
            .lines()
            .filter(|l| {
                l.find(&needle).is_some_and(|i| matches!(l.as_bytes().get(i + needle.len()), Some(b' ' | b'?')))
            })
            .count()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..5 {
            out.push_str(&read_lossy(&self.dir.path().join(format!("registry-{i}.log"))));
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
