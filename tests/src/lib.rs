//! Workspace-level end-to-end tests (real QEMU, real images), in `tests/tests/`:
//! `hal_boot.rs` builds the default HAL image and boots it. The library itself is
//! empty; the manager's end-to-end tests join with issue #5.
