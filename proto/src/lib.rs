//! Protocol definitions shared by agent and manager: the framed byte stream between
//! them ([`frame`]) and the protobuf messages it carries ([`messages`]); with feature
//! `grpc`, the manager API ([`grpc`], from proto/manager.proto).

pub mod frame;
pub mod messages;

/// cocos' manager gRPC API (proto/manager.proto): the seed `Process` stream, the current
/// unary calls, and our `WatchEvents`; client and server (feature `grpc`).
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
    tonic::include_proto!("manager");
}
