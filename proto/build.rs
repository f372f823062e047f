//! Compiles the protobuf sources with `protox`, a protobuf compiler in Rust, so no
//! `protoc` is needed:
//! - proto/agent.proto (the agent <-> manager channel's messages) always, with `prost`
//!   alone: no gRPC code, so the static agent stays small;
//! - proto/manager.proto (feature `grpc`) into the gRPC client and server; it imports
//!   agent.proto, whose types it takes from the first step (`crate::messages`) rather
//!   than generating them again.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/agent.proto");
    println!("cargo:rerun-if-changed=proto/manager.proto");
    let agent = protox::compile(["proto/agent.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(agent)?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    #[cfg(feature = "grpc")]
    {
        let fds = protox::compile(["proto/manager.proto"], ["proto"])?;
        tonic_build::configure()
            .build_client(true)
            .build_server(true)
            .extern_path(".agent", "crate::messages")
            .compile_fds(fds)?;
    }
    Ok(())
}
