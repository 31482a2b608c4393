//! [`InProcess`]: the server of `sigmirror serve` run inside the test process,
//! on its own thread and tokio runtime, for tests that only look at HTTP
//! answers. No child process: no log file, no `/proc`, no restart.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use sigmirror::app::App;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// How long [`InProcess::start`] waits for the server to listen, and `Drop`
/// for it to stop (`sigmirror::run` itself gives open connections 10 s).
const START_WAIT: Duration = Duration::from_secs(20);
const STOP_WAIT: Duration = Duration::from_secs(15);

/// A test's view of a running mirror, in-process or a child process.
pub trait Served {
    /// `http://127.0.0.1:PORT`
    fn url(&self) -> String;
}

impl Served for super::Sigmirror {
    fn url(&self) -> String {
        super::Sigmirror::url(self)
    }
}

impl Served for InProcess {
    fn url(&self) -> String {
        InProcess::url(self)
    }
}

/// `sigmirror::load` + `App::new` + `sigmirror::run` on 127.0.0.1:0, in a
/// tempdir holding `sigmirror.toml`. Stops on `Drop` (bounded).
pub struct InProcess {
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub dir: TempDir,
    config_path: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    /// Signalled when the server thread is about to end.
    done: mpsc::Receiver<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl InProcess {
    /// Writes `config_toml` as `sigmirror.toml` in a fresh tempdir and serves
    /// it with the pin store open, as `sigmirror serve` does.
    pub fn start(config_toml: &str) -> InProcess {
        Self::start_in(TempDir::new().unwrap(), config_toml, true)
    }

    /// Like [`InProcess::start`] with no pin store (`App::new(mirror, None)`):
    /// tags are neither pinned nor checked against pins.
    pub fn start_without_pins(config_toml: &str) -> InProcess {
        Self::start_in(TempDir::new().unwrap(), config_toml, false)
    }

    /// In a directory the test prepared (trust files etc.).
    pub fn start_in(dir: TempDir, config_toml: &str, pins: bool) -> InProcess {
        Self::try_start_in(dir, config_toml, pins).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Err when the config does not load, the pin store does not open, or
    /// nothing listens within 20 s.
    pub fn try_start_in(dir: TempDir, config_toml: &str, pins: bool) -> Result<InProcess, String> {
        let config_path = dir.path().join("sigmirror.toml");
        fs::write(&config_path, config_toml).unwrap();
        if let Ok(filter) = std::env::var("SIGMIRROR_TEST_LOG") {
            // One subscriber per test binary; later calls keep the first.
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let path = config_path.clone();
        let thread = thread::Builder::new()
            .name("sigmirror-inprocess".into())
            .spawn(move || {
                serve(&path, pins, ready_tx, shutdown_rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("cannot start the server thread: {e}"))?;
        let addr = match ready_rx.recv_timeout(START_WAIT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(e) => return Err(format!("in-process sigmirror did not listen within {START_WAIT:?}: {e}")),
        };
        Ok(InProcess { addr, dir, config_path, shutdown: Some(shutdown_tx), done: done_rx, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

/// What `sigmirror serve` does between loading the config and serving, on a
/// runtime of its own; reports the bound address (or why not) on `ready`.
fn serve(config: &Path, with_pins: bool, ready: mpsc::Sender<Result<String, String>>, shutdown: oneshot::Receiver<()>) {
    let rt = match sigmirror::runtime() {
        Ok(rt) => rt,
        Err(e) => return drop(ready.send(Err(format!("cannot start the async runtime: {e}")))),
    };
    rt.block_on(async move {
        let mirror = match sigmirror::load(config) {
            Ok(m) => m,
            Err(problems) => return drop(ready.send(Err(format!("config does not load:\n{problems}")))),
        };
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => return drop(ready.send(Err(format!("cannot listen on 127.0.0.1:0: {e}")))),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a.to_string(),
            Err(e) => return drop(ready.send(Err(format!("no local address: {e}")))),
        };
        // With pins, exactly what `serve` starts (`App::start`).
        let app = if with_pins {
            match App::start(mirror).await {
                Ok(app) => app,
                Err(e) => return drop(ready.send(Err(e))),
            }
        } else {
            App::new(mirror, None)
        };
        let app = Arc::new(app);
        let _ = ready.send(Ok(addr));
        let stop = async move {
            // A dropped sender stops the server too.
            let _ = shutdown.await;
        };
        if let Err(e) = sigmirror::run(listener, app, stop).await {
            eprintln!("in-process sigmirror stopped: {e:#}");
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Bounded: a server that does not stop in time is left behind (its
        // thread ends with the test process) rather than hanging the test.
        match self.done.recv_timeout(STOP_WAIT) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("in-process sigmirror on {} did not stop within {STOP_WAIT:?}", self.addr);
            }
        }
    }
}
