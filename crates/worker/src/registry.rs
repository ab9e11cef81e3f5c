//! The model registry: the live model, the shadow model scored beside it,
//! the files a reload re-reads, and the pipeline threads' command queues a
//! reload is handed to, all changed under one lock so a reload never misses
//! a thread being started.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use churn_core::model::{ModelError, RiskModel};

use crate::commands::{Command, CommandQueue, ModelSet};
use crate::telemetry::Metrics;

/// The models in use and the pipeline threads they are handed to, changed
/// together under one lock so a reload never misses a thread being started.
struct Control {
    model: Arc<RiskModel>,
    shadow: Option<Arc<RiskModel>>,
    /// The file a reload reads (`None`: the built-in model, nothing to reload).
    model_path: Option<PathBuf>,
    /// The shadow model's file, re-read with the model's on a reload.
    shadow_path: Option<PathBuf>,
    /// The pipeline threads' command queues, while the pipeline runs.
    cores: Option<Arc<[Arc<CommandQueue>]>>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The worker runs the built-in model: there is no file to re-read.
    #[error("no model file configured (`model.path`): the built-in model cannot be reloaded")]
    NoModelFile,
    /// The file is unreadable or not a valid model; the previous model keeps scoring.
    #[error("model refused, the previous one ({kept}) keeps scoring: {source}")]
    Invalid {
        /// Version of the model still in use.
        kept: String,
        /// What is wrong with the file.
        source: ModelError,
    },
    /// The shadow model's file is unreadable or invalid; neither model is
    /// swapped (a reload changes both or neither).
    #[error(
        "shadow model refused (`model.shadow_path`); neither model was swapped, {kept} keeps \
         scoring: {source}"
    )]
    InvalidShadow {
        /// Version of the model still in use.
        kept: String,
        /// What is wrong with the file.
        source: ModelError,
    },
    /// Another reload is still reading the model files (e.g. a file that
    /// blocks on read: a FIFO, a hung network mount); this one was not
    /// queued behind it.
    #[error(
        "another reload is still reading the model file; nothing was swapped by this one (retry \
         once it finishes, or fix the file if it never does)"
    )]
    Busy,
}

/// A model swapped in by [`ModelRegistry::reload_model`].
pub struct Reloaded {
    /// Version of the model replaced.
    pub previous_version: String,
    /// Version of the model now in use.
    pub model_version: String,
    /// Version of the shadow model now in use, if any.
    pub shadow_version: Option<String>,
    /// One per pipeline thread, answered once its partitions score with the
    /// new model (empty before the pipeline has started).
    pub applied: Vec<tokio::sync::oneshot::Receiver<()>>,
}

/// The models in use and their reloads.
pub struct ModelRegistry {
    control: Mutex<Control>,
    /// Set while a reload reads the model files, which may block: a second
    /// reload meanwhile is refused ([`ReloadError::Busy`]) rather than
    /// queued behind it.
    reading: AtomicBool,
    metrics: Metrics,
}

/// Clears [`ModelRegistry::reading`] when the read ends, however it ends.
struct Reading<'a>(&'a AtomicBool);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl ModelRegistry {
    /// A registry scoring with `model`, no shadow, nothing to reload.
    pub fn new(model: Arc<RiskModel>, metrics: Metrics) -> Arc<Self> {
        Arc::new(ModelRegistry {
            control: Mutex::new(Control {
                model,
                shadow: None,
                model_path: None,
                shadow_path: None,
                cores: None,
            }),
            reading: AtomicBool::new(false),
            metrics,
        })
    }

    /// The control block. Its holders only swap pointers and queue
    /// commands, so a panic cannot leave it half-changed: a poisoned lock
    /// is used as is.
    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The model in use (the latest one reloaded).
    pub fn current_model(&self) -> Arc<RiskModel> {
        Arc::clone(&self.control().model)
    }

    /// The live and shadow models in use.
    pub fn current_models(&self) -> ModelSet {
        let control = self.control();
        ModelSet {
            live: Arc::clone(&control.model),
            shadow: control.shadow.clone(),
        }
    }

    /// Sets the file [`ModelRegistry::reload_model`] re-reads.
    pub fn set_model_path(&self, path: Option<PathBuf>) {
        self.control().model_path = path;
    }

    /// Sets the shadow model and the file a reload re-reads for it (before
    /// the pipeline starts).
    pub fn set_shadow(&self, shadow: Option<(Arc<RiskModel>, PathBuf)>) {
        let mut control = self.control();
        self.metrics
            .set_shadow_model(shadow.as_ref().map(|(m, _)| m.version()));
        (control.shadow, control.shadow_path) = shadow.unzip();
    }

