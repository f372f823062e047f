//! cocos-manager: launches exactly the released images under QEMU, reports the launch
//! measurements they must show, and relays agent events.
//!
//! Built so far (issue #5 in progress): [`qemu`], the QEMU command line of each launch
//! mode (plain, SEV-SNP, TDX; vsock or virtio-serial agent channel; console log; QMP)
//! and host capability detection; [`agent_channel`], the manager's side of one VM's
//! agent channel (acks, once-only delivery, attestation requests kept until acked).
//! The launcher, state store, control plane interfaces and the `cocos-manager` binary
//! follow; nothing else is exported.

pub mod agent_channel;
pub mod qemu;
