//! The `sigmirror` command: parses flags, loads the config, and calls the
//! library. All behaviour lives in the library so tests can drive it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;

use sigmirror::app::App;
use sigmirror::mirror::{Mirror, Pull};
use sigmirror::oci::ImageRef;
use sigmirror::pins::{PinStore, PinsFile};

#[derive(Parser)]
#[command(name = "sigmirror", version, about = "A fail-closed, signature-verifying pull-through OCI mirror")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mirror.
    Serve {
        #[arg(long, default_value = "config/sigmirror.toml")]
        config: PathBuf,
    },
    /// Validate a config and its trust material; print every problem.
    CheckConfig {
        #[arg(long, default_value = "config/sigmirror.toml")]
        config: PathBuf,
    },
    /// Inspect and manage immutable-tag pins (stop the server first when the
    /// embedded store is used: it is locked by one process at a time).
    Pins {
        #[arg(long, default_value = "config/sigmirror.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: PinsAction,
    },
    /// Run the verification engine once on an image and print the verdict as
    /// JSON. Exit 0 when allowed, 1 when refused, 2 on errors.
    Verify {
        #[arg(long, default_value = "config/sigmirror.toml")]
        config: PathBuf,
        /// `<registry>/<repository>:<tag>` or `…@sha256:<hex>`
        image: ImageRef,
    },
}

#[derive(Subcommand)]
enum PinsAction {
    /// Print every pin as a pins file (JSON) on stdout.
    Export,
    /// Add the pins of a file; existing pins are never moved.
    Import { file: PathBuf },
    /// List pins, or with --moved only tags that moved upstream, with their move events.
    List {
        #[arg(long)]
        moved: bool,
    },
    /// Forget one pin, for a deliberate re-release: `<registry>/<repo>:<tag>`.
    Forget { reference: ImageRef },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("SIGMIRROR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: log files and collectors
        // would otherwise get escape codes inside every field.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match sigmirror::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            Command::CheckConfig { config } => check_config(config).await,
            Command::Verify { config, image } => verify(config, image).await,
            Command::Pins { config, action } => pins(config, action).await,
        }
    })
}

fn load(config: &std::path::Path) -> Result<Mirror, ExitCode> {
    sigmirror::load(config).map_err(|problems| {
        eprint!("{problems}");
        ExitCode::from(2)
    })
}

async fn serve(config: PathBuf) -> ExitCode {
    // First of all: without a handler, a SIGHUP (a reload request) would
    // end the process.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP, reload on file change only: {e}");
            None
        }
    };
    let state = match load(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let addr = state.config.listen;
    let scheme = if state.config.tls.is_some() { "https" } else { "http" };
    let (policies, upstreams) = (state.policies.policies.len(), state.upstreams.len());
    state.log_warnings();
    // Everything opened before the listening line, which tests, scripts and
    // probes take to mean "serving".
    let app = match App::start(state).await {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(policies, upstreams, "sigmirror listening on {scheme}://{bound}");
    // Tests and scripts read the bound address (port 0 picks one) from stdout.
    let mut out = tokio::io::stdout();
    let _ = out.write_all(format!("sigmirror listening on {scheme}://{bound}\n").as_bytes()).await;
    let _ = out.flush().await;
    let watcher = tokio::spawn(sigmirror::reload::watch(app.clone(), config, hup));
    let result = sigmirror::run(listener, app, shutdown_signal()).await;
    watcher.abort();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sigmirror stopped: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Everything `serve` would refuse to start with: the config and its trust
/// and TLS material (`load`), the data directory and the pin store.
async fn check_config(config: PathBuf) -> ExitCode {
    match sigmirror::load(&config) {
        Ok(state) => {
            if let Err(e) = sigmirror::app::check_stores(&state).await {
                print!("1 problem(s) in the configuration:\n  - {}: {e}\n", config.display());
                return ExitCode::from(1);
            }
            for w in &state.warnings {
                println!("warning: {w}");
            }
            println!(
                "{}: OK ({} upstream(s), {} policy(ies), {} warning(s))",
                config.display(),
                state.upstreams.len(),
                state.policies.policies.len(),
                state.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            print!("{problems}");
            ExitCode::from(1)
        }
    }
}

async fn verify(config: PathBuf, image: ImageRef) -> ExitCode {
    let state = match load(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(up) = state.upstreams.get(&image.registry).cloned() else {
        eprintln!("registry {:?} is not a configured upstream in {}", image.registry, config.display());
        return ExitCode::from(2);
    };
    let pull = Pull {
        registry: image.registry.clone(),
        up,
        repo: image.repo.clone(),
        reference: image.reference.clone(),
        accept: sigmirror::oci::media::ALL_MANIFESTS.to_string(),
        head: false,
    };
    match state.verify(&pull).await {
        Ok((manifest, verdict)) => {
            let name = match &manifest {
                Some(m) => pull.image(m),
                None => format!("{}/{}{}", image.registry, image.repo, image.reference.suffix()),
            };
            let out = serde_json::json!({
                "image": name,
                "reference": image.reference.to_string(),
                "digest": manifest.as_ref().map(|m| &m.digest),
                "media_type": manifest.as_ref().map(|m| &m.media_type),
                "verdict": verdict,
                "message": verdict.refusal_message(&name),
            });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            if verdict.is_allow() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("cannot verify {}/{}: {e}", image.registry, image.repo);
            ExitCode::from(2)
        }
    }
}

async fn pins(config: PathBuf, action: PinsAction) -> ExitCode {
    let state = match load(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let store = match PinStore::open(
        &state.config.data_dir,
        state.config.pin_store.as_deref(),
        state.config.pin_store_password.as_deref(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the pin store: {e}");
            return ExitCode::from(2);
        }
    };
    let result: Result<String, String> = match action {
        PinsAction::Export => store.export().await.map(|f| f.to_json()).map_err(|e| e.to_string()),
        PinsAction::Import { file } => match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| PinsFile::from_json(&b).map_err(|e| e.to_string()))
        {
            Ok(f) => store
                .import(&f)
                .await
                .map(|r| serde_json::to_string_pretty(&r).unwrap_or_default())
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("{}: {e}", file.display())),
        },
        PinsAction::List { moved: false } => {
            store.list().await.map(|p| serde_json::to_string_pretty(&p).unwrap_or_default()).map_err(|e| e.to_string())
        }
        PinsAction::List { moved: true } => store
            .list_moved()
            .await
            .map(|m| {
                let rows: Vec<_> =
                    m.into_iter().map(|(pin, moves)| serde_json::json!({ "pin": pin, "moves": moves })).collect();
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            })
            .map_err(|e| e.to_string()),
        PinsAction::Forget { reference } => {
            let sigmirror::oci::ManifestRef::Tag(tag) = &reference.reference else {
                eprintln!("forget takes <registry>/<repo>:<tag>, not a digest");
                return ExitCode::from(2);
            };
            match store.forget(&reference.registry, &reference.repo, tag).await {
                Ok(true) => Ok(format!("forgot {}/{}:{tag}", reference.registry, reference.repo)),
                Ok(false) => Err(format!("no pin for {}/{}:{tag}", reference.registry, reference.repo)),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
