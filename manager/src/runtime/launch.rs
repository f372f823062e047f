//! A launch: verify the release files from one open descriptor each, reserve a CID
//! and port, build QEMU's argv, spawn it with the verified descriptors, record it.

use super::*;

/// The three release files (descriptors of the sealed copies made at start): QEMU
/// inherits them as fds 3, 4, 5.
struct Files {
    kernel: std::fs::File,
    initrd: std::fs::File,
    firmware: std::fs::File,
}

/// What a launch needs from [`Manager::launch`]'s caller.
pub(super) struct LaunchRequest<'a> {
    pub id: &'a str,
    pub vcpus: u32,
    pub ttl: Option<Duration>,
    pub cid: Option<u32>,
    pub port: Option<u16>,
    pub t0: Instant,
}

impl Manager {
    /// Verifies, measures, spawns and records one VM; each step below says what it
    /// owns, and a failure in any of them leaves nothing behind.
    pub(super) async fn launch(
        self: &Arc<Self>,
        req: LaunchRequest<'_>,
    ) -> Result<RunResult, ApiError> {
        let cmdline = self.cmdline_for(req.id)?;
        let (files, expected) = self.verify_and_measure(&cmdline, req.vcpus).await?;
        let facts = self.launch_facts(&expected)?;
        let dir = self.vms_dir.join(req.id);
        let qemu_log = make_vm_dir(&dir)?;
        let spec = self.vm_spec(&req, &dir, &cmdline, &facts)?;
        if let Err(e) = self.check_host(&spec) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        // Intent first: a record marked "launching" is durable before QEMU exists, so a
        // manager that dies from here on finds and stops that QEMU when it starts again.
        let mut intent = self.record(&req, &spec, dir.clone(), 0, (expected, facts), 0.0);
        intent.launching = true;
        if let Err(e) = self.persist(&intent) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let (child, pid) = match self.spawn_qemu(&spec, files, qemu_log) {
            Ok(c) => c,
            Err(e) => {
                let _ = self.store.delete_vm(req.id);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        if let Some(d) = self.cfg.test_pause_after_spawn {
            tokio::time::sleep(d).await; // tests: the crash window, widened
        }
        let launch_ms = req.t0.elapsed().as_secs_f64() * 1000.0;
        let mut record = intent;
        record.launching = false;
        record.pid = pid;
        record.start_time = procs::start_time(Path::new("/proc"), pid).unwrap_or(0);
        record.launch_ms = launch_ms;
        // Never a 201 without a durable record: if it cannot be stored, stop QEMU.
        if let Err(e) = self.persist(&record) {
            procs::signal_if_same(pid, record.start_time, Signal::SIGKILL);
            let mut child = child;
            let _ = child.wait().await;
            let _ = self.store.delete_vm(req.id);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        self.announce(&record).await;
        self.spawn_supervisor(record.clone(), Some(child));
        Ok(RunResult {
            computation_id: record.id,
            expected_measurement: record.expected,
            pid,
            cmdline: record.cmdline,
            vcpus: record.vcpus,
            launch_ms,
            forwarded_port: record.forwarded_port,
        })
    }

    /// Takes descriptors of the release files sealed at start (nothing on disk can
    /// change what QEMU reads) and computes the launch's measurement, off the async
    /// runtime.
    async fn verify_and_measure(
        self: &Arc<Self>,
        cmdline: &str,
        vcpus: u32,
    ) -> Result<(Files, ExpectedMeasurement), ApiError> {
        let m = self.clone();
        let cmdline = cmdline.to_owned();
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let r = &m.release;
            let files = Files {
                kernel: m.sealed.kernel.dup(&r.kernel.path)?,
                initrd: m.sealed.initrd.dup(&r.initrd.path)?,
                firmware: m.sealed.firmware.dup(&m.cfg.ovmf)?,
            };
            let expected = m.expected.compute(&cmdline, vcpus)?;
            Ok((files, expected))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("verification task: {e}")))?
    }

    /// What this launch fixes beyond the measured files: for an SNP launch the host
    /// data and a signed ID block for exactly the digest just computed — the release's
    /// (`id-block.snp.<launch>.json` beside release.json, as `cocos-hal build --id-key`
    /// writes it) if it states that digest, else one signed now with `--snp-id-key`.
    fn launch_facts(&self, expected: &ExpectedMeasurement) -> Result<LaunchFacts, ApiError> {
        let (TeeKind::Snp, ExpectedMeasurement::Snp(m)) = (self.cfg.tee, expected) else {
            return Ok(LaunchFacts::default());
        };
        let label =
            cocos_measure::reference::snp_label(m.vcpus, m.vcpu_type.as_deref(), m.guest_features);
        let dir = self.release.manifest.parent().unwrap_or(Path::new("."));
        let path = crate::reference::id_block_path(dir, &label);
        let mut snp_id_block = crate::reference::load_id_block(&path, &m.measurement)?;
        if snp_id_block.is_some() {
            tracing::info!("SNP launch {label}: ID block {}", path.display());
        } else if let Some((id, author)) = &self.snp_id_keys {
            snp_id_block = Some(
                crate::reference::sign_id_block(&m.measurement, id, author.as_ref())
                    .map_err(ApiError::Internal)?,
            );
        }
        Ok(LaunchFacts {
            host_data: self.cfg.host_data.clone(),
            snp_id_block,
        })
    }

    /// QEMU's description of this VM (argv is built from it).
    fn vm_spec(
        &self,
        req: &LaunchRequest<'_>,
        dir: &Path,
        cmdline: &str,
        facts: &LaunchFacts,
    ) -> Result<VmSpec, ApiError> {
        Ok(VmSpec {
            name: format!("cocos-{}", req.id),
            accel: match self.cfg.accel {
                AccelKind::Kvm => Accel::Kvm,
                AccelKind::Tcg => Accel::Tcg,
                AccelKind::Auto if Path::new("/dev/kvm").exists() => Accel::Kvm,
                AccelKind::Auto => Accel::Tcg,
            },
            cpus: req.vcpus,
            cpu_model: self.cpu_model(),
            memory_mib: self.cfg.memory_mib().map_err(ApiError::Internal)?,
            firmware: PathBuf::from("/dev/fd/5"),
            kernel: PathBuf::from("/dev/fd/3"),
            initrd: Some(PathBuf::from("/dev/fd/4")),
            cmdline: cmdline.to_owned(),
            tee: self.tee(facts)?,
            transport: match req.cid {
                Some(cid) => AgentTransport::Vsock { cid },
                None => AgentTransport::Serial {
                    socket: dir.join("agent.sock"),
                    name: SERIAL_PORT.into(),
                },
            },
            forward: req.port.zip(self.cfg.agent_guest_port),
            console_log: dir.join("console.log"),
            qmp_socket: dir.join("qmp.sock"),
        })
    }

    /// Refuses a TEE or accelerator this host cannot give (unless told to skip).
    fn check_host(&self, spec: &VmSpec) -> Result<(), ApiError> {
        if self.cfg.skip_host_check {
            return Ok(());
        }
        let caps = qemu::detect_host(Path::new("/sys"), Path::new("/dev"));
        match caps.refuse(&spec.tee, spec.accel) {
            Some(why) => Err(ApiError::Host(why)),
            None => Ok(()),
        }
    }

    /// Spawns QEMU in its own process group with the verified descriptors as fds 3–5.
    fn spawn_qemu(
        &self,
        spec: &VmSpec,
        files: Files,
        qemu_log: std::fs::File,
    ) -> Result<(tokio::process::Child, u32), ApiError> {
        let qemu_bin = self.cfg.qemu_bin.display();
        let mut cmd = tokio::process::Command::new(&self.cfg.qemu_bin);
        cmd.args(qemu::argv(spec))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(qemu_log)
            // Its own process group: a signal to the manager's group leaves VMs running.
            .process_group(0)
            .kill_on_drop(false);
        let fd = |f: std::fs::File, child_fd| FdMapping {
            parent_fd: f.into(),
            child_fd,
        };
        cmd.fd_mappings(vec![
            fd(files.kernel, 3),
            fd(files.initrd, 4),
            fd(files.firmware, 5),
        ])
        .map_err(|e| ApiError::Internal(format!("fd mapping: {e}")))?;
        let child = cmd
            .spawn()
            .map_err(|e| ApiError::Internal(format!("cannot start {qemu_bin}: {e}")))?;
        drop(cmd); // closes our copies of the verified descriptors
                   // Only a child already reaped has no pid; nothing was recorded yet.
        let pid = child.id().ok_or_else(|| {
            ApiError::Internal(format!("{qemu_bin} exited before its pid could be read"))
        })?;
        Ok((child, pid))
    }

    /// What the store keeps about a running VM (enough to re-adopt it).
    fn record(
        &self,
        req: &LaunchRequest<'_>,
        spec: &VmSpec,
        dir: PathBuf,
        pid: u32,
        (expected, facts): (ExpectedMeasurement, LaunchFacts),
        launch_ms: f64,
    ) -> VmRecord {
        let created_ms = now_ms();
        VmRecord {
            id: req.id.into(),
            name: spec.name.clone(),
            pid,
            start_time: procs::start_time(Path::new("/proc"), pid).unwrap_or(0),
            dir,
            vcpus: req.vcpus,
            memory_mib: spec.memory_mib,
            cmdline: spec.cmdline.clone(),
            tee: self.cfg.tee,
            cid: req.cid,
            forwarded_port: req.port,
            created_ms,
            deadline_ms: req
                .ttl
                .map(|t| created_ms.saturating_add(t.as_millis() as u64)),
            expected,
            launch_ms,
            facts,
            launching: false,
        }
    }

    /// Stores the record (a failure is logged: the VM runs but will not be re-adopted)
    /// and emits vm-provision with what its attestation must show.
    /// Stores a VM record durably (one committed transaction).
    fn persist(&self, record: &VmRecord) -> Result<(), ApiError> {
        let json = serde_json::to_vec(record)
            .map_err(|e| ApiError::Internal(format!("VM record: {e}")))?;
        self.store.put_vm(&record.id, &json)?;
        Ok(())
    }

    /// The vm-provision event.
    async fn announce(&self, record: &VmRecord) {
        self.emit(
            &record.id,
            "vm-provision",
            "ok",
            json!({"pid": record.pid, "cmdline": record.cmdline, "vcpus": record.vcpus,
                   "expected_measurement": record.expected,
                   "release": {"name": self.release.name, "version": self.release.version},
                   "launch_ms": record.launch_ms}),
        )
        .await;
    }

    /// QEMU's -cpu: an SNP guest runs the vCPU type its measurement assumes.
    pub(super) fn cpu_model(&self) -> String {
        if self.cfg.tee == TeeKind::Snp {
            self.cfg.snp_vcpu_type.clone()
        } else {
            self.cfg.cpu.clone()
        }
    }

    pub(super) fn tee(&self, facts: &LaunchFacts) -> Result<Tee, ApiError> {
        Ok(match self.cfg.tee {
            TeeKind::None => Tee::None,
            TeeKind::Snp => Tee::SevSnp {
                cbitpos: self.cfg.cbitpos,
                reduced_phys_bits: self.cfg.reduced_phys_bits,
                host_data: facts.host_data.clone(),
                id_block: match &facts.snp_id_block {
                    Some(b) => {
                        let policy = b
                            .signed()
                            .and_then(|s| s.params().map_err(|e| e.to_string()))
                            .map_err(ApiError::Internal)?
                            .policy;
                        Some(qemu::SnpIdBlock {
                            id_block: b.id_block.clone(),
                            id_auth: b.id_auth.clone(),
                            author_key_enabled: b.author_key_enabled,
                            policy,
                        })
                    }
                    None => None,
                },
            },
            TeeKind::Tdx => Tee::Tdx {
                quote_socket: self.cfg.tdx_quote_socket.clone(),
            },
        })
    }
}

/// The per-VM directory (0700, cleared if stale) with its console.log and qemu.log
/// (0600); returns qemu.log for QEMU's stderr.
fn make_vm_dir(dir: &Path) -> Result<std::fs::File, ApiError> {
    let internal = |what: &str, e: std::io::Error| {
        ApiError::Internal(format!("{what} {}: {e}", dir.display()))
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| internal("cannot clear stale", e))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| internal("cannot create", e))?;
    let private = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(name))
    };
    private("console.log").map_err(|e| internal("console.log in", e))?;
    private("qemu.log").map_err(|e| internal("qemu.log in", e))
}
