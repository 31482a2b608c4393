//! Hot reload: the config file and every file it references are watched,
//! and on a change (or SIGHUP) everything is loaded and validated again,
//! then swapped in whole (`App::replace`). A config with any problem is
//! rejected whole: the running one stays, and `/readyz` and
//! `sigmirror_config_stale` say it is stale, and why.
//!
//! Watching is a poll, once a second, of each watched path's resolved
//! target, inode, size and modification time (directories walked, bounded),
//! rather than inotify (`notify`). Why: Kubernetes updates a ConfigMap
//! volume by swapping a `..data` symlink to a new directory, which inotify
//! on the file never reports (the watched inode simply stops changing), and
//! which needs directory watches on every parent to see; editors replace
//! files by rename; inotify watch limits are per user and easily exhausted on
//! a busy node. A stat of a few dozen small files a second costs nothing
//! next to that, and the resolved target catches every symlink swap.
//!
//! A change is applied once the files have stayed unchanged for one more
//! poll, so a rollout that writes a key and then the config is not loaded
//! half-way (which would be rejected, or worse, accepted as an odd mix).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::signal::unix::Signal;

use crate::app::App;
use crate::config::Problems;
use crate::metrics::{ResultLabels, METRICS};

/// How often the watched files are looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// At most this many directory entries are looked at in one poll, so a
/// trust store pointed at `/` cannot make every poll walk a disk.
const MAX_ENTRIES: usize = 10_000;
const MAX_DEPTH: usize = 6;
/// Problems quoted in `/readyz`; all of them are logged.
const MAX_QUOTED: usize = 10;

/// Watches `config` and what it references until the process drains;
/// reloads on a change and on each `hup` (SIGHUP).
pub async fn watch(app: Arc<App>, config: PathBuf, mut hup: Option<Signal>) {
    let mut watched = app.mirror().config.watched.clone();
    let mut seen = stamp_blocking(watched.clone()).await;
    let mut pending = false;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            () = next_signal(&mut hup) => true,
        };
        if app.health.is_draining() {
            return;
        }
        let now = stamp_blocking(watched.clone()).await;
        if !signalled {
            if now != seen {
                // Changed: wait one poll for it to settle.
                seen = now;
                pending = true;
                continue;
            }
            if !pending {
                continue;
            }
        }
        pending = false;
        let why = if signalled { "SIGHUP" } else { "a watched file changed" };
        let (app2, path) = (app.clone(), config.clone());
        watched = match tokio::task::spawn_blocking(move || reload(&app2, &path, why)).await {
            Ok(w) => w,
            Err(e) => {
                // A panic in loading: keep the old config and the old watch list.
                tracing::error!("config reload failed: {e}");
                watched
            }
        };
        seen = stamp_blocking(watched.clone()).await;
    }
}

