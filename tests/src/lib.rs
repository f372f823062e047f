//! Workspace-level end-to-end tests (real QEMU, real images).
//!
//! Not built yet: this crate is filled by issue #5. It exports nothing, so
//! nothing can depend on behaviour that does not exist.
