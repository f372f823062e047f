//! Protocol definitions shared by agent and manager: the framed byte stream between
//! them ([`frame`]) and the protobuf messages it carries ([`messages`]). The manager's
//! gRPC services follow with issue #5.

pub mod frame;
pub mod messages;
