//! The host side of the vsock agent transport. The agent dials the host (CID 2) on
//! `--vsock-port`; one AF_VSOCK listener accepts every VM's connection and routes it by
//! the peer's CID (which the manager assigned at launch and QEMU enforces) to that VM's
//! agent task. A connection from a CID no VM holds is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_vsock::{VsockAddr, VsockListener, VsockStream, VMADDR_CID_ANY};

/// CID → the agent task of the VM that holds it.
#[derive(Debug, Default)]
pub struct Router {
    routes: Mutex<HashMap<u32, mpsc::Sender<VsockStream>>>,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<VsockStream>>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes `cid`'s connections to a new receiver.
    pub fn register(&self, cid: u32) -> mpsc::Receiver<VsockStream> {
        let (tx, rx) = mpsc::channel(4);
        self.lock().insert(cid, tx);
        rx
    }

    /// Stops routing `cid`.
    pub fn unregister(&self, cid: u32) {
        self.lock().remove(&cid);
    }

    /// The VM holding `cid`, if any.
    pub fn route(&self, cid: u32) -> Option<mpsc::Sender<VsockStream>> {
        self.lock().get(&cid).cloned()
    }
}

/// Binds the listener (fails now, not later, if the host has no vsock).
pub fn bind(port: u32) -> std::io::Result<VsockListener> {
    VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port))
}

/// Accepts connections forever, handing each to the VM with the peer's CID.
pub async fn serve(listener: VsockListener, router: Arc<Router>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match router.route(peer.cid()) {
                Some(tx) => {
                    if tx.try_send(stream).is_err() {
                        tracing::warn!(
                            cid = peer.cid(),
                            "agent connection dropped: its VM is busy or gone"
                        );
                    }
                }
                None => tracing::warn!(
                    cid = peer.cid(),
                    "vsock connection from a CID no VM holds; closed"
                ),
            },
            Err(e) => {
                tracing::error!("vsock accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_cid() {
        let r = Router::default();
        assert!(r.route(3).is_none());
        let _rx = r.register(3);
        assert!(r.route(3).is_some());
        assert!(r.route(4).is_none());
        r.unregister(3);
        assert!(r.route(3).is_none());
    }

    #[tokio::test]
    async fn binds_when_the_host_has_vsock() {
        // Hosts without AF_VSOCK cannot bind; that is reported, not a panic.
        match bind(0xC0C0) {
            Ok(l) => assert_eq!(l.local_addr().unwrap().port(), 0xC0C0),
            Err(e) => eprintln!("no vsock here: {e}"),
        }
    }
}
