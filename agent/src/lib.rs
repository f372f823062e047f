//! The in-guest agent packed into the HAL initramfs.
//!
//! Not built yet: this crate is filled by issue #4. It exports nothing, so
//! nothing can depend on behaviour that does not exist.
