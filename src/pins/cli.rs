//! `sigmirror pins …`: the operator's view of the pin store.
//!
//! While a server runs with `admin_listen` set, every verb goes through its
//! admin API ([`AdminClient`]): the embedded store is locked by the server,
//! and a `forget` has to reach the server's own cache anyway. With no server
//! answering there, the store is opened directly. Output is a table for a
//! person, or JSON with `--json`; `export` always writes a pins file.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::remote::{AdminClient, RemoteError};
use super::{ImportReport, MoveEvent, Pin, PinError, PinStore, PinsFile};
use crate::mirror::Mirror;
use crate::oci::{ImageRef, ManifestRef};

pub enum Action {
    Export,
    Import {
        file: PathBuf,
    },
    /// `moved`: only pins upstream moved away from, with their moves.
    List {
        moved: bool,
    },
    /// Every recorded move, forgotten pins' included.
    Moves,
    /// `<registry>/<repository>:<tag>`, as the operator typed it.
    Forget {
        reference: String,
    },
}

pub struct Options {
    pub json: bool,
    /// `--admin <url>`: this server's admin API, whatever the config says.
    pub admin: Option<String>,
}

/// Where the pins are reached.
enum Store {
    Local(PinStore),
    Admin(AdminClient),
}

/// Runs one verb; `Ok` is what to print on stdout, `Err` the message for
/// stderr (exit 1).
pub async fn run(mirror: &Mirror, action: Action, opts: Options) -> Result<String, String> {
    // The reference first: a typo should not wait for a store to open.
    let forget = match &action {
        Action::Forget { reference } => Some(forget_target(mirror, reference)?),
        _ => None,
    };
    let store = open(mirror, opts.admin.as_deref()).await?;
    let json = opts.json;
    match action {
        Action::Export => store.export().await.map(|f| f.to_json()),
        Action::Import { file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let parsed = PinsFile::from_json(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            let report = store.import(&parsed).await?;
            Ok(if json { to_json(&report) } else { import_table(&report) })
        }
        Action::List { moved: false } => {
            let pins = store.list().await?;
            Ok(if json { to_json(&pins) } else { pins_table(&pins) })
        }
        Action::List { moved: true } => {
            let moved = store.list_moved().await?;
            Ok(if json {
                let rows: Vec<_> =
                    moved.iter().map(|(pin, moves)| serde_json::json!({ "pin": pin, "moves": moves })).collect();
                to_json(&rows)
            } else {
                moved_table(&moved)
            })
        }
        Action::Moves => {
            let moves = store.moves().await?;
            Ok(if json { to_json(&moves) } else { moves_table(&moves) })
        }
        Action::Forget { .. } => {
            let (registry, repo, tag) = forget.expect("parsed above");
            let name = format!("{registry}/{repo}:{tag}");
            match store.forget(&registry, &repo, &tag).await? {
                true if json => Ok(to_json(&serde_json::json!({ "forgotten": name }))),
                true => Ok(format!("forgot {name}; its move history is kept (`sigmirror pins moves`)")),
                false if !mirror.upstreams.contains_key(&registry) => Err(format!(
                    "no pin for {name}: {registry:?} is not a configured registry; {}",
                    registry_hint(mirror)
                )),
                false => Err(format!("no pin for {name}")),
            }
        }
    }
}

/// `--admin`, else `admin_listen` when a server answers there, else the
/// store itself.
async fn open(mirror: &Mirror, admin: Option<&str>) -> Result<Store, String> {
    let cfg = &mirror.config;
    // The token is read only once a server answers: with none running there
    // may be no token file at all.
    let token = || {
        crate::admin::Token::read(&cfg.data_dir).map_err(|e| {
            let file = cfg.data_dir.join(crate::admin::TOKEN_FILE);
            format!(
                "cannot read the admin token {}: {e} (run this as the server's user, with its config)",
                file.display()
            )
        })
    };
    if let Some(url) = admin {
        AdminClient::new(url, String::new()).probe().await.map_err(|e| e.to_string())?;
        return Ok(Store::Admin(AdminClient::new(url, token()?)));
    }
    if let Some(addr) = cfg.admin_listen {
        let url = AdminClient::url_for(addr);
        match AdminClient::new(&url, String::new()).probe().await {
            Ok(()) => return Ok(Store::Admin(AdminClient::new(&url, token()?))),
            // No server running: the store is ours to open.
            Err(RemoteError::Unreachable(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    PinStore::open(&cfg.data_dir, cfg.pin_store.as_deref(), cfg.pin_store_password.as_deref())
        .await
        .map(Store::Local)
        .map_err(|e| format!("cannot open the pin store: {e}"))
}

/// `<registry>/<repository>:<tag>`, with the registry one the config knows:
/// pins are kept under the name containerd sends as `ns=`, so `alpine:3.20`
/// or `library/alpine:3.20` can never name one.
fn forget_target(mirror: &Mirror, reference: &str) -> Result<(String, String, String), String> {
    let hint = registry_hint(mirror);
    let image: ImageRef = reference.parse().map_err(|e| format!("{e}; {hint}"))?;
    // A registry the config no longer names can still hold pins, so that is
    // only refused when it has none (in `run`).
    match image.reference {
        ManifestRef::Tag(tag) if reference.rsplit('/').next().is_some_and(|last| last.contains(':')) => {
            Ok((image.registry, image.repo, tag))
        }
        ManifestRef::Tag(_) => Err(format!("{reference:?} names no tag; {hint}")),
        ManifestRef::Digest(_) => Err("forget takes <registry>/<repository>:<tag>, not a digest".into()),
    }
}

/// What to write instead of a reference without its registry.
fn registry_hint(mirror: &Mirror) -> String {
    let mut known: Vec<&str> = mirror.upstreams.keys().map(String::as_str).collect();
    known.sort_unstable();
    let example = format!("{}/library/alpine:3.20", known.first().copied().unwrap_or("registry-1.docker.io"));
    format!(
        "give the registry too, as containerd sends it: <registry>/<repository>:<tag>, for example {example} (configured registries: {})",
        known.join(", ")
    )
}

impl Store {
    async fn list(&self) -> Result<Vec<Pin>, String> {
        match self {
            Store::Local(s) => s.list().await.map_err(local),
            Store::Admin(a) => a.list().await.map_err(remote),
        }
    }

    async fn list_moved(&self) -> Result<Vec<(Pin, Vec<MoveEvent>)>, String> {
        match self {
            Store::Local(s) => s.list_moved().await.map_err(local),
            Store::Admin(a) => a.list_moved().await.map_err(remote),
        }
    }

    async fn moves(&self) -> Result<Vec<MoveEvent>, String> {
        match self {
            Store::Local(s) => s.moves().await.map_err(local),
            Store::Admin(a) => a.moves().await.map_err(remote),
        }
    }

    async fn export(&self) -> Result<PinsFile, String> {
        match self {
            Store::Local(s) => s.export().await.map_err(local),
            Store::Admin(a) => a.export().await.map_err(remote),
        }
    }

    async fn import(&self, f: &PinsFile) -> Result<ImportReport, String> {
        match self {
            Store::Local(s) => s.import(f).await.map_err(local),
            Store::Admin(a) => a.import(f).await.map_err(remote),
        }
    }

    async fn forget(&self, registry: &str, repo: &str, tag: &str) -> Result<bool, String> {
        match self {
            Store::Local(s) => s.forget(registry, repo, tag).await.map_err(local),
            Store::Admin(a) => a.forget(registry, repo, tag).await.map_err(remote),
        }
    }
}

fn local(e: PinError) -> String {
    e.to_string()
}

fn remote(e: RemoteError) -> String {
    e.to_string()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

fn image(registry: &str, repository: &str, tag: &str) -> String {
    format!("{registry}/{repository}:{tag}")
}

fn pins_table(pins: &[Pin]) -> String {
    let rows: Vec<[String; 4]> = pins
        .iter()
        .map(|p| [image(&p.registry, &p.repository, &p.tag), p.digest.to_string(), when(p.pinned_at), p.policy.clone()])
        .collect();
    table(["IMAGE", "DIGEST", "PINNED", "POLICY"], &rows, &format!("{} pin(s)", pins.len()))
}

fn moved_table(moved: &[(Pin, Vec<MoveEvent>)]) -> String {
    let rows: Vec<[String; 5]> = moved
        .iter()
        .filter_map(|(p, moves)| {
            let last = moves.last()?;
            Some([
                image(&p.registry, &p.repository, &p.tag),
                p.digest.to_string(),
                last.seen.to_string(),
                when(last.at),
                moves.len().to_string(),
            ])
        })
        .collect();
    let footer = format!("{} pinned tag(s) moved upstream", moved.len());
    table(["IMAGE", "PINNED", "UPSTREAM NOW", "LAST SEEN", "MOVES"], &rows, &footer)
}

fn moves_table(moves: &[MoveEvent]) -> String {
    let rows: Vec<[String; 5]> = moves
        .iter()
        .map(|m| {
            [
                when(m.at),
                image(&m.registry, &m.repository, &m.tag),
                m.pinned.to_string(),
                m.seen.to_string(),
                m.policy.clone(),
            ]
        })
        .collect();
    table(["SEEN AT", "IMAGE", "PINNED", "UPSTREAM SERVED", "POLICY"], &rows, &format!("{} move(s)", moves.len()))
}

fn import_table(r: &ImportReport) -> String {
    let mut out = format!("inserted {}, unchanged {}, conflicts {}", r.inserted, r.unchanged, r.conflicts.len());
    if !r.conflicts.is_empty() {
        let rows: Vec<[String; 3]> = r
            .conflicts
            .iter()
            .map(|c| {
                let p = &c.existing;
                [image(&p.registry, &p.repository, &p.tag), p.digest.to_string(), c.imported.digest.to_string()]
            })
            .collect();
        out.push_str("\nconflicts keep the stored pin (forget it first to replace it):\n");
        out.push_str(&table(["IMAGE", "STORED", "IN FILE"], &rows, ""));
    }
    out
}

/// Columns padded to their widest cell, then a footer line.
fn table<const N: usize>(headers: [&str; N], rows: &[[String; N]], footer: &str) -> String {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out.push_str(footer);
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_pads_every_column_but_the_last_to_its_widest_cell() {
        let rows =
            [["a".to_string(), "long cell".to_string(), "x".to_string()], ["bbbb".into(), "c".into(), "".into()]];
        let t = table(["H1", "H2", "H3"], &rows, "2 row(s)");
        assert_eq!(t, "H1    H2         H3\na     long cell  x\nbbbb  c\n2 row(s)");
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(when(1_718_000_000), "2024-06-10T06:13:20Z");
    }
}
