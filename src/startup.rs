//! Builds and runs the application: binds the listener first (so the real port is known),
//! connects the store, then serves the API and runs background tasks until shutdown.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api::{self, AppState},
    auth::{callout::Callout, Authenticator, Keystone},
    catalog::Catalog,
    config::{AuthMode, Config},
    delivery::{Engine, Outbound},
    store::Store,
    telemetry,
    user_messages::{self, UserMessages},
};

/// Longest wait for background tasks once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Which parts of Herald this process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub workers: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Self {
            api: true,
            workers: true,
        }
    }
}

pub struct Application {
    listener: Option<TcpListener>,
    state: AppState,
    roles: Roles,
}

impl Application {
    /// Binds and connects; fails on a bad config, a taken port or an unreadable tokens file.
    pub async fn build(config: Config, roles: Roles) -> anyhow::Result<Self> {
        let listener = if roles.api {
            Some(
                TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("failed to bind {}", config.listen))?,
            )
        } else {
            None
        };
        let mut auth = Authenticator::new(config.auth_mode, config.tokens_file.clone())
            .context("failed to load the tokens file")?;
        if config.auth_mode == AuthMode::Keystone {
            auth = auth.with_keystone(
                Keystone::new(&config).context("failed to set up the Keystone client")?,
            );
        }
        let catalog = Catalog::load(config.catalog.as_deref())
            .context("failed to load the user messages catalog")?;
        let store = Store::connect(&config)
            .await
            .context("failed to set up the NATS connection")?;
        let user_messages = UserMessages::new(
            store.clone(),
            Arc::new(catalog),
            Duration::from_secs(config.message_ttl),
        );
        let mut outbound = Outbound::new(&config).context("failed to set up outbound delivery")?;
        outbound.keystone = auth.keystone().cloned();
        if roles.workers {
            outbound
                .connect_nats(&config)
                .await
                .context("failed to set up the NATS delivery connection")?;
        }
        let state = AppState::new(crate::api::Shared {
            store,
            auth,
            config: Arc::new(config),
            metrics: telemetry::metrics_handle(),
            user_messages,
            outbound,
            console: crate::console::Console::new(),
        });
        Ok(Self {
            listener,
            state,
            roles,
        })
    }

    /// The bound API port (0 when the API is not run).
    pub fn port(&self) -> u16 {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs until `shutdown` is cancelled and every task has finished.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        tasks.spawn(reconcile(self.state.store.clone(), shutdown.clone()));
        #[cfg(unix)]
        tasks.spawn(reload_tokens_on_sighup(
            self.state.auth.clone(),
            shutdown.clone(),
        ));
        if let Some(keystone) = self.state.auth.keystone() {
            if let Some(callout) = Callout::from_config(&self.state.config, keystone.clone())
                .context("failed to set up the NATS auth callout")?
            {
                let client = Callout::connect(&self.state.config)
                    .await
                    .context("failed to set up the NATS auth callout connection")?;
                tasks.spawn(callout.serve(client, shutdown.clone()));
            }
        }
        tasks.spawn(user_messages::serve_nats(
            self.state.user_messages.clone(),
            self.state.store.clone(),
            shutdown.clone(),
        ));
        if self.roles.workers {
            let engine = Engine::new(
                self.state.store.clone(),
                self.state.config.clone(),
                self.state.outbound.clone(),
            );
            tasks.spawn(engine.run(shutdown.clone()));
        }
        if let Some(listener) = self.listener {
            tasks.spawn(
                self.state
                    .console
                    .history()
                    .clone()
                    .sample(self.state.metrics.clone(), shutdown.clone()),
            );
            let app = api::router(self.state.clone());
            tracing::info!(address = %listener.local_addr()?, "API listening");
            crate::server::serve(listener, app, shutdown.clone()).await;
        } else {
            shutdown.cancelled().await;
        }
        tasks.close();
        // In-flight deliveries get time to finish or NAK; past that (NATS gone too, say)
        // exit anyway: JetStream redelivers whatever was not acked, so nothing is lost.
        if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "background tasks still busy after the grace period; exiting"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Repairs topics left half-done by a crash; retries until NATS answers.
async fn reconcile(store: Store, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(200);
    loop {
        match store.reconcile_topics().await {
            Ok((repaired, removed)) => {
                tracing::info!(repaired, removed, "topics reconciled");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "reconciliation postponed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(unix)]
async fn reload_tokens_on_sighup(auth: Authenticator, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => match auth.reload() {
                Ok(n) => tracing::info!(tokens = n, "tokens file reloaded"),
                Err(e) => tracing::error!(error = %e, "tokens file reload failed; keeping the old tokens"),
            },
        }
    }
}
