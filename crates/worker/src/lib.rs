//! The live worker: a consumer-group member that scores customer events and
//! publishes alerts, dead letters and state, plus the HTTP server.
//!
//! Threads: the pipeline runs on a dedicated thread (librdkafka's blocking
//! polls and callbacks never run on tokio workers); changelog restores run on
//! threads of their own so live partitions keep flowing; tokio runs HTTP and
//! signal handling. See `ARCHITECTURE.md` and `docs/operations.md`.
//!
//! Modules are layered: each imports only modules listed before it in
//! [`MODULE_ORDER`] (checked by a test), so there is no import cycle.

mod clock;
pub mod commands;
pub mod config;
mod deletions;
pub mod directory;
pub mod error;
pub mod forwarding;
mod group;
pub mod handles;
pub mod http;
mod kafka;
pub mod ledger;
pub mod lookups;
pub mod membership;
pub mod ownership;
mod partition;
pub mod partitioner;
pub mod pipeline;
pub mod preflight;
pub mod registry;
mod restore;
mod run;
pub mod serve;
pub mod sink;
pub mod telemetry;
pub mod topics;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::WorkerConfig;
use crate::telemetry::Metrics;
use churn_core::model::RiskModel;

pub use commands::{EraseOutcome, ModelSet};
pub use directory::PartitionDirectory;
pub use error::WorkerError;
pub use handles::WorkerHandles;
pub use lookups::{CustomerView, EraseError, Lookups, ShadowView};
pub use ownership::PartitionOwners;
pub use partition::PartitionData;
pub use registry::{ModelRegistry, ReloadError, Reloaded};
pub use restore::restore_partition;
pub use run::run_pipeline;

/// The worker's modules, lowest first: a module imports only modules before
/// it (`crate::x` / `super::x` outside tests), and the crate root (this
/// file: [`Worker`] and the wiring) comes last. `ARCHITECTURE.md` draws the
/// same layers; `tests::modules_import_only_lower_layers` holds the code to it.
pub const MODULE_ORDER: &[&str] = &[
    "topics",
    "error",
    "clock",
    "telemetry",
    "partitioner",
    "ownership",
    "config",
    "kafka",
    "ledger",
    "sink",
    "partition",
    "restore",
    "commands",
    "directory",
    "registry",
    "pipeline",
    "deletions",
    "group",
    "membership",
    "preflight",
    "run",
    "lookups",
    "handles",
    "forwarding",
    "http",
    "serve",
];

/// The consumer configuration the worker's pipeline uses (the benchmark's
/// bare consumer reads with the same settings).
pub fn consumer_client_config(config: &WorkerConfig, group_id: &str) -> rdkafka::ClientConfig {
    kafka::consumer_config(config, group_id)
}

/// The worker, built from its configuration: an HTTP listener bound, the
/// model loaded, ready to [`run`](Worker::run).
pub struct Worker {
    config: WorkerConfig,
    handles: WorkerHandles,
    listener: tokio::net::TcpListener,
}

