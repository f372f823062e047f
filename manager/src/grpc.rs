//! The local gRPC server, wire-compatible with current cocos (`manager.ManagerService`:
//! CreateVm, RemoveVm, CVMInfo, AttestationPolicy) plus `WatchEvents`. `Process` is
//! the seed protocol's stream, which the manager dials as a client (see `upstream`);
//! served here it answers Unimplemented.

use std::pin::Pin;
use std::sync::Arc;

use cocos_proto::grpc::manager_service_server::{ManagerService, ManagerServiceServer};
use cocos_proto::grpc::{
    AttestationPolicyReq, AttestationPolicyRes, ClientStreamMessage, CreateReq, CreateRes,
    CvmInfoReq, CvmInfoRes, RemoveReq, ServerStreamMessage, WatchEvent, WatchReq,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::runtime::{ApiError, ApiErrorKind, Manager, RunRequest};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ApiErrorKind::BadRequest => Status::invalid_argument(msg),
            ApiErrorKind::Conflict => Status::already_exists(msg),
            ApiErrorKind::NotFound => Status::not_found(msg),
            ApiErrorKind::Capacity => Status::resource_exhausted(msg),
            ApiErrorKind::Refused => Status::failed_precondition(msg),
            ApiErrorKind::Internal => Status::internal(msg),
        }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Service(pub Arc<Manager>);

/// The tonic server for it.
pub fn server(m: Arc<Manager>) -> ManagerServiceServer<Service> {
    ManagerServiceServer::new(Service(m))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
#[allow(clippy::result_large_err)] // tonic::Status is large; that is tonic's API
impl ManagerService for Service {
    type ProcessStream = BoxStream<ServerStreamMessage>;
    type WatchEventsStream = BoxStream<WatchEvent>;

    async fn process(
        &self,
        _: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        Err(Status::unimplemented(
            "Process is served by the Computations control plane; the manager dials it (MANAGER_GRPC_URL)",
        ))
    }

    async fn create_vm(&self, req: Request<CreateReq>) -> Result<Response<CreateRes>, Status> {
        let r = req.into_inner();
        let run = RunRequest::from_proto(&r.computation_id, r.vcpus, &r.ttl);
        let res = self.0.run(run).await?;
        Ok(Response::new(CreateRes {
            forwarded_port: res
                .forwarded_port
                .map(|p| p.to_string())
                .unwrap_or_default(),
            cvm_id: res.computation_id,
            expected_measurement: res.expected_measurement.to_string(),
        }))
    }

    async fn remove_vm(&self, req: Request<RemoveReq>) -> Result<Response<()>, Status> {
        self.0.stop(&req.into_inner().cvm_id, "RemoveVm").await?;
        Ok(Response::new(()))
    }

    async fn cvm_info(&self, req: Request<CvmInfoReq>) -> Result<Response<CvmInfoRes>, Status> {
        let i = self.0.info(&req.into_inner().id)?;
        Ok(Response::new(CvmInfoRes {
            cpu_num: i.cpu_num_i32(),
            id: i.id,
            ovmf_version: i.ovmf_version,
            cpu_type: i.cpu_type,
            kernel_cmd: i.kernel_cmd,
            eos_version: i.eos_version,
        }))
    }

    async fn attestation_policy(
        &self,
        req: Request<AttestationPolicyReq>,
    ) -> Result<Response<AttestationPolicyRes>, Status> {
        let id = req.into_inner().id;
        let (info, corim) = self
            .0
            .attestation_policy(&id)?
            .info_and_corim()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(AttestationPolicyRes { info, id, corim }))
    }

    async fn watch_events(
        &self,
        req: Request<WatchReq>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let r = req.into_inner();
        let filter = (!r.computation_id.is_empty()).then_some(r.computation_id);
        let rx = crate::events::watch(&self.0, r.from_seq, filter, true);
        let s = ReceiverStream::new(rx).map(|w| {
            let ev = w.map_err(Status::internal)?;
            Ok(WatchEvent {
                seq: ev.seq,
                message: Some(ev.stream_message()),
            })
        });
        Ok(Response::new(Box::pin(s)))
    }
}

/// Keeps the standard health service in step with the manager: every service SERVING
/// while the store commits, NOT_SERVING while it cannot (the `/health` 503 of HTTP).
pub async fn report_health(m: Arc<Manager>, reporter: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let name = <ManagerServiceServer<Service> as tonic::server::NamedService>::NAME;
    let mut last = None;
    loop {
        let status = if m.store().failure().is_some() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            reporter.set_service_status(name, status).await;
            last = Some(status);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
