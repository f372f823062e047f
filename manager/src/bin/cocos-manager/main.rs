//! `cocos-manager`: parses the configuration, starts the manager (release check,
//! measurement preparation, store, re-adoption), serves the HTTP and local gRPC APIs,
//! dials the Computations server if MANAGER_GRPC_URL is set, and runs until SIGINT or
//! SIGTERM. VMs keep running when the manager exits; the next start re-adopts them.
//! When ready it prints one JSON line on stdout with the bound addresses.
//! Exit codes: 0 after a signal, 2 for bad configuration or release, 1 otherwise.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cocos_manager::config::{listen_addr, Config};
use cocos_manager::runtime::Manager;
use cocos_manager::{grpc, http, upstream};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

fn main() -> ExitCode {
    let cfg = match Config::try_parse() {
        Ok(c) => c,
        Err(e) if cocos_measure::cli_error::is_help(&e) => e.exit(),
        Err(e) => {
            eprintln!(
                "cocos-manager: {} (see --help)",
                cocos_measure::cli_error::one_line(&e)
            );
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cfg.validate() {
        eprintln!("cocos-manager: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cocos-manager: {e}");
            return ExitCode::from(1);
        }
    };
    let tls = match upstream::tls_config(&cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cocos-manager: {e:#}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let mgr = match Manager::start(cfg.clone()).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("cocos-manager: {e:#}");
                return ExitCode::from(2);
            }
        };
        match serve(mgr, cfg, tls).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cocos-manager: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}

async fn serve(
    mgr: std::sync::Arc<Manager>,
    cfg: Config,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<()> {
    let mut ready = serde_json::Map::new();
    if let Some(addr) = listen_addr(&cfg.http).map_err(anyhow::Error::msg)? {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("HTTP {addr}"))?;
        ready.insert("http".into(), l.local_addr()?.to_string().into());
        let app = http::router(mgr.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!("HTTP server: {e}");
            }
        });
    }
    if let Some(addr) = listen_addr(&cfg.grpc_listen).map_err(anyhow::Error::msg)? {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("gRPC {addr}"))?;
        ready.insert("grpc".into(), l.local_addr()?.to_string().into());
        let svc = grpc::server(mgr.clone());
        tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(l))
                .await
            {
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