    /// Re-reads the model file (blocking I/O: call it off async workers).
    /// A valid model becomes the current one and is handed to every
    /// pipeline thread, which swaps it in between batches; an invalid one is
    /// refused and the previous model keeps scoring. Either way it is
    /// logged and counted in `model_reloads_total`.
    pub fn reload_model(&self) -> Result<Reloaded, ReloadError> {
        let path = self
            .control()
            .model_path
            .clone()
            .ok_or(ReloadError::NoModelFile)?;
        let shadow_path = self.control().shadow_path.clone();
        if self.reading.swap(true, Ordering::AcqRel) {
            tracing::warn!(path = %path.display(), "model reload refused: another reload is still reading the model file");
            return Err(ReloadError::Busy);
        }
        let reading = Reading(&self.reading);
        // Read and validated without the lock: restores and erasures go on.
        let loaded = RiskModel::load(&path);
        let loaded_shadow = shadow_path.as_deref().map(RiskModel::load);
        drop(reading);
        let mut control = self.control();
        let previous_version = control.model.version().to_string();
        let shadow = match loaded_shadow {
            None => None,
            Some(Ok(m)) => Some(Arc::new(m)),
            Some(Err(source)) => {
                self.metrics
                    .model_reloads
                    .with_label_values(&["invalid"])
                    .inc();
                tracing::error!(path = %shadow_path.as_deref().map_or_else(|| "none".into(), |p| p.display().to_string()), error = %source, kept = %previous_version, "model reload refused: the shadow model is invalid; neither model was swapped");
                return Err(ReloadError::InvalidShadow {
                    kept: previous_version,
                    source,
                });
            }
        };
        let model = match loaded {
            Ok(m) => Arc::new(m),
            Err(source) => {
                self.metrics
                    .model_reloads
                    .with_label_values(&["invalid"])
                    .inc();
                tracing::error!(path = %path.display(), error = %source, kept = %previous_version, "model reload refused; the previous model keeps scoring");
                return Err(ReloadError::Invalid {
                    kept: previous_version,
                    source,
                });
            }
        };
        control.model = Arc::clone(&model);
        control.shadow.clone_from(&shadow);
        let models = ModelSet {
            live: Arc::clone(&model),
            shadow,
        };
        let mut applied = Vec::new();
        if let Some(cores) = &control.cores {
            for core in cores.iter() {
                let (done, rx) = tokio::sync::oneshot::channel();
                core.send(Command::Reload {
                    models: models.clone(),
                    done,
                });
                applied.push(rx);
            }
        }
        drop(control);
        self.metrics.model_reloads.with_label_values(&["ok"]).inc();
        self.metrics.set_build_info(model.version());
        let shadow_version = models.shadow.as_ref().map(|m| m.version().to_string());
        self.metrics.set_shadow_model(shadow_version.as_deref());
        tracing::info!(path = %path.display(), previous = %previous_version, model_version = model.version(), shadow_version = shadow_version.as_deref().unwrap_or("none"), "model reloaded");
        Ok(Reloaded {
            previous_version,
            shadow_version,
            model_version: model.version().to_string(),
            applied,
        })
    }

    /// Builds the pipeline cores with the current model and registers them
    /// for reloads and erasures (under the lock a reload takes, so none is
    /// missed).
    /// `build` returns the cores and their command queues.
    pub(crate) fn start_cores<T>(
        &self,
        build: impl FnOnce(ModelSet) -> (T, Vec<Arc<CommandQueue>>),
    ) -> T {
        let mut control = self.control();
        let (cores, queues) = build(ModelSet {
            live: Arc::clone(&control.model),
            shadow: control.shadow.clone(),
        });
        control.cores = Some(queues.into());
        cores
    }

    /// Unregisters the cores (the pipeline is stopping).
    pub(crate) fn stop_cores(&self) {
        self.control().cores = None;
    }

    /// Runs `send` with every pipeline thread's command queue, under the
    /// lock a reload and [`ModelRegistry::stop_cores`] take (so a command
    /// is either queued to running threads or refused); `None` while the
    /// pipeline is not running.
    pub(crate) fn with_cores<R>(&self, send: impl FnOnce(&[Arc<CommandQueue>]) -> R) -> Option<R> {
        let control = self.control();
        control.cores.as_deref().map(send)
    }
}
