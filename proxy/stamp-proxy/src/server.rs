//! Process wiring: the store, the control plane, the data plane's Pingora
//! service with the control plane behind `/__stamp/`, the background
//! services (snapshot refresher, control jobs, reload on SIGHUP), the
//! listener (TLS optional), a graceful shutdown on SIGTERM and SIGINT
//! alike, and on SIGQUIT Pingora's graceful upgrade: the listening sockets
//! handed to the process started with `--upgrade`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};

use bytes::Bytes;
use pingora::services::background::background_service;
use stamp_control::{Control, OriginAccess};
use stamp_data::{ControlPlane, SnapshotCell, StampProxy};
use stamp_store::{self as store, SharedStore};

use crate::config::Config;
use crate::services::{Drain, Jobs, Refresher, ReportFlusher};

/// SIGTERM and SIGINT both shut down gracefully: stop accepting, let requests
/// in flight finish within the grace period. (Pingora's default treats SIGINT
/// as a fast shutdown that cuts them off.) SIGQUIT hands the listening
/// sockets to the process started with `--upgrade`, then shuts down the same
/// way.
struct GracefulSignals;

#[async_trait]
impl ShutdownSignalWatch for GracefulSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            log::error!("cannot install signal handlers; stop the proxy with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM: shutting down gracefully"),
            _ = int.recv() => log::info!("SIGINT: shutting down gracefully"),
            _ = quit.recv() => {
                log::info!("SIGQUIT: handing the listening sockets to the new process, then shutting down gracefully");
                return ShutdownSignal::GracefulUpgrade;
            }
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// The control plane as the data plane sees it: the one place the two
/// planes meet.
struct ControlAdapter {
    control: Arc<Control>,
    store: SharedStore,
    cell: Arc<SnapshotCell>,
}

/// How long a write's answer waits for this proxy to serve it.
const READ_YOUR_WRITE: Duration = Duration::from_secs(2);

#[async_trait]
impl ControlPlane for ControlAdapter {
    fn body_limit(&self, head: &http::request::Parts) -> usize {
        self.control.body_limit(head)
    }

    async fn call(&self, req: http::Request<Bytes>) -> http::Response<stamp_data::Body> {
        let write = !matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let resp = self.control.handle(req).await;
        // Read your writes: a successful write is answered once this proxy
        // serves it, so the page opened right after an upload or a move
        // shows it (bounded; a slow or unreachable store answers anyway).
        if write && resp.status().is_success() {
            if let Ok(Ok(version)) =
                tokio::time::timeout(READ_YOUR_WRITE, self.store.version()).await
            {
                if !self.cell.serves(version, READ_YOUR_WRITE).await {
                    log::debug!("version {version} not served within {READ_YOUR_WRITE:?}");
                }
            }
        }
        resp.map(|b| match b {
            stamp_control::Body::Full(bytes) => stamp_data::Body::Full(bytes),
            stamp_control::Body::Stream(s) => stamp_data::Body::Stream(s),
        })
    }
}

