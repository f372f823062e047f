//! The manager's standard gRPC services (issue #16): `grpc.health.v1.Health` answers
//! SERVING for the server and for `manager.ManagerService`, and server reflection
//! (v1) lists the services and gives the descriptors of manager.proto with the
//! agent.proto it imports — what `grpcurl` needs to call the manager without the
//! .proto files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cocos_tests::{manager_args, synthetic_release, ManagerProc};
use prost::Message;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

#[test]
fn health_and_reflection_answer() {
    let d = tempfile::tempdir().unwrap();
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let m = ManagerProc::start(
        &manager_args(&release, &d.path().join("state"), &fw, FAKE, &[]),
        &[],
        &d.path().join("m.log"),
    );
    let url = format!("http://{}", m.grpc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ch = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        for service in ["", "manager.ManagerService"] {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                r.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{service:?}"
            );
        }
        let unknown = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "no.Such".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        let mut refl = ServerReflectionClient::new(ch);
        let ask = |m: MessageRequest| {
            tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(m),
            }])
        };
        let mut s = refl
            .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
            .await
            .unwrap()
            .into_inner();
        let listed = match s.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::ListServicesResponse(l)) => {
                l.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        for want in [
            "manager.ManagerService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(listed.iter().any(|n| n == want), "{want} not in {listed:?}");
        }
        let mut s = refl
            .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
                "manager.ManagerService".into(),
            )))
            .await
            .unwrap()
            .into_inner();
        let files = match s.message().await.unwrap().unwrap().message_response {
            Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
            other => panic!("{other:?}"),
        };
        let names: Vec<String> = files
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.iter().any(|n| n == "manager.proto"), "{names:?}");
        let manager = files
            .iter()
            .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
            .find(|f| f.name() == "manager.proto")
            .unwrap();
        let methods: Vec<&str> = manager.service[0].method.iter().map(|m| m.name()).collect();
        for want in ["CreateVm", "RemoveVm", "AttestationPolicy", "WatchEvents"] {
            assert!(methods.contains(&want), "{want} not in {methods:?}");
        }
        // Its imports resolve by file name, as a reflection client asks for them.
        assert!(!manager.dependency.is_empty());
        for dep in &manager.dependency {
            let mut s = refl
                .server_reflection_info(ask(MessageRequest::FileByFilename(dep.clone())))
                .await
                .unwrap()
                .into_inner();
            match s.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::FileDescriptorResponse(f)) => {
                    let got = prost_types::FileDescriptorProto::decode(
                        f.file_descriptor_proto[0].as_slice(),
                    )
                    .unwrap();
                    assert_eq!(got.name(), dep);
                }
                other => panic!("{dep}: {other:?}"),
            }
        }
    });
}
