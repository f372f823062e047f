//! Per-VM supervision: the agent channel (commit-then-ack), attestation requests,
//! QEMU's exit and the cleanup that follows.

use super::*;

/// Protocol violations (bytes that are not frames) a guest may commit before the
/// manager stops reading its agent channel for good (the VM keeps running).
pub const MAX_PROTOCOL_VIOLATIONS: u32 = 8;

/// The wait before reconnecting after the `n`th violation: `base` (0.2 s by default)
/// doubling, at most 30 s (about 25 s in all before the limit).
fn violation_backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(Duration::from_secs(30))
}

/// All agent channels' read buffers together: each VM's is this divided by --max-vms,
/// between [`READ_BUFFER_MIN`] and [`READ_BUFFER_MAX`] (larger reads mean
/// larger group commits; a thousand VMs must still fit in little memory).
pub const READ_BUFFERS_TOTAL: usize = 16 << 20;
/// Smallest agent-channel read buffer.
pub const READ_BUFFER_MIN: usize = 8 << 10;
/// Largest agent-channel read buffer.
pub const READ_BUFFER_MAX: usize = 32 << 10;

/// The shortest gap between two `guest-throttled` events of one VM: being throttled
/// must not become a way to fill the store with the manager's complaints.
pub const THROTTLE_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// A VM's agent-frame allowance (a token bucket): `rate` frames per second on
/// average, up to `burst` at once.
#[derive(Debug)]
struct Allowance {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Allowance {
    /// None when `rate` is 0 (no limit).
    fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| {
            let burst = f64::from(burst.max(1));
            Self {
                rate: f64::from(rate),
                burst,
                tokens: burst,
                at: Instant::now(),
            }
        })
    }

    /// Takes `n` frames' worth, returning how long to wait before committing them
    /// (zero: now). The wait is the debt at the rate; reading stops meanwhile, so the
    /// guest's writes block and nothing is buffered for it beyond one read.
    fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Waits `d`, or less if the VM stops meanwhile: true when it stopped.
async fn stopped(done: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = done.changed() => true,
    }
}

/// Why one agent connection ended; what follows depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ChannelEnd {
    /// The stream closed (EOF, read or write error): reconnect while QEMU lives.
    Closed,
    /// The agent sent bytes that are not frames (why): drop the connection, back off,
    /// reconnect, up to [`MAX_PROTOCOL_VIOLATIONS`].
    Framing(String),
    /// The store refused to commit: back off, reconnect.
    Store,
    /// The outbox is full: frames stay unacknowledged in the agent; back off.
    OutboxFull,
    /// The VM holds its share of the outbox: its frames stay in the agent; back off.
    OverShare,
}

impl Vm {
    /// The stored-size limit for a message from this VM's guest: an `attestation`
    /// answering an outstanding request may carry evidence up to the frame limit;
    /// everything else [`MAX_STORED_EVENT`].
    fn stored_event_limit(&self, m: &Option<AgentMessage>) -> usize {
        let attestation = matches!(m, Some(AgentMessage { message: Some(agent_message::Message::AgentEvent(e)) }) if e.event_type == "attestation");
        let answered = attestation
            && self
                .pending_attestations
                .lock()
                .is_ok_and(|mut p| p.pop_front().is_some());
        if answered {
            MAX_STORED_ATTESTATION
        } else {
            MAX_STORED_EVENT
        }
    }
}

