//! A test Computations server (the seed protocol's server side) with tonic: it
//! records every `ClientStreamMessage`, confirms each event with `EventAck`, and lets
//! a test push `ServerStreamMessage`s down the current stream. It runs on its own
//! runtime, so dropping it kills every connection at once, as a crash would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // test support

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cocos_proto::grpc::manager_service_server::{ManagerService, ManagerServiceServer};
use cocos_proto::grpc::{
    server_stream_message, AttestationPolicyReq, AttestationPolicyRes, ClientStreamMessage,
    CreateReq, CreateRes, CvmInfoReq, CvmInfoRes, EventAck, RemoveReq, ServerStreamMessage,
    WatchEvent, WatchReq,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What the test Computations server saw, across restarts.
#[derive(Default)]
pub struct Seen {
    /// Every message, in arrival order.
    pub all: Vec<ClientStreamMessage>,
    /// The downstream of the current stream.
    pub down: Option<mpsc::Sender<ServerStreamMessage>>,
    /// Process streams opened so far.
    pub streams: usize,
    /// Behave like a server that predates EventAck (never confirm).
    pub legacy: bool,
}

/// The service.
#[derive(Clone)]
pub struct Cp(pub Arc<Mutex<Seen>>);

#[tonic::async_trait]
impl ManagerService for Cp {
    type ProcessStream = Boxed<ServerStreamMessage>;
    type WatchEventsStream = Boxed<WatchEvent>;

    async fn process(
        &self,
        req: Request<Streaming<ClientStreamMessage>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4096);
        {
            let mut s = self.0.lock().unwrap();
            s.down = Some(tx.clone());
            s.streams += 1;
        }
        let seen = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let seq = m.seq;
                seen.lock().unwrap().all.push(m);
                if seq > 0 && !seen.lock().unwrap().legacy {
                    let ack = ServerStreamMessage {
                        message: Some(server_stream_message::Message::EventAck(EventAck { seq })),
                    };
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
    async fn create_vm(&self, _: Request<CreateReq>) -> Result<Response<CreateRes>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn remove_vm(&self, _: Request<RemoveReq>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn cvm_info(&self, _: Request<CvmInfoReq>) -> Result<Response<CvmInfoRes>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn attestation_policy(
        &self,
        _: Request<AttestationPolicyReq>,
    ) -> Result<Response<AttestationPolicyRes>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn watch_events(
        &self,
        _: Request<WatchReq>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
}

/// The server on its own runtime; dropping it kills every connection at once (a crash).
pub struct CpServer {
    rt: Option<tokio::runtime::Runtime>,
}

impl CpServer {
    /// Starts on `addr` (port 0 for any); returns the bound address.
    pub fn start(
        addr: SocketAddr,
        seen: Arc<Mutex<Seen>>,
        tls: Option<ServerTlsConfig>,
    ) -> (Self, SocketAddr) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let l = rt.block_on(tokio::net::TcpListener::bind(addr)).unwrap();
        let bound = l.local_addr().unwrap();
        rt.spawn(async move {
            let mut b = Server::builder();
            if let Some(t) = tls {
                b = b.tls_config(t).unwrap();
            }
            b.add_service(ManagerServiceServer::new(Cp(seen)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
        (Self { rt: Some(rt) }, bound)
    }
}

impl Drop for CpServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