async fn next_signal(hup: &mut Option<Signal>) {
    let got = match hup {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !got {
        // No handler, or its stream ended: only file changes reload.
        std::future::pending::<()>().await;
    }
}

/// Loads `config` and, when it validates, makes it the running mirror;
/// when not, keeps the running one and marks it stale. Returns the paths to
/// watch from now on: those of the attempt, so a rejected config that names
/// a missing file is retried when the file appears.
pub fn reload(app: &App, config: &Path, why: &str) -> Vec<PathBuf> {
    let (loaded, mut watched) = crate::load_watching(config);
    match loaded {
        Ok(mirror) => {
            warn_restart_only(&app.mirror().config, &mirror.config);
            mirror.log_warnings();
            app.replace(mirror);
            app.health.set_stale(None);
            METRICS.config_reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
            tracing::info!(file = %config.display(), "config reloaded ({why})");
        }
        Err(problems) => {
            for p in &problems.0 {
                tracing::error!(
                    file = %p.file.display(),
                    key = %p.key,
                    "config reload rejected: {} (fix: {})",
                    p.message,
                    p.fix
                );
            }
            app.health.set_stale(Some(stale_reason(&problems)));
            METRICS.config_reloads.get_or_create(&ResultLabels { result: "error" }).inc();
            tracing::error!(
                file = %config.display(),
                "config reload ({why}) rejected with {} problem(s); the config loaded before stays in force",
                problems.0.len()
            );
            // Keep watching what the running config uses, too.
            for p in &app.mirror().config.watched {
                if !watched.contains(p) {
                    watched.push(p.clone());
                }
            }
        }
    }
    watched
}

fn stale_reason(problems: &Problems) -> String {
    let quoted: Vec<String> = problems.0.iter().take(MAX_QUOTED).map(|p| p.to_string()).collect();
    let more = problems.0.len().saturating_sub(MAX_QUOTED);
    let mut s =
        format!("the last reload was rejected and the config loaded before stays in force: {}", quoted.join("; "));
    if more > 0 {
        s.push_str(&format!("; and {more} more (see the log)"));
    }
    s
}

/// Settings that belong to what outlives a reload (the listener, the pin
/// store): a change is applied at the next restart, and said so.
fn warn_restart_only(old: &crate::config::Config, new: &crate::config::Config) {
    let changed = [
        ("listen", old.listen != new.listen),
        // The connection gate is sized when the listener starts.
        ("limits.max_connections", old.limits.max_connections != new.limits.max_connections),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("log_format", old.log_format != new.log_format),
        ("data_dir", old.data_dir != new.data_dir),
        ("pin_store", old.pin_store != new.pin_store),
        ("pin_revalidate_secs", old.pin_revalidate != new.pin_revalidate),
        ("pins_file", old.pins_file.as_ref().map(|f| &f.bytes) != new.pins_file.as_ref().map(|f| &f.bytes)),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        tracing::warn!(key, "{key} changed; it takes effect at the next restart");
    }
}

/// What a poll compares: per path (and entry of a watched directory), where
/// it resolves to and the identity, size and time of what is there.
#[derive(Debug, PartialEq, Eq)]
struct Stamp(Vec<Seen>);

/// One path: itself, what it resolves to, and (inode, size, mtime in ns,
/// is a directory) of what is there, when anything is.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    path: PathBuf,
    target: Option<PathBuf>,
    facts: Option<(u64, u64, u128, bool)>,
}

async fn stamp_blocking(paths: Vec<PathBuf>) -> Option<Stamp> {
    tokio::task::spawn_blocking(move || stamp(&paths)).await.ok()
}

fn stamp(paths: &[PathBuf]) -> Stamp {
    let mut out = Vec::new();
    for p in paths {
        entry(p, 0, &mut out);
    }
    Stamp(out)
}

fn entry(p: &Path, depth: usize, out: &mut Vec<Seen>) {
    if out.len() >= MAX_ENTRIES {
        return;
    }
    let target = std::fs::canonicalize(p).ok();
    let meta = std::fs::metadata(p).ok();
    let facts = meta.as_ref().map(|m| {
        use std::os::unix::fs::MetadataExt;
        let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        (m.ino(), m.len(), mtime, m.is_dir())
    });
    out.push(Seen { path: p.to_path_buf(), target, facts });
    if meta.is_some_and(|m| m.is_dir()) && depth < MAX_DEPTH {
        let mut children: Vec<PathBuf> = match std::fs::read_dir(p) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).take(MAX_ENTRIES).collect(),
            Err(_) => return,
        };
        children.sort();
        for c in children {
            entry(&c, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_swap_changes_the_stamp_even_when_the_file_looks_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("..2024_a"), dir.path().join("..2024_b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("key.pub"), "same length!").unwrap();
        }
        std::os::unix::fs::symlink("..2024_a", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/key.pub", dir.path().join("key.pub")).unwrap();
        let watched = vec![dir.path().join("key.pub")];
        let before = stamp(&watched);
        assert_eq!(before, stamp(&watched));
        // What the kubelet does: a new link renamed over `..data`.
        std::os::unix::fs::symlink("..2024_b", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert_ne!(before, stamp(&watched));
    }

    #[test]
    fn a_file_appearing_in_a_watched_directory_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x509/ca/acme")).unwrap();
        let watched = vec![dir.path().to_path_buf(), dir.path().join("missing.pem")];
        let before = stamp(&watched);
        std::fs::write(dir.path().join("x509/ca/acme/root.pem"), "x").unwrap();
        let after = stamp(&watched);
        assert_ne!(before, after);
        std::fs::write(dir.path().join("missing.pem"), "x").unwrap();
        assert_ne!(after, stamp(&watched));
    }
}