/// A failure to start, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("cannot start the background runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the demo: {0}")]
    Demo(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Upgrade(String),
    #[error(transparent)]
    Control(#[from] stamp_control::ControlError),
}

/// How long a process taking over (`--upgrade`) waits for the embedded
/// store's lock, beyond the old process's own longest stop.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(15);

/// Opens the store; when taking over from a running process, waits while
/// that process still holds the embedded store's lock (it releases it once
/// it has drained). Connections meanwhile wait in the listening socket's
/// queue: none is refused.
async fn open_store(cfg: &Config) -> Result<SharedStore, StartError> {
    let patience = cfg.shutdown_timeout + TAKEOVER_MARGIN;
    let began = std::time::Instant::now();
    let mut said = false;
    loop {
        match store::open(&cfg.store, &cfg.redis_prefix).await {
            Err(store::StoreError::Locked { location })
                if cfg.process.upgrade && began.elapsed() < patience =>
            {
                if !said {
                    log::info!("waiting for the previous process to release {location}");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Runs the proxy until a shutdown signal; returns when it has stopped.
pub fn run(cfg: Config, flags: crate::config::Flags) -> Result<(), StartError> {
    let pid_file = cfg.process.pid_file.clone();
    let result = serve(cfg, flags);
    crate::process::stopped(pid_file.as_deref());
    result
}

fn serve(mut cfg: Config, flags: crate::config::Flags) -> Result<(), StartError> {
    let demo = flags.demo;
    let background = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("stamp-background")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    // SIGHUP and SIGQUIT end a process by default: take them over before
    // anything else, so one that arrives during start-up (a reload, an
    // upgrade of the process this one takes over from) does no harm.
    let hangups = background.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let quit = signal(SignalKind::quit());
        (signal(SignalKind::hangup()), quit)
    });
    let (hangups, _quit) = match hangups {
        (Ok(h), Ok(q)) => (h, q),
        (Err(e), _) | (_, Err(e)) => return Err(StartError::Runtime(e)),
    };
    // Certificates are read before the sockets are taken over: a successor
    // that cannot serve must fail while its predecessor still does.
    let tls = match &cfg.tls {
        Some(tls) => {
            let cert = tls.cert.to_string_lossy();
            let key = tls.key.to_string_lossy();
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| StartError::Tls(format!("{cert} / {key}: {e}")))?;
            settings.enable_h2();
            Some(settings)
        }
        None => None,
    };
    crate::process::private_socket_dir(&cfg.process.upgrade_socket).map_err(StartError::Upgrade)?;

    // Refuse early and clearly rather than let Pingora panic on a busy port
    // (taking over, the port is the running process's, handed over below).
    if !cfg.process.upgrade {
        std::net::TcpListener::bind(cfg.listen).map_err(|e| StartError::Listen {
            addr: cfg.listen.to_string(),
            reason: e.to_string(),
        })?;
    }

    let secs = |d: Duration| d.as_secs().max(u64::from(d.subsec_nanos() > 0));
    // Pingora's grace period is the upper bound for requests in flight; the
    // Drain service ends the process as soon as they are done.
    let conf = ServerConf {
        threads: cfg.threads,
        grace_period_seconds: Some(secs(cfg.shutdown_timeout) + 1),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: cfg.process.upgrade_socket.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade: cfg.process.upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    if cfg.process.upgrade {
        log::info!(
            "taking the listening sockets over through {}",
            cfg.process.upgrade_socket.display()
        );
        crate::process::signal_predecessor(
            cfg.process.pid_file.clone(),
            cfg.process.upgrade_socket.clone(),
        );
    }
    // A shared store is reached before the sockets are taken over (a
    // successor that cannot reach it fails while its predecessor serves);
    // the embedded store's file is free only once the predecessor is gone.
    let shared = store::redis::is_redis_url(&cfg.store);
    let early = if shared {
        Some(background.block_on(open_store(&cfg))?)
    } else {
        None
    };
    // Taking over, this receives the running process's listening sockets.
    server.bootstrap();

    let store: SharedStore = match early {
        Some(s) => s,
        None => background.block_on(open_store(&cfg))?,
    };
    if demo {
        let addr = background
            .block_on(crate::demo::start_origin())
            .map_err(|e| StartError::Demo(e.to_string()))?;
        cfg.data.origin =
            stamp_data::config::parse_origin(&format!("http://{addr}"), None, None, true)
                .map_err(|e| StartError::Demo(e.to_string()))?;
    }

    let origin = &cfg.data.origin;
    let control = Arc::new(Control::new(
        cfg.control.clone(),
        store.clone(),
        OriginAccess {
            url: origin.url.clone(),
            host: origin.host_header.clone().or_else(|| {
                let u = url::Url::parse(cfg.control.public_url.as_deref()?).ok()?;
                u.host_str().map(str::to_string)
            }),
            verify_cert: origin.verify_cert,
        },
    )?);
    stamp_control::register_metrics();
    control.start_hooks(background.handle());
    if demo {
        background
            .block_on(crate::demo::seed(&control.desk()))
            .map_err(|e| StartError::Demo(e.to_string()))?;
    }

    let cell = Arc::new(SnapshotCell::with_variants(cfg.data.rewrite.variants));
    // A first snapshot before serving, bounded: a store that is down must not
    // keep production traffic from flowing.
    background.block_on(async {
        let mut sets = std::collections::HashMap::new();
        match tokio::time::timeout(
            Duration::from_secs(3),
            cell.refresh(&store, &mut sets, true),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("store not ready ({e}); serving production until it is"),
            Err(_) => log::warn!("store slow to answer; serving production until it does"),
        }
    });

    let gate = cfg.control.preview_gate();
    let proxy = StampProxy::new(
        Arc::new(cfg.data.clone()),
        cell.clone(),
        store.clone(),
        Arc::new(ControlAdapter {
            control: control.clone(),
            store: store.clone(),
            cell: cell.clone(),
        }),
        gate,
    );
    let in_flight = proxy.in_flight();
    let reloader = std::sync::Arc::new(crate::reload::Reloader {
        flags,
        running: std::sync::Mutex::new(cfg.clone()),
        data: proxy.reload(),
        control: control.clone(),
    });
    let reports = proxy.reports();
    let header_timeout = cfg.data.timeouts.client_header;
    let mut http = pingora::proxy::HttpProxy::new(proxy, server.configuration.clone());
    http.handle_init_modules();
    // HTTP/2 (TLS, ALPN h2) is not wrapped by the header deadline: at least
    // an idle HTTP/2 connection is closed after the same time.
    let mut options = pingora::apps::HttpServerOptions::default();
    options.h2_idle_timeout = Some(header_timeout);
    http.server_options = Some(options);
    let mut service = pingora::services::listening::Service::new(
        "stamp-proxy".to_string(),
        stamp_data::HeaderDeadline {
            inner: Arc::new(http),
            timeout: header_timeout,
        },
    );
    let addr = cfg.listen.to_string();
    match tls {
        Some(settings) => service.add_tls_with_settings(&addr, None, settings),
        None => service.add_tcp(&addr),
    }
    server.add_service(service);
    server.add_service(background_service(
        "snapshot refresher",
        Refresher {
            store: store.clone(),
            cell,
            poll: cfg.poll_interval,
        },
    ));
    server.add_service(background_service(
        "page reports",
        ReportFlusher {
            reports,
            store: store.clone(),
        },
    ));
    server.add_service(background_service(
        "drain on stop",
        Drain {
            in_flight,
            control: control.clone(),
            at_least: cfg.grace_period,
            at_most: cfg.shutdown_timeout,
            pid_file: cfg.process.pid_file.clone(),
        },
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        crate::reload::OnHangup {
            reloader,
            hangups: std::sync::Mutex::new(Some(hangups)),
        },
    ));
    server.add_service(background_service(
        "control jobs",
        Jobs {
            control: control.clone(),
        },
    ));

    if cfg.control.open() {
        log::warn!(
            "no [[tokens]] configured: the control API on {} is open to anyone who can reach it \
             (allowed only on loopback)",
            cfg.listen
        );
    }
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    log::info!(
        "stamp-proxy listening on {scheme}://{addr} → origin {} (store: {})",
        cfg.data.origin.url,
        store.describe()
    );
    if demo {
        println!("stamp-proxy demo is running:");
        println!("  production:        {scheme}://{addr}/");
        println!("  ticket DEMO-1:     {scheme}://{addr}/?dev=DEMO-1");
        println!("  back to production {scheme}://{addr}/?stamp=off");
        println!("  QA panel:          {scheme}://{addr}/__stamp/");
        println!("  health:            {scheme}://{addr}/__stamp/health");
        println!("Press Ctrl-C to stop.");
    }
    server.add_service(background_service(
        "started",
        crate::services::Started {
            listen: cfg.listen,
            pid_file: cfg.process.pid_file.clone(),
        },
    ));
    server.run(RunArgs {
        shutdown_signal: Box::new(GracefulSignals),
    });
    // Give queued hook deliveries a moment before the process ends.
    background.block_on(control.drain_hooks(Duration::from_secs(5)));
    background.shutdown_timeout(Duration::from_secs(1));
    log::info!("stamp-proxy stopped");
    Ok(())
}