impl Manager {
    pub(super) fn spawn_supervisor(
        self: &Arc<Self>,
        record: VmRecord,
        child: Option<tokio::process::Child>,
    ) {
        let (done_tx, _) = watch::channel(false);
        let (attest_tx, attest_rx) = mpsc::channel(16);
        let vm = Arc::new(Vm {
            record,
            stopping: AtomicBool::new(false),
            stop_reason: Mutex::new(String::new()),
            done_tx,
            attest_tx,
            nonces: Mutex::new(std::collections::VecDeque::new()),
            pending_attestations: Mutex::new(std::collections::VecDeque::new()),
        });
        self.lock()
            .insert(vm.record.id.clone(), Slot::Running(vm.clone()));
        self.metrics.vms.set(self.list().len() as i64);
        let vsock_rx = vm.record.cid.map(|cid| self.vsock.register(cid));
        let m = self.clone();
        tokio::spawn(async move {
            let mut agent = tokio::spawn(m.clone().agent_loop(vm.clone(), attest_rx, vsock_rx));
            tokio::spawn(m.clone().attestation_timeouts(vm.clone()));
            let status = match child {
                Some(mut c) => match c.wait().await {
                    Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                        (Some(code), _) => json!({"exit_code": code}),
                        (None, Some(sig)) => json!({"signal": sig}),
                        _ => json!({}),
                    },
                    Err(e) => json!({"error": e.to_string()}),
                },
                None => {
                    while procs::is_same(vm.record.pid, vm.record.start_time) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    json!({"note": "adopted process; exit status unknown"})
                }
            };
            // No more vsock connections for this VM (this also ends its wait for one).
            if let Some(cid) = vm.record.cid {
                m.vsock.unregister(cid);
            }
            // Let the agent task read what QEMU's socket still holds, then stop it.
            if tokio::time::timeout(Duration::from_secs(2), &mut agent)
                .await
                .is_err()
            {
                agent.abort();
            }
            m.finish(&vm, status).await;
        });
    }

    pub(super) async fn finish(&self, vm: &Arc<Vm>, status: Value) {
        let id = vm.record.id.as_str();
        let requested = vm.stopping.load(Ordering::SeqCst);
        let reason = vm.stop_reason.lock().map(|r| r.clone()).unwrap_or_default();
        let clean = status.get("exit_code").and_then(Value::as_i64) == Some(0);
        let mut details = json!({"status": status, "pid": vm.record.pid});
        let st = if requested {
            if let Some(o) = details.as_object_mut() {
                o.insert("stopped_by".into(), Value::String(reason));
            }
            "stopped"
        } else if clean {
            "exited"
        } else {
            let tail = std::fs::read(vm.record.dir.join("qemu.log")).unwrap_or_default();
            let tail =
                String::from_utf8_lossy(tail.get(tail.len().saturating_sub(2000)..).unwrap_or(&[]))
                    .into_owned();
            if let Some(o) = details.as_object_mut() {
                o.insert("qemu_stderr".into(), Value::String(tail));
            }
            "failed"
        };
        self.emit(id, "vm-exited", st, details).await;
        if let Err(e) = std::fs::remove_dir_all(&vm.record.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", vm.record.dir.display());
            }
        }
        if let Err(e) = self.store.delete_vm(id) {
            tracing::error!("{e}");
        }
        self.lock().remove(id);
        self.metrics.vms.set(self.list().len() as i64);
        vm.done_tx.send_replace(true);
        tracing::info!(computation = id, "VM {st}");
    }

    /// Waits for the VM's next agent connection: dial QEMU's virtio-serial socket, or
    /// take the next vsock connection the listener routed here. None once QEMU is gone.
    pub(super) async fn next_connection(
        vm: &Vm,
        vsock_rx: &mut Option<mpsc::Receiver<tokio_vsock::VsockStream>>,
        done: &mut watch::Receiver<bool>,
    ) -> Option<Box<dyn Conn>> {
        loop {
            if *done.borrow() {
                return None;
            }
            if let Some(rx) = vsock_rx.as_mut() {
                tokio::select! {
                    s = rx.recv() => return s.map(|s| Box::new(s) as Box<dyn Conn>),
                    _ = done.changed() => return None,
                }
            }
            let sock = vm.record.agent_socket();
            match tokio::net::UnixStream::connect(&sock).await {
                Ok(s) => {
                    // QEMU creates its sockets with the umask's mode: make them private.
                    for p in [sock, vm.record.qmp_socket()] {
                        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
                    }
                    return Some(Box::new(s));
                }
                Err(_) if !procs::is_same(vm.record.pid, vm.record.start_time) => return None,
                Err(_) => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = done.changed() => return None,
                    }
                }
            }
        }
    }

    pub(super) async fn agent_loop(
        self: Arc<Self>,
        vm: Arc<Vm>,
        mut attest_rx: mpsc::Receiver<Vec<u8>>,
        mut vsock_rx: Option<mpsc::Receiver<tokio_vsock::VsockStream>>,
    ) {
        let id = vm.record.id.clone();
        let hw = self.store.agent_hw(&id).unwrap_or(0);
        let mut session = Session::new(&id, hw);
        let mut done = vm.done_tx.subscribe();
        let mut violations = 0u32;
        let mut allowance = Allowance::new(self.cfg.guest_event_rate, self.cfg.guest_event_burst);
        // One notice timer per reason (rate, share of the outbox).
        let mut rate_notice: Option<Instant> = None;
        let mut share_notice: Option<Instant> = None;
        while let Some(conn) = Self::next_connection(&vm, &mut vsock_rx, &mut done).await {
            let (mut r, mut w) = tokio::io::split(conn);
            if w.write_all(&session.reconnected()).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; self.read_buffer_size()];
            let ended = loop {
                tokio::select! {
                    n = r.read(&mut buf) => {
                        let n = match n { Ok(0) | Err(_) => break ChannelEnd::Closed, Ok(n) => n };
                        // Bytes read count against the manager-wide in-flight budget
                        // until committed: memory stays bounded with any number of VMs.
                        let _in_flight = self.writer.reserve(n).await;
                        let inc = match session.on_bytes(buf.get(..n).unwrap_or(&[])) {
                            Ok(i) => i,
                            Err(e) => break ChannelEnd::Framing(e.to_string()),
                        };
                        if !inc.acks_now.is_empty() && w.write_all(&inc.acks_now).await.is_err() {
                            break ChannelEnd::Closed;
                        }
                        if inc.new.is_empty() { continue; }
                        if let Some(a) = allowance.as_mut() {
                            let wait = a.take(inc.new.len(), Instant::now());
                            if !wait.is_zero() {
                                self.throttled(&id, &mut rate_notice, json!({
                                    "reason": format!("over the guest event rate ({} frames/s, burst {})", self.cfg.guest_event_rate, self.cfg.guest_event_burst),
                                    "action": "the manager reads this guest's agent channel at the rate; its agent keeps the rest until acknowledged",
                                })).await;
                                if stopped(&mut done, wait).await {
                                    return;
                                }
                            }
                        }
                        let frame_ids: Vec<u32> = inc.new.iter().map(|d| d.frame_id).collect();
                        // Each frame was decoded once (Session::on_bytes); its message
                        // moves into the stored ClientStreamMessage, encoded once.
                        let items: Vec<Append> = inc.new.into_iter().map(|d| {
                            let limit = vm.stored_event_limit(&d.message);
                            Append {
                                vm: id.clone(),
                                frame_id: Some(d.frame_id),
                                payload: agent_payload(&id, d.frame_id, self.with_verdict(&vm, d.message), limit),
                            }
                        }).collect();
                        let results = match self.writer.append(items).await {
                            Ok(r) => r,
                            Err(e) => { tracing::error!("{e}"); break ChannelEnd::Store; }
                        };
                        let mut ids = Vec::new();
                        let mut refused = None;
                        for (&fid, res) in frame_ids.iter().zip(results) {
                            match res {
                                Appended::Stored(_) | Appended::Duplicate if refused.is_none() => ids.push(fid),
                                Appended::Throttled => { refused.get_or_insert(ChannelEnd::OverShare); }
                                _ => { refused.get_or_insert(ChannelEnd::OutboxFull); }
                            }
                        }
                        if w.write_all(&session.committed(&ids)).await.is_err() { break ChannelEnd::Closed; }
                        if let Some(end) = refused {
                            self.metrics.refused.inc();
                            break end;
                        }
                    }
                    nonce = attest_rx.recv() => {
                        let Some(nonce) = nonce else { continue };
                        match session.request_attestation(&nonce) {
                            Ok(b) => if w.write_all(&b).await.is_err() { break ChannelEnd::Closed; },
                            Err(e) => tracing::warn!("attestation request: {e}"),
                        }
                    }
                    _ = done.changed() => return,
                }
            };
            match ended {
                ChannelEnd::OutboxFull => {
                    tracing::warn!(computation = %id, "outbox full: agent frames wait in the agent until the control plane confirms events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                ChannelEnd::OverShare => {
                    let (events, bytes) = self.store.vm_usage(&id).unwrap_or((0, 0));
                    let limits = self.store.limits();
                    tracing::warn!(computation = %id, "guest holds its share of the outbox ({events} events, {bytes} bytes): its frames wait in the agent");
                    self.throttled(&id, &mut share_notice, json!({
                        "reason": format!("holds its share of the outbox awaiting the control plane ({events} of {} events, {bytes} of {} bytes)", limits.vm_events(), limits.vm_bytes()),
                        "action": "its agent frames stay unacknowledged in the agent until the control plane confirms this VM's events",
                    })).await;
                    if stopped(&mut done, Duration::from_secs(1)).await {
                        return;
                    }
                }
                ChannelEnd::Closed if procs::is_same(vm.record.pid, vm.record.start_time) => {
                    self.emit(
                        &id,
                        "agent-disconnected",
                        "warning",
                        json!({"reason": "agent channel closed while QEMU runs"}),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                ChannelEnd::Closed => return,
                ChannelEnd::Framing(why) => {
                    violations += 1;
                    let wait = violation_backoff(self.cfg.protocol_backoff, violations);
                    if violations >= MAX_PROTOCOL_VIOLATIONS {
                        tracing::warn!(computation = %id, "agent channel: {why}; {violations} protocol violations, no longer reading it");
                        self.emit(&id, "guest-protocol-error", "error", json!({
                            "reason": why,
                            "violations": violations,
                            "action": "the manager no longer reads this guest's agent channel; the VM keeps running (DELETE stops it)",
                        })).await;
                        return;
                    }
                    if violations == 1 {
                        // One event per VM, not one per violation: the guest does not get
                        // to fill the store with our complaints.
                        tracing::warn!(computation = %id, "agent channel: {why}; reconnecting with backoff");
                        self.emit(&id, "guest-protocol-error", "warning", json!({
                            "reason": why,
                            "action": format!("connection dropped; reconnecting with backoff (0.2 s doubling), at most {MAX_PROTOCOL_VIOLATIONS} violations"),
                        })).await;
                    } else {
                        tracing::debug!(computation = %id, "agent channel: {why}; violation {violations}, retry in {wait:?}");
                    }
                    if stopped(&mut done, wait).await {
                        return;
                    }
                }
                ChannelEnd::Store => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A VM's share of [`READ_BUFFERS_TOTAL`]: divided by --max-vms, so that every VM
    /// the manager may run fits, whenever it connected.
    fn read_buffer_size(&self) -> usize {
        (READ_BUFFERS_TOTAL / self.cfg.max_vms.max(1)).clamp(READ_BUFFER_MIN, READ_BUFFER_MAX)
    }

    /// Counts a throttling of `id` and emits its `guest-throttled` event, at most one
    /// per reason (`last` is that reason's timer) per [`THROTTLE_NOTICE_EVERY`].
    async fn throttled(&self, id: &str, last: &mut Option<Instant>, details: Value) {
        self.metrics.guest_throttled.inc();
        if last.is_some_and(|t| t.elapsed() < THROTTLE_NOTICE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(computation = %id, "guest throttled: {}", details.get("reason").and_then(serde_json::Value::as_str).unwrap_or(""));
        self.emit(id, "guest-throttled", "warning", details).await;
    }

    /// Asks the VM's agent for an attestation report over this nonce; the answer
    /// arrives as an "attestation" event.
    pub async fn attest(&self, id: &str, nonce: Vec<u8>) -> Result<(), ApiError> {
        if nonce.is_empty() || nonce.len() > 64 {
            return Err(ApiError::BadRequest("nonce: 1 to 64 bytes".into()));
        }
        let vm = self.get(id)?;
        let mut pending = vm
            .pending_attestations
            .lock()
            .map_err(|_| ApiError::Internal("attestation state poisoned".into()))?;
        if pending.len() >= MAX_NONCES {
            return Err(ApiError::Capacity(format!(
                "{} attestation requests to {id} await an answer; retry after one arrives or times out ({:?})",
                pending.len(),
                self.cfg.attestation_timeout
            )));
        }
        // Never wait on the guest: the channel has room for every pending request.
        vm.attest_tx.try_send(nonce.clone()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Capacity(format!(
                "attestation requests to {id} are not being delivered; retry later"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::NotFound(format!("computation {id} is gone"))
            }
        })?;
        pending.push_back(Instant::now() + self.cfg.attestation_timeout);
        drop(pending);
        if let Ok(mut n) = vm.nonces.lock() {
            if n.len() == MAX_NONCES {
                n.pop_front();
            }
            n.push_back(nonce);
        }
        Ok(())
    }

    /// Emits an `attestation` event with status "timeout" for every request to `vm`
    /// whose answer is overdue; checked once a second while the VM lives.
    pub(super) async fn attestation_timeouts(self: Arc<Self>, vm: Arc<Vm>) {
        let mut done = vm.done_tx.subscribe();
        loop {
            if stopped(&mut done, Duration::from_secs(1)).await {
                return;
            }
            let now = Instant::now();
            let expired = match vm.pending_attestations.lock() {
                Ok(mut p) => {
                    let n = p.iter().take_while(|d| **d <= now).count();
                    p.drain(..n).count()
                }
                Err(_) => 0,
            };
            for _ in 0..expired {
                self.emit(
                    &vm.record.id,
                    "attestation",
                    "timeout",
                    json!({"reason": format!("the guest did not answer an attestation request within {:?}", self.cfg.attestation_timeout)}),
                )
                .await;
            }
        }
    }

    /// An agent's attestation event gets the verdict: its report or quote checked
    /// against this launch's expected measurement and the nonces sent. Other messages
    /// pass unchanged; so does an attestation whose details are not JSON (the
    /// verdict then says why).
    fn with_verdict(&self, vm: &Vm, message: Option<AgentMessage>) -> Option<AgentMessage> {
        let Some(AgentMessage {
            message: Some(agent_message::Message::AgentEvent(mut ev)),
        }) = message
        else {
            return message;
        };
        if ev.event_type == "attestation" && ev.status != "ok" {
            // Only the manager gives verdicts: a guest's own "verdict" is kept under
            // another name, never as one.
            if let Ok(mut d) = serde_json::from_slice::<Value>(&ev.details) {
                if let Some(v) = d.as_object_mut().and_then(|o| o.remove("verdict")) {
                    if let Some(o) = d.as_object_mut() {
                        o.insert("guest_claimed_verdict".into(), v);
                    }
                    ev.details = d.to_string().into_bytes();
                }
            }
        }
        if ev.event_type == "attestation" && ev.status == "ok" {
            let nonces: Vec<Vec<u8>> = vm
                .nonces
                .lock()
                .map(|n| n.iter().cloned().collect())
                .unwrap_or_default();
            let mut details: Value = serde_json::from_slice(&ev.details).unwrap_or_else(|e| {
                json!({"unparsed": String::from_utf8_lossy(&ev.details), "error": format!("details are not JSON: {e}")})
            });
            let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
            let verdict = self.verifier.verdict(
                &vm.record.expected,
                &vm.record.facts,
                &nonces,
                &details,
                now,
            );
            let summary = verdict.get("summary").cloned();
            if let Some(o) = details.as_object_mut() {
                o.insert("verdict".into(), verdict);
            } else {
                details = json!({"agent_details": details, "verdict": verdict});
            }
            tracing::info!(computation = %vm.record.id, "attestation: {}", summary.unwrap_or_default());
            ev.details = details.to_string().into_bytes();
        }
        Some(AgentMessage {
            message: Some(agent_message::Message::AgentEvent(ev)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_violation_backoff_doubles_and_is_capped() {
        let b = Duration::from_millis(200);
        let waits: Vec<u128> = (1..=MAX_PROTOCOL_VIOLATIONS)
            .map(|n| violation_backoff(b, n).as_millis())
            .collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 6400, 12800, 25600]);
        assert_eq!(violation_backoff(b, 40), Duration::from_secs(30));
    }

    /// The allowance lets a burst through, then paces at the rate, and refills.
    #[test]
    fn the_allowance_paces_at_the_rate_after_the_burst() {
        let t0 = Instant::now();
        let mut a = Allowance::new(100, 50).unwrap();
        assert_eq!(a.take(50, t0), Duration::ZERO);
        let w = a.take(10, t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
        // A second later the debt (10) is paid and the rest saved, up to the burst (50).
        assert_eq!(a.take(50, t0 + Duration::from_secs(1)), Duration::ZERO);
        let w = a.take(1, t0 + Duration::from_secs(1));
        assert!((w.as_secs_f64() - 0.01).abs() < 1e-9, "{w:?}");
        // Saving stops at the burst.
        assert_eq!(a.take(50, t0 + Duration::from_secs(100)), Duration::ZERO);
        assert!(!a.take(1, t0 + Duration::from_secs(100)).is_zero());
        assert!(Allowance::new(0, 10).is_none(), "0 = no limit");
    }
}
