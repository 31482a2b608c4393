//! The shared pin store on PostgreSQL, for several replicas of the mirror.
//!
//! Replicas agree on a pin through the primary key: each one inserts with
//! `ON CONFLICT DO NOTHING` and then reads back whatever row won. The schema
//! is migrated at open under an advisory lock, so replicas starting together
//! do not race on `CREATE TABLE`.
//!
//! Connections are plain TCP (`NoTls`): TLS to the database is not
//! implemented yet, so keep it on loopback or a trusted network.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls, Row};

use super::{MoveEvent, Pin, PinError};

/// Each connection pipelines concurrent queries, so a few are plenty; more
/// would only spread one replica's load across server backends.
const POOL_SIZE: usize = 4;

/// Applied in order, each once, recorded in `schema_version` under the
/// component name `pins`. Append; never edit a released migration.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS pins (
        registry   text   NOT NULL,
        repository text   NOT NULL,
        tag        text   NOT NULL,
        digest     text   NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{64}$'),
        pinned_at  bigint NOT NULL,
        policy     text   NOT NULL,
        PRIMARY KEY (registry, repository, tag)
    );
    CREATE TABLE IF NOT EXISTS pin_moves (
        id         bigserial PRIMARY KEY,
        registry   text   NOT NULL,
        repository text   NOT NULL,
        tag        text   NOT NULL,
        pinned     text   NOT NULL,
        seen       text   NOT NULL,
        at         bigint NOT NULL,
        policy     text   NOT NULL,
        UNIQUE (registry, repository, tag, pinned, seen)
    );",
)];

/// Serializes migrations across replicas ("sigmpins" in ASCII).
const MIGRATION_LOCK: i64 = 0x7369_676d_7069_6e73;

/// How many times `insert_if_absent` retries when the row that beat it was
/// forgotten before it could be read back.
const INSERT_ATTEMPTS: u32 = 5;

pub(super) struct PostgresStore {
    config: Config,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Client>>>>,
    next: AtomicUsize,
}

impl PostgresStore {
    /// Connects, migrates the schema, and keeps that first connection in the pool.
    pub(super) async fn open(url: &str, password: Option<&str>) -> Result<PostgresStore, PinError> {
        let mut config: Config = url.parse()?;
        if let Some(pw) = password {
            config.password(pw);
        }
        if config.get_connect_timeout().is_none() {
            // Without one, an unreachable server blocks startup for the
            // kernel's TCP timeout (minutes).
            config.connect_timeout(Duration::from_secs(10));
        }
        let mut client = connect(&config).await?;
        migrate(&mut client).await?;
        let slots: Vec<_> = (0..POOL_SIZE).map(|_| tokio::sync::Mutex::new(None)).collect();
        *slots[0].lock().await = Some(Arc::new(client));
        Ok(PostgresStore { config, slots, next: AtomicUsize::new(0) })
    }

