//! [`Sigmirror`]: the real binary under test in its own tempdir, its stderr
//! kept in a log file; [`mirror_config`] and [`policy`] write its config.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{http, kill_and_reap, read_lossy};

/// The sigmirror binary under test, serving from its own tempdir.
pub struct Sigmirror {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `127.0.0.1:PORT` of `admin_listen`, when the config sets it.
    pub admin_addr: Option<String>,
    pub dir: TempDir,
    config_path: PathBuf,
    child: Option<Child>,
    starts: usize,
}

/// A sigmirror config: `listen = 127.0.0.1:0`, `data_dir = "data"`, one default
/// upstream `registry.test` at `upstream_url`, then `rest` (policies etc.) verbatim.
pub fn mirror_config(upstream_url: &str, rest: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[[upstream]]\nregistry = \"registry.test\"\nurl = \
         \"{upstream_url}\"\ndangerous_plain_http = true\ndefault = true\n\n{rest}\n"
    )
}

/// One `[[policy]]` table.
pub fn policy(name: &str, scope: &[&str], mode: &str) -> String {
    let scope: Vec<String> = scope.iter().map(|s| format!("{s:?}")).collect();
    format!("[[policy]]\nname = {name:?}\nscope = [{}]\nmode = {mode:?}\n", scope.join(", "))
}

impl Sigmirror {
    /// Writes `config_toml` as `sigmirror.toml` in a fresh tempdir and starts the binary.
    pub fn start(config_toml: &str) -> Sigmirror {
        Self::start_in(TempDir::new().unwrap(), config_toml)
    }

    /// Like [`Sigmirror::start`] in a directory the test prepared (trust files etc.).
    pub fn start_in(dir: TempDir, config_toml: &str) -> Sigmirror {
        let config_path = dir.path().join("sigmirror.toml");
        fs::write(&config_path, config_toml).unwrap();
        let mut s = Sigmirror { addr: String::new(), admin_addr: None, dir, config_path, child: None, starts: 0 };
        s.spawn().unwrap_or_else(|e| panic!("{e}"));
        s
    }

    /// Runs `sigmirror serve`; Err (with the logs) when it exits or never prints its address.
    pub fn try_start(config_toml: &str) -> Result<Sigmirror, String> {
        let dir = TempDir::new().unwrap();
        let config_path = dir.path().join("sigmirror.toml");
        fs::write(&config_path, config_toml).unwrap();
        let mut s = Sigmirror { addr: String::new(), admin_addr: None, dir, config_path, child: None, starts: 0 };
        s.spawn()?;
        Ok(s)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sigmirror.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        // `SIGMIRROR_BIN` runs another build of the same binary (the soak
        // runs the release one from a debug test).
        let bin = std::env::var_os("SIGMIRROR_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_sigmirror").into());
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("SIGMIRROR_LOG", std::env::var("SIGMIRROR_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run sigmirror: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let stdout_path = self.dir.path().join(format!("stdout-{}.txt", self.starts));
        thread::spawn(move || {
            let mut copy = fs::File::create(stdout_path).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                kill_and_reap(&mut child);
                return Err(format!(
                    "sigmirror printed no listening line within 20 s; stdout: {seen:?}\nlog:\n{}",
                    self.logs()
                ));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(rest) = line
                        .strip_prefix("sigmirror listening on http://")
                        .or_else(|| line.strip_prefix("sigmirror listening on https://"))
                    {
                        break rest.trim().to_string();
                    }
                    if let Some(rest) = line.strip_prefix("sigmirror admin listening on http://") {
                        self.admin_addr = Some(rest.trim().to_string());
                    }
                    seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!(
                            "sigmirror exited with {status} before listening; stdout: {seen:?}\nlog:\n{}",
                            self.logs()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().ok();
                    return Err(format!(
                        "sigmirror closed stdout (exit {status:?}) before listening; stdout: {seen:?}\nlog:\n{}",
                        self.logs()
                    ));
                }
            }
        };
        self.addr = addr;
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the process wrote to stderr so far (all runs).
    pub fn logs(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Waits (bounded) until the log contains `needle`, as is or as the
    /// text log writes it inside a quoted logfmt value (`"` and `\` escaped);
    /// returns the logs.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let quoted = sigmirror::logging::logfmt_value(needle);
        let escaped = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(&quoted).to_string();
        let mut last = String::new();
        let deadline = Instant::now() + timeout;
        for _ in 0..((timeout.as_millis() / 50) as usize + 2) {
            last = self.logs();
            if last.contains(needle) || last.contains(&escaped) || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        assert!(
            last.contains(needle) || last.contains(&escaped),
            "sigmirror log never contained {needle:?}; log:\n{last}"
        );
        last
    }

    /// The value of the first `/metrics` line starting with `line_prefix`
    /// (metric name and labels), or 0 when there is none yet. A prefix that
    /// closes its labels (`…{kind="blob"}`) sums every series that has those
    /// labels first and more after them (`…{kind="blob",status_class="2xx"}`).
    pub fn metric(&self, line_prefix: &str) -> u64 {
        let text = http("GET", &format!("{}/metrics", self.url()), &[]).text();
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let Some(open) = line_prefix.strip_suffix('}').map(|p| format!("{p},")) else {
            return text.lines().find(|l| l.starts_with(line_prefix)).map(value).unwrap_or(0.0) as u64;
        };
        text.lines().filter(|l| l.starts_with(line_prefix) || l.starts_with(&open)).map(value).sum::<f64>() as u64
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process id of the running binary.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("sigmirror is not running").id()
    }

    /// A `/proc/<pid>/status` field in KiB: `VmRSS` (resident now) or
    /// `VmHWM` (the most it was ever resident).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// SIGKILL, as in a crash. The data dir stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the running binary.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(self.pid().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {} failed", self.pid());
    }

    /// Waits (bounded) for the binary to exit on its own; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        for _ in 0..((timeout.as_millis() / 50) as usize + 2) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops (SIGKILL) if running and starts again on the same address, same
    /// config and data dir. The config's `listen` line is rewritten to the old address.
    pub fn restart(&mut self) {
        self.kill9();
        let text = fs::read_to_string(&self.config_path).unwrap();
        let mut replaced = false;
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if !replaced && l.trim_start().starts_with("listen") && l.contains('=') {
                    replaced = true;
                    format!("listen = \"{}\"", self.addr)
                } else {
                    l.to_string()
                }
            })
            .collect();
        fs::write(&self.config_path, new.join("\n") + "\n").unwrap();
        // The old port may linger briefly; retry a few times.
        let mut last = String::new();
        for _ in 0..10 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(300));
        }
        panic!("sigmirror did not restart on {}: {last}", self.addr);
    }
}

impl Drop for Sigmirror {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() || std::env::var_os("SIGMIRROR_TEST_SHOW_LOGS").is_some() {
            eprintln!("----- sigmirror log ({}) -----\n{}\n----- end -----", self.addr, self.logs());
        }
    }
}
