//! Reproducible HAL image builder (kernel + initramfs) that writes release.json.
//!
//! Built so far (issue #4 in progress): [`cpio`], the reproducible newc writer and its
//! reader. The spec, kernel/module resolution, compression, release.json and the
//! `cocos-hal` binary follow.

pub mod compress;
pub mod cpio;
pub mod inspect;
pub mod modules;
pub mod spec;
