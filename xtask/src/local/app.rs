//! The whole app served on this machine: the gateway on a listener, its access logs, the
//! deployment following and the stream poller, started together and stopped together.
//! `cargo xtask up` builds and applies, then hands over to [`LocalApp`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use super::access_log::write_access_logs;
use super::deployed::DeployedApi;
use super::follow::{Loader, follow_deployments};
use super::gateway::Gateway;

/// How the app is served.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// No line per request on the terminal.
    pub quiet: bool,
    /// Where the stream poller keeps its checkpoints; `None` runs no stream poller (PDFs are
    /// then not generated).
    pub stream_checkpoints: Option<PathBuf>,
}

/// The app being served.
pub struct LocalApp {
    gateway: Gateway,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    refresh: Arc<Notify>,
    /// `http://127.0.0.1:<port>/<stage>`.
    pub url: String,
    pub stage: String,
    /// An enabled key of a usage plan of the stage, for the client; empty when none.
    pub api_key: String,
    /// Function name -> the version served.
    pub functions: BTreeMap<String, String>,
}

impl LocalApp {
    /// Loads what is deployed and serves it on `listener`; returns once the API is served and
    /// the stream poller reads every shard.
    pub async fn start(
        loader: Loader,
        listener: TcpListener,
        account_id: &str,
        options: AppOptions,
    ) -> Result<LocalApp> {
        let port = listener.local_addr()?.port();
        let (served, versions) = loader.load().await?;
        let (access_tx, access_rx) = mpsc::unbounded_channel();
        let log_group = served.api.access_log.as_ref().map(|(arn, _)| arn.clone());
        let stage = served.api.stage.clone();
        let url = format!("http://127.0.0.1:{port}/{stage}");
        let api_key = client_key(&served.api);
        let functions = versions.functions.clone();
        let gateway = Gateway::new(
            served,
            account_id,
            format!("127.0.0.1:{port}"),
            Some(access_tx),
        );

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(gateway.clone().serve(listener, stop_rx.clone()));
        tasks.spawn(write_access_logs(
            loader.aws.clone(),
            log_group,
            access_rx,
            options.quiet,
            stop_rx.clone(),
        ));
        let refresh = Arc::new(Notify::new());
        tasks.spawn(follow_deployments(
            loader.clone(),
            gateway.clone(),
            versions,
            refresh.clone(),
            stop_rx.clone(),
        ));
        if let Some(checkpoints) = options.stream_checkpoints {
            super::start_stream_poller(
                &loader.aws,
                &loader.names,
                &gateway,
                &mut tasks,
                stop_rx,
                checkpoints,
            )
            .await?;
        }
        Ok(LocalApp {
            gateway,
            tasks,
            stop,
            refresh,
            url,
            stage,
            api_key,
            functions,
        })
    }

    /// Looks at the deployment now instead of at the next refresh (after an apply).
    pub fn refresh_now(&self) {
        self.refresh.notify_one();
    }

    /// Stops serving and ends every function process.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.gateway.served().lambda.shutdown().await;
        // Tasks stop at the signal; a hung one must not keep the command alive.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// The key a client can call the API with: enabled and in a usage plan of the stage.
fn client_key(api: &DeployedApi) -> String {
    api.keys
        .iter()
        .find(|k| k.enabled && api.usage_plans.iter().any(|p| p.key_ids.contains(&k.id)))
        .map(|k| k.value.clone())
        .unwrap_or_default()
}
