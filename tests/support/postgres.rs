//! A throwaway PostgreSQL cluster for integration tests, stopped and deleted on drop.
//!
//! Each `TestPostgres::start()` runs `initdb` into a fresh temp dir and starts
//! the server on a free loopback port, with its Unix socket in that temp dir
//! too, so nothing is shared with a system cluster or with other tests. It
//! panics, with the server log, when the cluster cannot start: a test that
//! needs PostgreSQL must fail rather than pass without it.
//!
//! Binaries come from `$SIGMIRROR_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's `postgresql` package).
//! PostgreSQL refuses to run as root, so when we are root every command runs
//! as the `postgres` user through `runuser`.
//!
//! Include it with `#[path = "support/postgres.rs"] mod postgres;`.
#![allow(dead_code)]

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Start attempts: another process can take the port we picked between our
/// probe and the server's bind.
const START_ATTEMPTS: u32 = 5;
/// Bound for any one initdb / pg_ctl / psql run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// What pg_ctl itself waits for start and stop (`-t`), below COMMAND_TIMEOUT.
const PG_CTL_WAIT_SECS: &str = "30";

pub struct TestPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`; trust auth, no password.
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    running: bool,
    dir: tempfile::TempDir,
}

impl TestPostgres {
    /// Creates and starts a cluster, or panics saying why.
    pub fn start() -> TestPostgres {
        let bin = pg_bin();
        let dir = tempfile::Builder::new().prefix("sigmirror-pg-").tempdir().expect("create temp dir for postgres");
        if running_as_root() {
            let st =
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("run chown");
            assert!(st.success(), "chown of {} to postgres failed", dir.path().display());
        }
        let data = dir.path().join("data");
        let (ok, out) = run_as_postgres(
            dir.path(),
            "initdb",
            Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ]),
        );
        assert!(ok, "initdb failed:\n{out}");

        let mut pg = TestPostgres { url: String::new(), port: 0, bin, data, running: false, dir };
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match pg.pg_ctl_start(port) {
                Ok(()) => {
                    pg.port = port;
                    pg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                    pg.running = true;
                    pg.wait_for_tcp();
                    return pg;
                }
                Err(e) => last_failure = e,
            }
        }
        panic!("postgres did not start after {START_ATTEMPTS} attempts:\n{last_failure}");
    }

    /// A new, empty database in this cluster; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "plain names only");
        let port = self.port.to_string();
        let (ok, out) = run_as_postgres(
            self.dir.path(),
            "psql",
            Command::new(self.bin.join("psql")).args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ]),
        );
        assert!(ok, "CREATE DATABASE {name} failed:\n{out}");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the server (fast: open connections are cut) and starts it again
    /// on the same port, for tests of reconnection.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        if let Err(e) = self.pg_ctl_start(port) {
            panic!("postgres did not restart on port {port}:\n{e}");
        }
        self.running = true;
        self.wait_for_tcp();
    }

    /// Stops the server; idempotent. Falls back to SIGKILL so a wedged server
    /// cannot outlive the test.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let (ok, out) = run_as_postgres(
            self.dir.path(),
            "pg_ctl-stop",
            Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args([
                "-m",
                "immediate",
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "stop",
            ]),
        );
        if !ok {
            eprintln!("pg_ctl stop failed, killing the postmaster:\n{out}");
            if let Some(pid) = std::fs::read_to_string(self.data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::trim).map(str::to_string))
            {
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
        }
    }

    /// The server log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pg_ctl_start(&self, port: u16) -> Result<(), String> {
        let socket_dir = self.dir.path().display().to_string();
        // fsync off: the cluster is thrown away, and crash safety of
        // PostgreSQL itself is not what these tests check.
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={socket_dir} -c fsync=off -c max_connections=100"
        );
        let log = self.dir.path().join("server.log");
        let (ok, out) = run_as_postgres(
            self.dir.path(),
            "pg_ctl-start",
            Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).arg("-l").arg(&log).args([
                "-o",
                &opts,
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "start",
            ]),
        );
        if ok {
            Ok(())
        } else {
            // A failed start may leave a half-started postmaster behind.
            let _ = run_as_postgres(
                self.dir.path(),
                "pg_ctl-stop",
                Command::new(self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]),
            );
            Err(format!("pg_ctl start on port {port}:\n{out}\n--- server log ---\n{}", self.log()))
        }
    }

    /// pg_ctl -w already waited for readiness; this checks the TCP listener
    /// we will use is really there, bounded in attempts and time.
    fn wait_for_tcp(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..200 {
            if TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("postgres is not accepting TCP on 127.0.0.1:{}\n{}", self.port, self.log());
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pg_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIGMIRROR_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (install Debian's `postgresql` package) \
             and SIGMIRROR_PG_BIN is not set; the postgres tests cannot run"
        ),
    }
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().unwrap().port()
}

/// Runs `cmd` (as `postgres` when we are root) with its output in a file in
/// `dir` rather than a pipe: pg_ctl leaves a daemon behind, and a daemon
/// holding our pipe open would make waiting for EOF hang. Killed past
/// COMMAND_TIMEOUT. Returns success and the output.
fn run_as_postgres(dir: &Path, label: &str, cmd: &mut Command) -> (bool, String) {
    let out_path = dir.join(format!("{label}.out"));
    let out = File::create(&out_path).expect("create command output file");
    let mut full = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd.get_program()).args(cmd.get_args());
        c
    } else {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args());
        c
    };
    let mut child = full
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status: Option<ExitStatus> = loop {
        match child.try_wait().expect("wait for command") {
            Some(st) => break Some(st),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(st) => (st.success(), format!("{label}: {st}\n{text}")),
        None => (false, format!("{label}: killed after {COMMAND_TIMEOUT:?}\n{text}")),
    }
}
