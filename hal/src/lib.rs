//! Reproducible HAL image builder (kernel + initramfs) that writes release.json.
//!
//! Layout: [`spec`] reads `hal/cocos.toml`; [`kernel`] finds the kernel (a path, or a
//! Debian package pinned in a lock file); [`modules`] computes the module closure;
//! [`cpio`] writes the reproducible archive and [`compress`] packs it; [`release`]
//! writes release.json with the expected measurements; [`build`] ties them together;
//! [`inspect`] lists and diffs images; [`agent`] builds the in-guest agent statically
//! and path-independently; [`tee`] reads the kernel's TEE guest support from its config.
//! Leaves every step shares: [`error`] (`BuildError`), [`digest`] (`sha256_hex`) and
//! [`report`] (warnings).

pub mod agent;
pub mod build;
pub mod compress;
pub mod cpio;
pub mod digest;
pub mod error;
pub mod inspect;
pub mod kernel;
pub mod modules;
pub mod published;
pub mod release;
pub mod report;
pub mod spec;
pub mod tee;
