//! `cocos-manager`: parses the configuration, starts the manager (release check,
//! measurement preparation, store, re-adoption), serves the HTTP and local gRPC APIs,
//! dials the Computations server if MANAGER_GRPC_URL is set, and runs until SIGINT or
//! SIGTERM. VMs keep running when the manager exits; the next start re-adopts them.
//! When ready it prints one JSON line on stdout with the bound addresses.
//! Exit codes: 0 after a signal, 2 for bad configuration or release, 1 otherwise.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cocos_manager::config::Config;
use cocos_manager::runtime::Manager;
use cocos_manager::{grpc, http, listen, upstream};

/// Descriptors per VM: its agent and QMP sockets, QEMU's pipes, the sealed files at
/// launch, and room for the API's connections.
const FDS_PER_VM: u64 = 8;

/// Raises the soft descriptor limit to the hard one (systemd's default soft limit is
/// 1024, which a few hundred VMs and the API's connections exceed), and says so when
/// even the hard limit is short for `max_vms`.
fn raise_fd_limit(max_vms: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
        tracing::warn!("could not raise the descriptor limit from {soft} to {hard}");
    }
    let need = (max_vms as u64)
        .saturating_mul(FDS_PER_VM)
        .saturating_add(1024);
    if hard < need {
        tracing::warn!("descriptor limit {hard} is low for --max-vms {max_vms} (about {need} wanted); raise LimitNOFILE");
    }
}

/// `--completions SHELL` and `--man` print and exit, before the settings (which need
/// `--release`) are read.
fn docs_requested() -> Option<ExitCode> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cmd = || <Config as clap::CommandFactory>::command();
    let out = if argv.iter().any(|a| a == "--man") {
        cocos_measure::cli_error::man_page(&cmd(), &mut std::io::stdout())
    } else {
        let at = argv
            .iter()
            .position(|a| a == "--completions" || a.starts_with("--completions="))?;
        let value = match argv.get(at).and_then(|a| a.strip_prefix("--completions=")) {
            Some(v) => Some(v.to_owned()),
            None => argv.get(at + 1).cloned(),
        };
        let shell = value.as_deref().and_then(|v| {
            <cocos_measure::cli_error::Shell as clap::ValueEnum>::from_str(v, true).ok()
        });
        let Some(shell) = shell else {
            eprintln!("cocos-manager: error: --completions needs a shell: bash, zsh, fish, elvish or powershell");
            return Some(ExitCode::from(2));
        };
        cocos_measure::cli_error::completions(&mut cmd(), shell, &mut std::io::stdout())
    };
    Some(match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cocos_measure::cli_error::report("cocos-manager", &e);
            ExitCode::from(1)
        }
    })
}

fn main() -> ExitCode {
    if let Some(code) = docs_requested() {
        return code;
    }
    // cocos' names where we have the setting, and no unknown MANAGER_* variable.
    let ours = cocos_manager::config::env_names();
    let vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect();
    let asks_help =
        std::env::args().any(|a| ["-h", "--help", "-V", "--version"].contains(&a.as_str()));
    match cocos_manager::cocos_env::translate(&vars, &ours) {
        Err(_) if asks_help => {}
        // Still one thread: nothing else reads the environment meanwhile.
        Ok(set) => set.into_iter().for_each(|(k, v)| std::env::set_var(k, v)),
        Err(e) => {
            eprintln!("cocos-manager: error: {e}");
            return ExitCode::from(2);
        }
    }
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if cocos_measure::cli_error::is_help(&e) => e.exit(),
        Err(e) => {
            eprintln!(
                "cocos-manager: error: {} (see --help)",
                cocos_measure::cli_error::one_line(&e)
            );
            return ExitCode::from(2);
        }
    };
    let filter = match cocos_manager::config::log_filter(
        cfg.log_level.as_deref(),
        std::env::var("COCOS_LOG").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cocos-manager: error: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cfg.log_format {
        cocos_manager::config::LogFormat::Text => logs.init(),
        cocos_manager::config::LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = cfg.validate() {
        eprintln!("cocos-manager: error: {e}");
        return ExitCode::from(2);
    }
    raise_fd_limit(cfg.max_vms);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cocos-manager: error: {e}");
            return ExitCode::from(1);
        }
    };
    // Who may reach our servers is settled before anything starts: a bad TLS file or
    // an exposed address without TLS is a configuration error (exit 2).
    let plan = match listen::Plan::from_config(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cocos-manager: error: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match upstream::tls_config(&cfg) {
        Ok(t) => t,
        Err(e) => {
            cocos_measure::cli_error::report("cocos-manager", &e);
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let mgr = match Manager::start(cfg.clone()).await {
            Ok(m) => m,
            Err(e) => {
                cocos_measure::cli_error::report("cocos-manager", &e);
                return ExitCode::from(2);
            }
        };
        match serve(mgr, cfg, plan, tls).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                cocos_measure::cli_error::report("cocos-manager", e.as_ref());
                ExitCode::from(1)
            }
        }
    })
}

async fn serve(
    mgr: std::sync::Arc<Manager>,
    cfg: Config,
    plan: listen::Plan,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<()> {
    let mut ready = serde_json::Map::new();
    let (server_tls, group) = (plan.tls, plan.group);
    if let Some(ep) = plan.http {
        let l = listen::Listener::bind(&ep, group)
            .await
            .map_err(|e| anyhow::anyhow!("HTTP {e}"))?;
        ready.insert("http".into(), l.describe().into());
        let app = http::router(mgr.clone());
        let acceptor = server_tls.as_ref().map(|t| t.acceptor.clone());
        let conns = listen::incoming(
            l,
            cfg.max_connections,
            mgr.metrics.connections_refused.clone(),
        );
        tokio::spawn(listen::serve_http(conns, app, acceptor));
    }
    if let Some(ep) = plan.grpc {
        let l = listen::Listener::bind(&ep, group)
            .await
            .map_err(|e| anyhow::anyhow!("gRPC {e}"))?;
        ready.insert("grpc".into(), l.describe().into());
        let svc = grpc::server(mgr.clone());
        let mut builder =
            tonic::transport::Server::builder().timeout(std::time::Duration::from_secs(60));
        if let Some(t) = &server_tls {
            builder = builder.tls_config(t.tonic.clone()).context("gRPC TLS")?;
        }
        // The standard health service (SERVING while the store commits) and server
        // reflection, so grpcurl and friends work without the .proto.
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_serving::<cocos_proto::grpc::manager_service_server::ManagerServiceServer<grpc::Service>>()
            .await;
        tokio::spawn(grpc::report_health(mgr.clone(), health));
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cocos_proto::grpc::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("gRPC reflection")?;
        let router = builder
            .add_service(svc)
            .add_service(health_svc)
            .add_service(reflection);
        let conns = listen::incoming(
            l,
            cfg.max_connections,
            mgr.metrics.connections_refused.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(conns).await {
                tracing::error!("gRPC server: {e}");
            }
        });
    }
    if let Some(url) = cfg.grpc_url.clone() {
        ready.insert("upstream".into(), url.clone().into());
        tokio::spawn(upstream::run(mgr.clone(), url, tls));
    }
    ready.insert("vms".into(), mgr.list().len().into());
    println!("{}", serde_json::Value::Object(ready));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!(
        "stopping; {} VM(s) keep running and are re-adopted on the next start",
        mgr.list().len()
    );
    Ok(())
}
