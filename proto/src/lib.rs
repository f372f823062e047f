//! Protocol definitions shared by agent and manager: the framed byte stream between
//! them ([`frame`]) and the protobuf messages it carries ([`messages`]); with feature
//! `grpc`, the manager API ([`grpc`], from proto/manager.proto); with feature `release`,
//! release.json's type (`release::Manifest`).

pub mod frame;
pub mod messages;
#[cfg(feature = "release")]
pub mod release;

/// cocos' manager gRPC API (proto/manager.proto): the seed `Process` stream, the current
/// unary calls, and our `WatchEvents`; client and server (feature `grpc`). Its
/// `AgentEvent` and `AgentLog` are [`messages`]' (proto/agent.proto, imported by
/// manager.proto), re-exported here.
#[cfg(feature = "grpc")]
#[allow(
    missing_docs,
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod grpc {
    pub use crate::messages::{AgentEvent, AgentLog};
    tonic::include_proto!("manager");

    /// The encoded `FileDescriptorSet` of manager.proto and the files it imports, for
    /// gRPC server reflection (so `grpcurl` needs no .proto).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/manager_descriptor.bin"));
}
