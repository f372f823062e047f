//! Compiles the protobuf sources with `protox`, a protobuf compiler in Rust, so no
//! `protoc` is needed:
//! - proto/agent.proto (the agent <-> manager channel's messages) always, with `prost`
//!   alone: no gRPC code, so the static agent stays small;
//! - proto/manager.proto (feature `grpc`) into the gRPC client and server; it imports
//!   agent.proto, whose types it takes from the first step (`crate::messages`) rather
//!   than generating them again; its encoded descriptor set (with agent.proto) is kept
//!   for gRPC server reflection.

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
        // The descriptors of manager.proto and of what it imports, for reflection: a
        // client resolving the service needs agent.proto's messages too.
        let mut compiler = protox::Compiler::new(["proto"])?;
        compiler.include_imports(true);
        compiler.open_file("proto/manager.proto")?;
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(
            out.join("manager_descriptor.bin"),
            prost::Message::encode_to_vec(&compiler.file_descriptor_set()),
        )?;
        tonic_build::configure()
            .build_client(true)
            .build_server(true)
            .extern_path(".agent", "crate::messages")
            .compile_fds(fds)?;
    }
    Ok(())
}
