//! cocos-manager: launches exactly the released images under QEMU, reports the launch
//! measurements they must show, and relays agent events without losing any.
//!
//! [`release`] verifies the image files; [`expected`] computes each launch's
//! measurement; [`qemu`] builds QEMU's command line and checks the host;
//! [`agent_channel`] is one VM's agent protocol (sans-IO); [`store`] is the embedded
//! state and event outbox.

pub mod agent_channel;
pub mod attest;
pub mod cocos_env;
pub mod config;
pub mod events;
pub mod expected;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod procs;
pub mod qemu;
pub mod qmp;
pub mod reference;
pub mod release;
pub mod runtime;
pub mod store;
pub mod upstream;
pub mod vsock;
