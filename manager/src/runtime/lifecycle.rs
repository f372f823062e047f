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
            // A QEMU started a moment ago may not have its QMP socket yet: retry
            // within the stop timeout rather than go straight to SIGTERM.
            let asked = Instant::now();
            loop {
                match qmp::execute(
                    &vm.record.qmp_socket(),
                    "system_powerdown",
                    None,
                    QMP_TIMEOUT,
                )
                .await
                {
                    Ok(_) => break,
                    Err(e)
                        if asked.elapsed() + Duration::from_millis(50) < t && !*done.borrow() =>
                    {
                        tracing::debug!("{e}; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        tracing::debug!("{e}");
                        break;
                    }
                }
            }
            let rest = t
                .saturating_sub(asked.elapsed())
                .max(Duration::from_millis(100));
            if !wait(&mut done, rest).await {
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

    /// Re-adopts VMs from the store whose QEMU still runs, stops the QEMUs no record
    /// accounts for, and cleans up the rest:
    /// - a record whose pid and start time match a live process is re-adopted, never
    ///   abandoned: QMP `query-name` is retried with backoff, and if it stays busy or
    ///   answers another name the VM is still adopted, with a "warning" saying so;
    /// - an intent record ("launching": the manager died during that launch, before
    ///   any 201) has its QEMU, if one started, stopped, and is reported lost;
    /// - a QEMU whose arguments name a directory under our state directory but which
    ///   no record holds (a crash between spawn and record) is stopped and reported;
    /// - a record whose QEMU is gone is reported lost; its files are removed.
    pub(super) async fn recover(self: &Arc<Self>) {
        let records = match self.store.vms() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let ours = procs::under_dir(Path::new("/proc"), &self.vms_dir);
        let mut accounted: Vec<(String, u32)> = Vec::new();
        for (id, bytes) in records {
            let rec: VmRecord = match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(computation = %id, "unreadable VM record ({e}); forgetting it (a QEMU carrying its id is stopped below)");
                    let _ = self.store.delete_vm(&id);
                    continue;
                }
            };
            if rec.launching {
                let stopped = self.stop_strays(&id, &ours, None).await;
                self.lost(
                    &rec,
                    "the manager stopped during this launch, before answering it",
                    json!({"stopped_pids": stopped}),
                )
                .await;
                continue;
            }
            if procs::is_same(rec.pid, rec.start_time) {
                accounted.push((id.clone(), rec.pid));
                let identity = self.identify(&rec).await;
                let (status, details) = match &identity {
                    Ok(()) => ("ok", json!({"pid": rec.pid})),
                    Err(why) => {
                        tracing::warn!(computation = %id, "re-adopted on pid and start time only: {why}");
                        (
                            "warning",
                            json!({"pid": rec.pid, "identity": format!("pid and start time match; {why}")}),
                        )
                    }
                };
                tracing::info!(computation = %id, pid = rec.pid, "re-adopted");
                self.emit(&id, "vm-readopted", status, details).await;
                // A second QEMU for the same id (from before intents existed) is a stray.
                self.stop_strays(&id, &ours, Some(rec.pid)).await;
                self.spawn_supervisor(rec, None);
                continue;
            }
            let stopped = self.stop_strays(&id, &ours, None).await;
            self.lost(
                &rec,
                "QEMU exited while the manager was down",
                json!({"pid": rec.pid, "stopped_pids": stopped}),
            )
            .await;
        }
        // QEMUs of ours that no record accounts for.
        for (id, f) in &ours {
            if accounted.iter().any(|(i, p)| i == id && *p == f.pid) || self.lock().contains_key(id)
            {
                continue;
            }
            if procs::signal_if_same(f.pid, f.start_time, Signal::SIGKILL) {
                wait_gone(f.pid, f.start_time).await;
                tracing::warn!(computation = %id, pid = f.pid, "stopped a QEMU no record accounts for");
                self.emit(id, "vm-exited", "lost", json!({
                    "reason": "a QEMU of this manager without a record (the manager stopped during its launch, before answering it); stopped",
                    "pid": f.pid,
                })).await;
                if check_id(id).is_ok() {
                    let _ = std::fs::remove_dir_all(self.vms_dir.join(id));
                }
            }
        }
        self.metrics.vms.set(self.list().len() as i64);
    }

    /// QMP `query-name` with backoff (QEMU serves one QMP client at a time, so another
    /// may hold it); Ok when it names this VM.
    async fn identify(&self, rec: &VmRecord) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            match qmp::execute(
                &rec.qmp_socket(),
                "query-name",
                None,
                Duration::from_secs(1),
            )
            .await
            {
                Ok(v) => {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                    if name == rec.name {
                        return Ok(());
                    }
                    return Err(format!("QMP names it {name:?}, not {:?}", rec.name));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!(
            "QMP did not answer in 4 tries over about 5 s ({last}); another client may hold it"
        ))
    }

    /// SIGKILLs every QEMU of ours carrying `id` except `keep`; returns their pids.
    async fn stop_strays(
        &self,
        id: &str,
        ours: &[(String, procs::Found)],
        keep: Option<u32>,
    ) -> Vec<u32> {
        let mut stopped = Vec::new();
        for (_, f) in ours.iter().filter(|(i, f)| i == id && Some(f.pid) != keep) {
            if procs::signal_if_same(f.pid, f.start_time, Signal::SIGKILL) {
                wait_gone(f.pid, f.start_time).await;
                tracing::warn!(computation = %id, pid = f.pid, "stopped a stray QEMU");
                stopped.push(f.pid);
            }
        }
        stopped
    }

    /// Reports a VM lost and forgets it (files and record).
    async fn lost(&self, rec: &VmRecord, why: &str, mut details: Value) {
        tracing::warn!(computation = %rec.id, "{why}");
        if let Some(o) = details.as_object_mut() {
            o.insert("reason".into(), why.into());
        }
        self.emit(&rec.id, "vm-exited", "lost", details).await;
        let _ = std::fs::remove_dir_all(&rec.dir);
        let _ = self.store.delete_vm(&rec.id);
    }
}

/// Waits (up to 5 s) until the process is gone.
async fn wait_gone(pid: u32, start: u64) {
    for _ in 0..100 {
        if !procs::is_same(pid, start) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