    /// `host:port/dbname`, without user or password.
    pub(super) fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}/{}", self.config.get_dbname().unwrap_or("-"))
    }

    /// A live connection from the pool, reconnecting a slot whose connection
    /// has closed (say, after a database restart).
    async fn client(&self) -> Result<Arc<Client>, PinError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(connect(&self.config).await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    pub(super) async fn get(&self, registry: &str, repository: &str, tag: &str) -> Result<Option<Pin>, PinError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT registry, repository, tag, digest, pinned_at, policy FROM pins
                 WHERE registry = $1 AND repository = $2 AND tag = $3",
                &[&registry, &repository, &tag],
            )
            .await?;
        row.map(|r| pin_from_row(&r)).transpose()
    }

    /// Insert-if-absent. Returns the stored pin and whether this call stored it.
    ///
    /// Two statements on purpose: `ON CONFLICT DO NOTHING` waits for a
    /// concurrent insert of the same key to commit, and the SELECT after it
    /// runs on a fresh snapshot (READ COMMITTED) that sees that winner. A
    /// single statement with a CTE would read the pre-insert snapshot and
    /// could find nothing.
    pub(super) async fn insert_if_absent(&self, p: &Pin) -> Result<(Pin, bool), PinError> {
        let c = self.client().await?;
        for _ in 0..INSERT_ATTEMPTS {
            let inserted = c
                .execute(
                    "INSERT INTO pins (registry, repository, tag, digest, pinned_at, policy)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (registry, repository, tag) DO NOTHING",
                    &[&p.registry, &p.repository, &p.tag, &p.digest.as_str(), &p.pinned_at, &p.policy],
                )
                .await?;
            if inserted == 1 {
                return Ok((p.clone(), true));
            }
            if let Some(existing) = self.get(&p.registry, &p.repository, &p.tag).await? {
                return Ok((existing, false));
            }
            // The winner was forgotten between our two statements: try again.
        }
        Err(PinError::Contended(INSERT_ATTEMPTS))
    }

    pub(super) async fn record_move(&self, ev: &MoveEvent) -> Result<(), PinError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO pin_moves (registry, repository, tag, pinned, seen, at, policy)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (registry, repository, tag, pinned, seen) DO NOTHING",
            &[&ev.registry, &ev.repository, &ev.tag, &ev.pinned.as_str(), &ev.seen.as_str(), &ev.at, &ev.policy],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn list(&self) -> Result<Vec<Pin>, PinError> {
        let c = self.client().await?;
        let rows = c.query("SELECT registry, repository, tag, digest, pinned_at, policy FROM pins", &[]).await?;
        rows.iter().map(pin_from_row).collect()
    }

    pub(super) async fn moves(&self) -> Result<Vec<MoveEvent>, PinError> {
        let c = self.client().await?;
        let rows = c
            .query("SELECT registry, repository, tag, pinned, seen, at, policy FROM pin_moves ORDER BY id", &[])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MoveEvent {
                    registry: r.try_get(0)?,
                    repository: r.try_get(1)?,
                    tag: r.try_get(2)?,
                    pinned: digest(r.try_get(3)?)?,
                    seen: digest(r.try_get(4)?)?,
                    at: r.try_get(5)?,
                    policy: r.try_get(6)?,
                })
            })
            .collect()
    }

    pub(super) async fn forget(&self, registry: &str, repository: &str, tag: &str) -> Result<bool, PinError> {
        let c = self.client().await?;
        let n = c
            .execute(
                "DELETE FROM pins WHERE registry = $1 AND repository = $2 AND tag = $3",
                &[&registry, &repository, &tag],
            )
            .await?;
        Ok(n > 0)
    }
}

async fn connect(config: &Config) -> Result<Client, PinError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            // The pool notices the closed client and reconnects on next use.
            tracing::warn!(error = %e, "postgres pin store connection closed");
        }
    });
    // `pin` promises the pin is durable when it returns; a server or role
    // configured with synchronous_commit=off would break that silently.
    client.batch_execute("SET synchronous_commit TO on").await?;
    Ok(client)
}

/// Brings the schema up to the newest migration this build knows.
async fn migrate(client: &mut Client) -> Result<(), PinError> {
    let supported = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    let txn = client.transaction().await?;
    // Held until commit: concurrent replicas queue here instead of racing on
    // CREATE TABLE IF NOT EXISTS, which is not safe against concurrent creators.
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            component  text        NOT NULL,
            version    integer     NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (component, version)
        )",
    )
    .await?;
    let current: i32 = txn
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version WHERE component = 'pins'", &[])
        .await?
        .try_get(0)?;
    if current > supported {
        // A newer build migrated this database; we cannot know what changed.
        return Err(PinError::SchemaTooNew { found: current.into(), supported: supported.into() });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        txn.batch_execute(sql).await?;
        txn.execute("INSERT INTO schema_version (component, version) VALUES ('pins', $1)", &[version]).await?;
    }
    txn.commit().await?;
    Ok(())
}

fn digest(s: String) -> Result<crate::oci::Digest, PinError> {
    s.parse().map_err(|e: crate::oci::InvalidDigest| PinError::Corrupt(e.to_string()))
}

fn pin_from_row(r: &Row) -> Result<Pin, PinError> {
    Ok(Pin {
        registry: r.try_get(0)?,
        repository: r.try_get(1)?,
        tag: r.try_get(2)?,
        digest: digest(r.try_get(3)?)?,
        pinned_at: r.try_get(4)?,
        policy: r.try_get(5)?,
    })
}
