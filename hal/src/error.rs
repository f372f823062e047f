//! The error of building an image ([`BuildError`]): one enum for every step, so the
//! steps (agent, kernel, modules, archive, measurements) can return it without
//! depending on the orchestrator in `build.rs`.

/// Errors building.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The spec.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// The kernel.
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    /// Modules.
    #[error(transparent)]
    Modules(#[from] crate::modules::ModuleError),
    /// The archive.
    #[error(transparent)]
    Cpio(#[from] crate::cpio::CpioError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// OS error.
        source: std::io::Error,
    },
    /// Measurements.
    #[error("measurements: {0}")]
    Measure(String),
    /// The in-guest agent could not be built or found.
    #[error("cocos-agent: {0}")]
    Agent(String),
    /// The spec lists modules but the kernel has none to take them from.
    #[error("modules are listed but the kernel has no modules directory")]
    NoModulesDir,
    /// A release key cannot be used.
    #[error("{0}")]
    Key(String),
    /// The output directory cannot be one (checked before anything is built).
    #[error("--out {0}: exists and is not a directory; give a directory (new or existing)")]
    OutNotADirectory(String),
    /// release.json could not be serialised.
    #[error("release.json: {0}")]
    Json(#[from] serde_json::Error),
}
