//! cocos-manager: launches exactly the released images under QEMU, reports the launch
//! measurements they must show, and relays agent events.
//!
//! Built so far (issue #5 in progress): [`qemu`], the QEMU command line of each launch
//! mode (plain, SEV-SNP, TDX; vsock or virtio-serial agent channel; console log; QMP)
//! and host capability detection. The launcher, agent channel, state store, control
//! plane interfaces and the `cocos-manager` binary follow; nothing else is exported.

pub mod qemu;
