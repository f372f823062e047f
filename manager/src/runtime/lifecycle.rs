//! Stopping VMs (QMP powerdown, then SIGTERM, then SIGKILL, each after re-checking
//! identity), TTL expiry, and re-adoption of the VMs a previous manager left running.

use super::*;

impl Manager {
    /// Stops a VM: QMP system_powerdown, then SIGTERM, then SIGKILL, each after
    /// --stop-timeout; returns when QEMU is gone and its files are removed.
    pub async fn stop(&self, id: &str, reason: &str) -> Result<(), ApiError> {
        let vm = self.get(id)?;
        let mut done = vm.done_tx.subscribe();
        if !vm.stopping.swap(true, Ordering::SeqCst) {
            if let Ok(mut r) = vm.stop_reason.lock() {
                *r = reason.into();
            }
            let t = self.cfg.stop_timeout;
            let wait = |done: &mut watch::Receiver<bool>, t: Duration| {
                let mut d = done.clone();
                async move { tokio::time::timeout(t, d.wait_for(|x| *x)).await.is_ok() }
            };
            if let Err(e) = qmp::execute(
                &vm.record.qmp_socket(),
                "system_powerdown",
                None,
                QMP_TIMEOUT,
            )
            .await
            {
                tracing::debug!("{e}");
            }
            if !wait(&mut done, t).await {
                tracing::info!(computation = id, "no power-down within {t:?}: SIGTERM");
                procs::signal_if_same(vm.record.pid, vm.record.start_time, Signal::SIGTERM);
                if !wait(&mut done, t).await {
                    tracing::warn!(computation = id, "still running: SIGKILL");
                    procs::signal_if_same(vm.record.pid, vm.record.start_time, Signal::SIGKILL);
                }
            }
        }
        tokio::time::timeout(
            self.cfg.stop_timeout * 2 + Duration::from_secs(10),
            done.wait_for(|x| *x),
        )
        .await
        .map_err(|_| ApiError::Internal(format!("computation {id} did not stop")))?
        .map_err(|_| ApiError::Internal(format!("computation {id}: supervisor gone")))?;
        Ok(())
    }

    pub(super) async fn ttl_reaper(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = now_ms();
            for vm in self.list() {
                if vm.record.deadline_ms.is_some_and(|d| d <= now)
                    && !vm.stopping.load(Ordering::SeqCst)
                {
                    let m = self.clone();
                    tokio::spawn(async move {
                        m.emit(
                            &vm.record.id,
                            "ttl-expired",
                            "ok",
                            json!({"deadline_ms": vm.record.deadline_ms}),
                        )
                        .await;
                        let _ = m.stop(&vm.record.id, "ttl").await;
                    });
                }
            }
        }
    }

    /// Re-adopts VMs from the store whose QEMU still runs (same pid, same start time,
    /// QMP answering with the VM's name); cleans up the others.
    pub(super) async fn recover(self: &Arc<Self>) {
        let records = match self.store.vms() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        for (id, bytes) in records {
            let rec: VmRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(computation = %id, "unreadable VM record ({e}); forgetting it");
                    let _ = self.store.delete_vm(&id);
                    continue;
                }
            };
            let alive = procs::is_same(rec.pid, rec.start_time);
            let qmp_name = if alive {
                qmp::execute(&rec.qmp_socket(), "query-name", None, QMP_TIMEOUT)
                    .await
                    .ok()
                    .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
            } else {
                None
            };
            if alive && qmp_name.as_deref() == Some(rec.name.as_str()) {
                tracing::info!(computation = %id, pid = rec.pid, "re-adopted");
                self.emit(&id, "vm-readopted", "ok", json!({"pid": rec.pid}))
                    .await;
                self.spawn_supervisor(rec, None);
                continue;
            }
            let why = if alive {
                format!("pid {} runs with the recorded start time but QMP does not identify it as {}; left running, not adopted", rec.pid, rec.name)
            } else {
                "QEMU exited while the manager was down".to_owned()
            };
            tracing::warn!(computation = %id, "{why}");
            self.emit(
                &id,
                "vm-exited",
                "lost",
                json!({"reason": why, "pid": rec.pid}),
            )
            .await;
            let _ = std::fs::remove_dir_all(&rec.dir);
            let _ = self.store.delete_vm(&id);
        }
        self.metrics.vms.set(self.list().len() as i64);
    }
}
