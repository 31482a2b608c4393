//! The `sigmirror` command: parses flags, loads the config, and calls the
//! library. All behaviour lives in the library so tests can drive it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;

use sigmirror::app::App;
use sigmirror::config::LogFormat;
use sigmirror::mirror::{Mirror, Pull};
use sigmirror::oci::ImageRef;
use sigmirror::pins::cli::{Action, Options};

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
    /// Inspect and manage immutable-tag pins. With `admin_listen` set, this
    /// goes through the running server; with no server, to the store itself.
    Pins {
        #[arg(long, default_value = "config/sigmirror.toml")]
        config: PathBuf,
        /// JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        /// The running server's admin API (`http://127.0.0.1:9090`), when
        /// `admin_listen` in the config does not say where it is.
        #[arg(long)]
        admin: Option<String>,
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
    /// Every recorded move of a pinned tag, oldest first, forgotten pins' too.
    Moves,
    /// Forget one pin, for a deliberate re-release: `<registry>/<repo>:<tag>`.
    /// Its move history is kept.
    Forget { reference: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs in its config's `log_format`, so it starts logging once
    // the config is read; the other commands print, and log little.
    if !matches!(cli.command, Command::Serve { .. }) {
        sigmirror::logging::init(LogFormat::Text);
    }
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
            Command::Pins { config, json, admin, action } => pins(config, action, Options { json, admin }).await,
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
            // Logging starts once the config is read, so straight to stderr.
            eprintln!("cannot handle SIGHUP, reload on file change only: {e}");
            None
        }
    };
    let state = match load(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    sigmirror::logging::init(state.config.log_format);
    let addr = state.config.listen;
    let admin_addr = state.config.admin_listen;
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
    let admin = match admin_addr {
        None => None,
        Some(a) => match tokio::net::TcpListener::bind(a).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("cannot listen on admin_listen {a}: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = tokio::io::stdout();
    // The admin line first: tests and scripts take the main line to mean
    // "serving", and read both bound addresses (port 0 picks one) from stdout.
    let admin_task = match admin {
        None => None,
        Some(l) => {
            let data_dir = &app.mirror().config.data_dir;
            let token = match sigmirror::admin::Token::create(data_dir) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("cannot write the admin token to {}: {e}", data_dir.display());
                    return ExitCode::from(2);
                }
            };
            let bound = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::info!("sigmirror admin listening on http://{bound}");
            let line = format!("sigmirror admin listening on http://{bound}\n");
            Some((line, tokio::spawn(sigmirror::admin::run(l, app.clone(), token, std::future::pending()))))
        }
    };
    if let Some((line, _)) = &admin_task {
        let _ = out.write_all(line.as_bytes()).await;
    }
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(policies, upstreams, "sigmirror listening on {scheme}://{bound}");
    let _ = out.write_all(format!("sigmirror listening on {scheme}://{bound}\n").as_bytes()).await;
    let _ = out.flush().await;
    let watcher = tokio::spawn(sigmirror::reload::watch(app.clone(), config, hup));
    // The admin listener stays up through the drain, so `/readyz` there
    // says 503 while requests finish on the main one.
    let result = sigmirror::run(listener, app, shutdown_signal()).await;
    watcher.abort();
    if let Some((_, task)) = admin_task {
        task.abort();
    }
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

async fn pins(config: PathBuf, action: PinsAction, options: Options) -> ExitCode {
    let state = match load(&config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let action = match action {
        PinsAction::Export => Action::Export,
        PinsAction::Import { file } => Action::Import { file },
        PinsAction::List { moved } => Action::List { moved },
        PinsAction::Moves => Action::Moves,
        PinsAction::Forget { reference } => Action::Forget { reference },
    };
    match sigmirror::pins::cli::run(&state, action, options).await {
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
