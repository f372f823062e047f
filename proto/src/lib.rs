//! Protocol definitions (agent framing, manager gRPC) shared by agent and manager.
//!
//! Not built yet: this crate is filled by issue #5. It exports nothing, so
//! nothing can depend on behaviour that does not exist.