impl Worker {
    /// Binds the HTTP address and prepares the pipeline.
    pub async fn bind(
        config: WorkerConfig,
        model: RiskModel,
        metrics: Metrics,
    ) -> Result<Self, WorkerError> {
        let model = Arc::new(model);
        metrics.set_build_info(model.version());
        let handles = WorkerHandles::new(Arc::clone(&model), metrics);
        handles.registry.set_model_path(config.model.path.clone());
        if let Some(path) = &config.model.shadow_path {
            let shadow = RiskModel::load(path).map_err(|source| WorkerError::ShadowModel {
                path: path.clone(),
                source,
            })?;
            tracing::info!(path = %path.display(), model_version = shadow.version(), "shadow model loaded");
            handles
                .registry
                .set_shadow(Some((Arc::new(shadow), path.clone())));
        }
        let addr = config
            .http_addr()
            .map_err(|e| WorkerError::Http(std::io::Error::other(e.to_string())))?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        // Known only now when `http.addr` asked for port 0; the membership
        // claim and loop detection use this one value.
        let mut config = config;
        config.http.advertised_url = Some(config.advertised_url(listener.local_addr()?));
        Ok(Worker {
            config,
            handles,
            listener,
        })
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The handles the HTTP server reads (also useful to tests and the demo).
    pub fn handles(&self) -> WorkerHandles {
        self.handles.clone()
    }

    /// Runs the pipeline thread and the HTTP server until `shutdown` is
    /// cancelled (or the pipeline fails), then shuts both down gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker {
            config,
            handles,
            listener,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "http listening");
        let router = crate::http::worker_router(handles.clone(), &config);
        let http_shutdown = shutdown.clone();
        let limits = crate::serve::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(
                config.http.header_read_timeout_secs,
            ),
            max_connections: config.http.max_connections,
        };
        let http = tokio::spawn(async move {
            crate::serve::serve(
                listener,
                router,
                limits,
                http_shutdown,
                std::time::Duration::from_secs(2),
            )
            .await;
            Ok::<(), std::io::Error>(())
        });
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let pipeline_shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("group".into())
            .spawn(move || {
                let result = run_pipeline(
                    config,
                    handles.metrics,
                    handles.registry,
                    handles.directory,
                    pipeline_shutdown,
                );
                let _ = done_tx.send(result);
            })?;
        let result = done_rx.await.unwrap_or(Err(WorkerError::PipelineStopped));
        shutdown.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "http server error"),
            Err(e) => tracing::warn!(error = %e, "http task failed"),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::MODULE_ORDER;

    /// The first path segment after each `crate::` / `super::` outside
    /// comments (in a top-level module, `super` is the crate root), with
    /// the line it is on; a `{...}` group yields each of its members.
    fn imported_modules(source: &str) -> Vec<(String, usize)> {
        let mut found = Vec::new();
        for (n, line) in source.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for prefix in ["crate::", "super::"] {
                let mut rest = code;
                while let Some(at) = rest.find(prefix) {
                    rest = &rest[at + prefix.len()..];
                    if let Some(group) = rest.strip_prefix('{') {
                        let mut depth = 1;
                        let mut segment = String::new();
                        let mut at_start = true;
                        for c in group.chars() {
                            match c {
                                '{' => depth += 1,
                                '}' => depth -= 1,
                                _ => {}
                            }
                            if depth == 0 {
                                break;
                            }
                            if depth == 1 && c == ',' {
                                at_start = true;
                                continue;
                            }
                            if depth == 1 && at_start && (c.is_alphanumeric() || c == '_') {
                                segment.push(c);
                            } else if !segment.is_empty() {
                                found.push((std::mem::take(&mut segment), n + 1));
                                at_start = false;
                            }
                        }
                        if !segment.is_empty() {
                            found.push((segment, n + 1));
                        }
                    } else {
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push((name, n + 1));
                    }
                }
            }
        }
        found
    }

    /// The source of a module without its `#[cfg(test)]` tail (tests may
    /// reach anything).
    fn without_tests(source: &str) -> &str {
        source
            .find("#[cfg(test)]")
            .map_or(source, |at| &source[..at])
    }

    #[test]
    fn modules_import_only_lower_layers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("read src")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".rs") && f != "lib.rs")
            .collect();
        files.sort();
        let mut violations = Vec::new();
        for file in &files {
            let module = file.trim_end_matches(".rs");
            let Some(rank) = MODULE_ORDER.iter().position(|m| *m == module) else {
                violations.push(format!("{file}: not listed in MODULE_ORDER"));
                continue;
            };
            let source = std::fs::read_to_string(dir.join(file)).expect("read module");
            for (name, line) in imported_modules(without_tests(&source)) {
                if name == "self" || name == module {
                    continue;
                }
                match MODULE_ORDER.iter().position(|m| *m == name) {
                    Some(r) if r < rank => {}
                    Some(_) => violations.push(format!(
                        "{file}:{line}: `{module}` imports `{name}`, which is not below it"
                    )),
                    None => violations.push(format!(
                        "{file}:{line}: `{module}` imports `{name}` from the crate root (the top \
                         layer); import it from its module"
                    )),
                }
            }
        }
        assert!(violations.is_empty(), "{}", violations.join("\n"));
    }

    #[test]
    fn the_layer_check_sees_upward_imports() {
        let found = imported_modules(
            "use crate::{pipeline::Core, sink::{A, B}};\nuse super::WorkerShared; // crate::x\n",
        );
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["pipeline", "sink", "WorkerShared"]);
    }
}
