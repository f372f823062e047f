//! Reproducible HAL image builder (kernel + initramfs) that writes release.json.
//!
//! Not built yet: this crate is filled by issue #4. It exports nothing, so
//! nothing can depend on behaviour that does not exist.
