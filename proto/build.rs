//! Compiles proto/manager.proto into the gRPC client and server (feature `grpc`) with
//! `protox`, a protobuf compiler in Rust, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/manager.proto");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        return Ok(());
    }
    #[cfg(feature = "grpc")]
    {
        let fds = protox::compile(["proto/manager.proto"], ["proto"])?;
        tonic_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    }
    Ok(())
}
