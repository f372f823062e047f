//! Launches released images under QEMU and reports expected measurements with agent events.
//!
//! Not built yet: this crate is filled by issue #5. It exports nothing, so
//! nothing can depend on behaviour that does not exist.
