//! cocos-manager's local gRPC API, as current cocos clients call it: CreateVm (with
//! and without our new fields), CVMInfo, AttestationPolicy, RemoveVm, with the QEMU
//! stand-in; a malformed protobuf request and bad field values get clear errors and
//! launch nothing.

#![allow(clippy::result_large_err)]

use cocos_proto::grpc::manager_service_client::ManagerServiceClient;
use cocos_proto::grpc::{AttestationPolicyReq, CreateReq, CreateRes, CvmInfoReq, RemoveReq};
use cocos_tests::{manager_args, pids_of, synthetic_release, ManagerProc};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;

const FAKE: &str = env!("CARGO_BIN_EXE_fake-qemu");

/// CreateReq with field 14 (computation_id, a string) sent as a varint and field 15
/// (vcpus, a varint) as bytes: not a valid CreateReq.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "14")]
    computation_id: u64,
    #[prost(bytes = "vec", tag = "15")]
    vcpus: Vec<u8>,
}

#[test]
fn cocos_unary_api_and_malformed_requests() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let (release, fw) = synthetic_release(&d.path().join("rel"), "console=ttyS0");
    let args = manager_args(&release, &state, &fw, FAKE, &["--max-vcpus", "4"]);
    let m = ManagerProc::start(&args, &[], &state.join("manager.log"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("http://{}", m.grpc);
        let mut c = ManagerServiceClient::connect(url.clone()).await.unwrap();

        // An old client: only cocos' fields; the manager picks the id.
        let r = c
            .create_vm(CreateReq {
                ttl: "1h".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.cvm_id.is_empty());
        let exp: serde_json::Value = serde_json::from_str(&r.expected_measurement).unwrap();
        assert_eq!(exp["tee"], "none");
        // A new client: our fields.
        let r2 = c
            .create_vm(CreateReq {
                computation_id: "g-2".into(),
                vcpus: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r2.cvm_id, "g-2");
        let info = c
            .cvm_info(CvmInfoReq { id: "g-2".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((info.id.as_str(), info.cpu_num), ("g-2", 3));
        assert!(
            info.kernel_cmd
                .ends_with("cocos.id=g-2 cocos.events=serial:cocos.events"),
            "{info:?}"
        );
        assert!(info.ovmf_version.starts_with("OVMF.fd sha256:"), "{info:?}");
        assert!(info.eos_version.contains("synthetic"), "{info:?}");
        let pol = c
            .attestation_policy(AttestationPolicyReq { id: "g-2".into() })
            .await
            .unwrap()
            .into_inner();
        let pol: serde_json::Value = serde_json::from_slice(&pol.info).unwrap();
        assert_eq!(pol["computation_id"], "g-2");
        assert_eq!(pol["expected_measurement"]["tee"], "none");

        // Bad values: clear status codes, nothing launched.
        let e = c
            .create_vm(CreateReq {
                vcpus: 5,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("vcpus 5"), "{e}");
        let e = c
            .create_vm(CreateReq {
                computation_id: "g-2".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e}");
        let e = c
            .create_vm(CreateReq {
                computation_id: "a/b".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        let e = c
            .cvm_info(CvmInfoReq { id: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
        let e = c
            .remove_vm(RemoveReq {
                cvm_id: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");

        // A malformed protobuf body.
        let ch = tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut g = tonic::client::Grpc::new(ch);
        g.ready().await.unwrap();
        let codec = tonic::codec::ProstCodec::<Malformed, CreateRes>::default();
        let e = g
            .unary(
                tonic::Request::new(Malformed {
                    computation_id: 7,
                    vcpus: vec![1, 2, 3],
                }),
                PathAndQuery::from_static("/manager.ManagerService/CreateVm"),
                codec,
            )
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
        assert!(e.message().to_lowercase().contains("decode"), "{e}");
        assert_eq!(
            pids_of(FAKE, state.to_str().unwrap()).len(),
            2,
            "only the two good launches run"
        );

        c.remove_vm(RemoveReq {
            cvm_id: r.cvm_id.clone(),
        })
        .await
        .unwrap();
        c.remove_vm(RemoveReq {
            cvm_id: "g-2".into(),
        })
        .await
        .unwrap();
        assert!(pids_of(FAKE, state.to_str().unwrap()).is_empty());
    });
}
