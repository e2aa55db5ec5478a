//! The control plane composed: policies, hooks, the history repository,
//! the settler and the fan-out, the router, and the background jobs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use stamp_store::SharedStore;
use tokio::sync::watch;

use crate::config::ControlConfig;
use crate::effects::history_repo::{self, HistoryRepo};
use crate::effects::{jobs, Desk, Fanout};
use crate::kinds::Links;
use crate::rollouts::Rollouts;
use crate::web::{api, auth, signin, Router};

use crate::workflow::{gc, settle};
use crate::{hooks, policy, Body};

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("policies or hooks: {}", .0.join("; "))]
    Plugins(Vec<String>),
    #[error(transparent)]
    History(#[from] history_repo::HistoryError),
}

/// The origin as the settler fetches it.
#[derive(Debug, Clone)]
pub struct OriginAccess {
    /// `scheme://host:port`.
    pub url: String,
    /// Host header to send, when not the origin's own.
    pub host: Option<String>,
    pub verify_cert: bool,
}

/// The control plane, built from its configuration.
pub struct Control {
    cfg: Arc<ControlConfig>,
    store: SharedStore,
    router: Router,
    fanout: Arc<Fanout>,
    settler: Arc<settle::Settler>,
    rollouts: Rollouts,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("store", &self.store.describe())
            .finish()
    }
}

impl Control {
    /// Builds policies, hooks, the history repository and the settler.
    /// Does no network I/O.
    pub fn new(
        cfg: ControlConfig,
        store: SharedStore,
        origin: OriginAccess,
    ) -> Result<Control, ControlError> {
        let policies =
            Arc::new(policy::Engine::from_config(&cfg.policies.0).map_err(ControlError::Plugins)?);
        let hooks =
            Arc::new(hooks::Dispatcher::from_config(&cfg.hooks.0).map_err(ControlError::Plugins)?);
        let history = match &cfg.history_repo {
            Some(path) => Some(Arc::new(HistoryRepo::open(path)?)),
            None => None,
        };
        let settler = Arc::new(settle::Settler::new(
            store.clone(),
            origin.url.clone(),
            origin.host.clone(),
            origin.verify_cert,
            cfg.settle_third_version,
        ));
        let signer = cfg.preview.as_ref().map(|p| p.signer());
        let links = Links::new(&cfg.link_base(), signer);
        let fanout = Arc::new(Fanout::new(
            store.clone(),
            hooks,
            history,
            Some(settler.clone()),
            links.clone(),
        ));
        let sessions = auth::Sessions::new(
            cfg.preview.as_ref().map(|p| p.secret.as_str()),
            Duration::from_secs(8 * 3600),
        );
        let app = cfg.control_url.is_some().then(|| cfg.link_base());
        let sign_in = signin::SignIn::new(
            &cfg.sign_in,
            &cfg.control_base(),
            app.as_deref(),
            cfg.secure_cookies(),
        );
        let cfg = Arc::new(cfg);
        let desk = Desk::new(store.clone(), fanout.clone()).with_skew(cfg.skew);
        let proxy_base = format!("http://127.0.0.1:{}", cfg.listen.port());
        let rollouts = Rollouts::new(
            cfg.clone(),
            store.clone(),
            desk.clone(),
            policies.clone(),
            proxy_base.clone(),
        );
        let api = api::Api {
            cfg: cfg.clone(),
            store: store.clone(),
            links,
            policies,
            desk,
            history: fanout.history().cloned(),
            proxy_base,
            origin,
            rollouts: rollouts.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap_or_default(),
        };
        let router = Router {
            cfg: cfg.clone(),
            store: store.clone(),
            api,
            sessions,
            sign_in,
        };
        Ok(Control {
            cfg,
            store,
            router,
            fanout,
            settler,
            rollouts,
        })
    }

    pub fn config(&self) -> &ControlConfig {
        &self.cfg
    }

    /// The door through which tools make changes that reach every
    /// consumer of this control plane (hooks, history, settler).
    pub fn desk(&self) -> Desk {
        Desk::new(self.store.clone(), self.fanout.clone()).with_skew(self.cfg.skew)
    }

    /// Starts the hooks' delivery workers on `rt`.
    pub fn start_hooks(&self, rt: &tokio::runtime::Handle) {
        self.fanout.hooks().start_on(rt);
    }

    /// Waits until queued hook deliveries are done, at most `limit`.
    pub async fn drain_hooks(&self, limit: Duration) -> bool {
        self.fanout.hooks().idle(limit).await
    }

    /// Runs the settler, the collector and the rollouts' job until
    /// `shutdown` turns true.
    pub async fn run_jobs(&self, shutdown: watch::Receiver<bool>) {
        let rollouts = self.rollouts.run(shutdown.clone());
        let revocations = jobs::revocation_loop(
            self.store.clone(),
            self.router.sessions.revoked(),
            shutdown.clone(),
        );
        let settle = jobs::settle_loop(
            self.settler.clone(),
            self.fanout.clone(),
            self.cfg.settle_interval,
            shutdown.clone(),
        );
        match &self.cfg.gc {
            Some(gc) => {
                let policy = gc::Policy {
                    grace: gc.grace,
                    closed_retention: gc.closed_retention,
                };
                let collect = jobs::gc_loop(
                    self.store.clone(),
                    self.fanout.clone(),
                    policy,
                    gc.every,
                    shutdown,
                );
                tokio::join!(settle, collect, rollouts, revocations);
            }
            None => {
                tokio::join!(settle, rollouts, revocations);
            }
        }
    }

    /// Applies a reloaded configuration: the `[[tokens]]` at once (a
    /// rotation; switching the API between open and closed is not), every
    /// other key at the next start. Returns the keys applied and the keys
    /// that wait for a restart (their running values stay).
    pub fn reload(&self, new: &ControlConfig) -> (Vec<&'static str>, Vec<&'static str>) {
        let old = &self.cfg;
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        if old.tokens != new.tokens {
            if old.tokens.is_empty() || new.tokens.is_empty() {
                restart.push("tokens");
            } else {
                old.tokens.replace(new.tokens.load().to_vec());
                applied.push("tokens");
            }
        }
        let fixed = [
            ("public_url", old.public_url != new.public_url),
            ("control_url", old.control_url != new.control_url),
            ("api", old.api != new.api),
            ("history_repo", old.history_repo != new.history_repo),
            ("preview", old.preview != new.preview),
            (
                "settle",
                old.settle_interval != new.settle_interval
                    || old.settle_third_version != new.settle_third_version,
            ),
            ("gc", old.gc != new.gc || old.skew != new.skew),
            ("rollout", old.rollout != new.rollout),
            ("slack", old.slack != new.slack),
            ("policies", old.policies != new.policies),
            ("hooks", old.hooks != new.hooks),
            ("sign_in", old.sign_in != new.sign_in),
        ];
        restart.extend(
            fixed
                .into_iter()
                .filter(|(_, changed)| *changed)
                .map(|(k, _)| k),
        );
        (applied, restart)
    }

    /// The largest request body a request may send.
    pub fn body_limit(&self, head: &http::request::Parts) -> usize {
        self.router.body_limit(head)
    }

    /// Answers one request under `/__stamp/` (besides health and metrics).
    pub async fn handle(&self, req: Request<Bytes>) -> Response<Body> {
        self.router.handle(req).await
    }
}
